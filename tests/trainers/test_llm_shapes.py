"""
Every LLM recipe's trainer (AlignCap KD, AlignCap DPO, caption GRPO) on two real decoder shapes cut to tiny widths:
TinyLlama-1.1B's (`LlamaForCausalLM`, untied LM head, SentencePiece-style tokenizer) and Qwen2.5-0.5B's
(`Qwen2ForCausalLM`, tied LM head, q/k/v biases, byte-level tokenizer). With a tied head peft trains the speech
tokens' output rows through the input rows' delta, and TRL's fused LM head (DPO, GRPO) has to read that wrapped head.
"""

import contextlib
import functools
import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfpref.data.synthetic.audio_world import make_world
from hfpref.data.synthetic.speech_world import make_speech_world
from hfpref.encoders.speech_tokens import (
    LLM_SHAPES,
    QWEN25_05B_SHAPE,
    TINYLLAMA_11B_SHAPE,
    SpeechTokenEncoder,
    build_speech_tokenizer,
    build_tiny_speech_llm,
    load_speech_adapter,
    prepare_fused_lm_head,
    randomize_codebooks,
    speech_lora_config,
    speech_token_ids,
)
from hfpref.judges.oracle import get_oracle_reward
from hfpref.rewards.functions import with_length_penalty
from hfpref.trainers.aligncap_dpo.aligncap_dpo_config import AlignCapDPOConfig
from hfpref.trainers.aligncap_dpo.aligncap_dpo_trainer import aligncap_dpo_trainer
from hfpref.trainers.aligncap_kd.aligncap_kd_config import AlignCapKDConfig
from hfpref.trainers.aligncap_kd.aligncap_kd_trainer import AlignCapKDTrainer, kd_alignment_dataset
from hfpref.trainers.caption_grpo import CaptionGRPOConfig, CaptionGRPOTrainer
from hfpref.trainers.caption_grpo.caption_grpo_utils import audio_token_prompts, frame_band_tokens


SHAPES = ["tinyllama", "qwen2.5"]
CPU = dict(save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, seed=0, logging_steps=1)
N_BANDS = 8


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny decoders, two steps each."""


@pytest.fixture(scope="module")
def speech_rows():
    """Eight 0.5 s speech clips as AlignCap prompts (speech tokens of a randomly initialised SpeechTokenizer)."""
    world = make_speech_world(8, seed=0, backend="procedural", clip_seconds=0.5)
    encoder = SpeechTokenEncoder(randomize_codebooks(build_speech_tokenizer(seed=0)))
    ds = kd_alignment_dataset(world, encoder)
    texts = [c for refs in world["references"] for c in refs] + list(ds["text_prompt"])
    return ds, texts, encoder.codebook_size


@pytest.fixture(scope="module")
def sound_rows():
    """Eight 1 s clips of the sound world as GRPO prompts (frame-band speech tokens), with the oracle's events."""
    world = make_world(8, seed=0, clip_seconds=1.0)
    tokenize = functools.partial(frame_band_tokens, n_bands=N_BANDS)
    ds = audio_token_prompts(world, tokenize, instruction="Describe the sound.", sampling_rate=16000)
    return ds, [c for refs in world["references"] for c in refs] + ["Describe the sound."]


def _saved_model(texts, codebook_size, shape, path, max_position_embeddings=512):
    """A tiny LLM of `shape`, saved and loaded back by path (a saved adapter names its base by that path)."""
    model, tokenizer = build_tiny_speech_llm(
        texts, codebook_size, seed=0, shape=shape, max_position_embeddings=max_position_embeddings
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _speech_rows_of(model, ids):
    """The speech tokens' input and output rows as the model uses them (through peft's wrappers: delta included)."""
    index = torch.tensor(ids)
    return model.get_input_embeddings().weight[index].detach(), model.get_output_embeddings().weight[index].detach()


def _check_trained_and_reloaded(trainer, tokenizer, shape, before, rows_before, prompt, tmp_path):
    """
    Two logged losses, finite; every trainable parameter moved; the speech tokens' output rows are their trained
    input rows under a tied head and stay as they were under an untied one; the saved adapter reloads
    ([`load_speech_adapter`]) with the same rows and the same logits.
    """
    model = trainer.model
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    moved = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert moved == set(before) and any("trainable_tokens_delta" in n for n in before)

    ids = speech_token_ids(tokenizer)
    inputs, outputs = _speech_rows_of(model, ids)
    assert not torch.equal(inputs, rows_before[0])  # the speech tokens' input rows trained
    if LLM_SHAPES[shape][0]["tie_word_embeddings"]:
        torch.testing.assert_close(outputs, inputs, rtol=0, atol=0)
    else:
        torch.testing.assert_close(outputs, rows_before[1], rtol=0, atol=0)

    trainer.save_model(str(tmp_path / "adapter"))
    reloaded, _ = load_speech_adapter(str(tmp_path / "adapter"))
    for row, reloaded_row in zip((inputs, outputs), _speech_rows_of(reloaded, ids)):
        torch.testing.assert_close(reloaded_row, row, rtol=0, atol=0)
    input_ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits)


def _check_fused_head(model, tokenizer, prompt):
    """TRL's fused LM head gives the log-probabilities of the model's own logits, adapter on and off."""
    input_ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    for adapter_off in (False, True):
        with torch.no_grad(), model.disable_adapter() if adapter_off else contextlib.nullcontext():
            fused = model(input_ids=input_ids, labels=input_ids, fused_lm_head=True).log_probs
            logits = model(input_ids=input_ids).logits[:, :-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
        torch.testing.assert_close(fused, expected)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("shape", SHAPES)
def test_tiny_llm_keeps_the_real_config(shape):
    model, tokenizer = build_tiny_speech_llm(["a woman sounds sad", "a man shouts"] * 4, 4, shape=shape)
    shipped, kind = LLM_SHAPES[shape]
    config = model.config
    assert config.model_type == shipped["model_type"] and config.tie_word_embeddings is shipped["tie_word_embeddings"]
    assert config.rope_parameters["rope_theta"] == shipped["rope_theta"]
    assert config.rms_norm_eps == shipped["rms_norm_eps"]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (
        64, 2, 4, 2,
    )  # fmt: skip
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    attention = model.model.layers[0].self_attn
    assert tied is shipped["tie_word_embeddings"]
    assert (attention.q_proj.bias is not None) is (shape == "qwen2.5")
    if shape == "qwen2.5":
        assert type(model).__name__ == "Qwen2ForCausalLM" and config.layer_types == ["full_attention"] * 2
        assert (config.sliding_window, config.use_sliding_window) == (None, False)  # as shipped: no window in use
    else:
        assert type(model).__name__ == "LlamaForCausalLM" and not config.attention_bias
    # Qwen's tokenizer is byte-level BPE ("Ġ" marks a space), Llama's SentencePiece ("▁").
    assert tokenizer.tokenize("a woman")[1] == ("▁woman" if kind == "metaspace" else "Ġwoman")
    assert QWEN25_05B_SHAPE["tie_word_embeddings"] and not TINYLLAMA_11B_SHAPE["tie_word_embeddings"]
    with pytest.raises(ValueError, match=r"shape='qwen2' is not one of \['qwen2.5', 'tinyllama'\]"):
        build_tiny_speech_llm(["a"], 2, shape="qwen2")


@pytest.mark.parametrize("shape", SHAPES)
def test_aligncap_kd_on_real_shapes(shape, speech_rows, tmp_path):
    ds, texts, codebook_size = speech_rows
    model, tokenizer = _saved_model(texts, codebook_size, shape, tmp_path / "llm")
    args = AlignCapKDConfig(
        output_dir=str(tmp_path / "kd"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, **CPU
    )
    trainer = AlignCapKDTrainer(model, args, train_dataset=ds, processing_class=tokenizer)
    before, rows_before = _snapshot(trainer.model), _speech_rows_of(trainer.model, speech_token_ids(tokenizer))
    trainer.train()
    _check_trained_and_reloaded(trainer, tokenizer, shape, before, rows_before, ds[0]["prompt"], tmp_path)


def _pairs(ds, tokenizer):
    """Each clip's caption chosen over the next clip's, as token ids (the form the trainer trains on)."""
    eos = tokenizer.eos_token_id
    captions = list(ds["caption"])
    rows = []
    for i, prompt in enumerate(ds["prompt"]):
        chosen, rejected = captions[i], next(c for c in captions[i + 1 :] + captions if c != captions[i])
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "prompt_ids": tokenizer(prompt)["input_ids"],
                "chosen_ids": tokenizer(" " + chosen, add_special_tokens=False)["input_ids"] + [eos],
                "rejected_ids": tokenizer(" " + rejected, add_special_tokens=False)["input_ids"] + [eos],
            }
        )
    return Dataset.from_list(rows)


@pytest.mark.parametrize("shape", SHAPES)
def test_aligncap_dpo_on_real_shapes(shape, speech_rows, tmp_path):
    ds, texts, codebook_size = speech_rows
    model, tokenizer = _saved_model(texts, codebook_size, shape, tmp_path / "llm")
    args = AlignCapDPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        gradient_checkpointing=False, **CPU,
    )  # fmt: skip
    trainer = aligncap_dpo_trainer(model, tokenizer, _pairs(ds, tokenizer), args)
    assert prepare_fused_lm_head(trainer.model) is (shape == "qwen2.5")  # peft wraps the tied head only
    before, rows_before = _snapshot(trainer.model), _speech_rows_of(trainer.model, speech_token_ids(tokenizer))
    trainer.train()
    _check_trained_and_reloaded(trainer, tokenizer, shape, before, rows_before, ds[0]["prompt"], tmp_path)
    _check_fused_head(trainer.model, tokenizer, ds[0]["prompt"] + " " + ds[0]["caption"])


@pytest.mark.parametrize("shape", SHAPES)
def test_caption_grpo_on_real_shapes(shape, sound_rows, tmp_path):
    ds, texts = sound_rows
    model, tokenizer = _saved_model(texts, N_BANDS, shape, tmp_path / "llm", max_position_embeddings=128)
    args = CaptionGRPOConfig(
        output_dir=str(tmp_path / "grpo"), max_steps=2, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, learning_rate=1e-2, beta=0.1, activation_checkpointing=False, **CPU,
    )  # fmt: skip
    trainer = CaptionGRPOTrainer(
        model=model,
        reward_funcs=with_length_penalty(get_oracle_reward(), expected_length=2, alpha=1.0),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        peft_config=speech_lora_config(speech_token_ids(tokenizer)),
    )
    before, rows_before = _snapshot(trainer.model), _speech_rows_of(trainer.model, speech_token_ids(tokenizer))
    trainer.train()
    assert all(math.isfinite(e["kl"]) for e in trainer.state.log_history if "kl" in e)
    _check_trained_and_reloaded(trainer, tokenizer, shape, before, rows_before, ds[0]["prompt"], tmp_path)
    _check_fused_head(trainer.model, tokenizer, ds[0]["prompt"] + " " + ds[0]["references"][0])


def test_a_biased_tied_head_is_refused(speech_rows):
    """peft drops the bias of a wrapped output layer in its own forward; TRL's fused head would add it."""
    from peft import get_peft_model

    _, texts, codebook_size = speech_rows
    model, tokenizer = build_tiny_speech_llm(texts, codebook_size, shape="qwen2.5")
    head = model.get_output_embeddings()
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
    model = get_peft_model(model, speech_lora_config(speech_token_ids(tokenizer)))
    with pytest.raises(ValueError, match="the output layer has a bias"):
        prepare_fused_lm_head(model)
