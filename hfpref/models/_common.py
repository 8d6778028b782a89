"""What the seq2seq ([`~hfpref.models.captioning`]) and audio-LLM ([`~hfpref.models.audio_llm`]) captioners share."""

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def unwrap(model):
    """The captioner inside a peft, DDP or compiled wrapper (what owns `get_encoder`, `generate` and the configs)."""
    model = getattr(model, "module", model)  # DistributedDataParallel, DeepSpeed engines
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "get_base_model", lambda: model)()


def caption_ids(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each caption (no special tokens: the prompt is the captioner's) truncated, then eos."""
    rows = []
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"][: max_tokens - 1]
        rows.append([*ids, tokenizer.eos_token_id])
    return rows
