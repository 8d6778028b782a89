"""
AlignCap KD-regularization: distil the LLM given text (acoustic prompt + caption + instruction) into the same LLM
with a LoRA adapter given SpeechTokenizer RVQ-1 speech tokens + instruction
(https://huggingface.co/papers/2410.19134, section 3.1).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/aligncap_kd.py \
    --config recipes/aligncap_kd/config_kd.yaml
"""

import dataclasses
import logging
import os
from collections.abc import Sequence

from peft import LoraConfig
from transformers import set_seed
from trl import ModelConfig

from hfpref.data.synthetic.speech_world import speech_emotion_splits
from hfpref.encoders.speech_tokens import (
    add_speech_tokens,
    build_tiny_speech_llm,
    load_speech_adapter,
    save_speech_tokenizer,
    speech_encoder_for,
    speech_lora_config,
)
from hfpref.prompts.emotion_clues import teacher_prompt
from hfpref.scripts.utils import (
    AlignCapScriptArguments,
    HfprefParser,
    save_on_main_process,
    save_tiny_llm,
    write_card_and_push,
)
from hfpref.trainers.aligncap_kd.aligncap_kd_config import AlignCapKDConfig
from hfpref.trainers.aligncap_kd.aligncap_kd_trainer import AlignCapKDTrainer, clue_accuracy, kd_alignment_dataset
from hfpref.utils.distributed import zero3_init_disabled
from hfpref.utils.safe_loading import check_pretrained_path, load_pretrained, refuse_remote_code


logger = logging.getLogger(__name__)


def check_aligncap_model_args(model_args: ModelConfig, *, tiny_llm: bool, cuda: bool | None = None) -> None:
    """
    Refuse the fields of TRL's `ModelConfig` that an AlignCap stage (KD or DPO) cannot honour, with what to do instead;
    the others are honoured: `attn_implementation` ([`aligncap_model_kwargs`]), `use_dora`, `use_rslora`, `lora_*`
    ([`aligncap_lora_config`]), `load_in_4bit` / `load_in_8bit` on CUDA with bitsandbytes.

    Args:
        model_args (`trl.ModelConfig`): the model arguments.
        tiny_llm (`bool`): whether the LLM is built in memory (`tiny_llm: true`) instead of loaded.
        cuda (`bool`, *optional*): whether CUDA is available; defaults to `torch.cuda.is_available()`.
    """
    if not model_args.use_peft:
        raise ValueError(
            "use_peft: false is not supported by AlignCap: the KD teacher and the DPO reference are the LLM with its "
            "LoRA adapter disabled, so the student/policy must be a LoRA adapter (remove use_peft or set it to true)"
        )
    if model_args.lora_task_type != "CAUSAL_LM":
        raise ValueError(f"lora_task_type={model_args.lora_task_type!r}: AlignCap trains a CAUSAL_LM adapter")
    for name in ("lora_target_parameters", "lora_modules_to_save"):
        if getattr(model_args, name, None):
            raise ValueError(
                f"{name} is not supported by AlignCap: the adapter trains LoRA matrices (lora_target_modules) and the "
                "speech-token rows only; a fully trained module would also change the adapter-disabled teacher/reference"
            )
    quantized = [name for name in ("load_in_4bit", "load_in_8bit") if getattr(model_args, name)]
    if quantized:
        import importlib.util

        import torch

        if tiny_llm:
            raise ValueError(f"{quantized[0]}: the tiny LLM is built in memory in float32; quantize a loaded model")
        cuda = torch.cuda.is_available() if cuda is None else cuda
        if not cuda or importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                f"{quantized[0]} needs bitsandbytes and a CUDA GPU "
                f"({'CUDA is available' if cuda else 'no CUDA device here'}; bitsandbytes "
                f"{'installed' if importlib.util.find_spec('bitsandbytes') else 'not installed'}): remove {quantized[0]} "
                "to train in full precision"
            )


def aligncap_model_kwargs(model_args: ModelConfig) -> dict:
    """`from_pretrained` keyword arguments of `model_args`: revision, dtype, `attn_implementation`, quantization."""
    kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from trl import get_quantization_config

        kwargs["quantization_config"] = get_quantization_config(model_args)
        kwargs["device_map"] = {"": 0}
    return kwargs


def load_aligncap_llm(model_args: ModelConfig):
    """`(model, tokenizer)` of `model_name_or_path` with [`aligncap_model_kwargs`] (safetensors, no remote code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path, revision=model_args.model_revision)
    model = load_pretrained(AutoModelForCausalLM, model_args.model_name_or_path, **aligncap_model_kwargs(model_args))
    return model, tokenizer


def set_attn_implementation(model, model_args: ModelConfig) -> None:
    """Give a model built in memory (`tiny_llm`) the `attn_implementation` asked for, as loading would."""
    if model_args.attn_implementation is not None:
        model.set_attn_implementation(model_args.attn_implementation)


def aligncap_lora_config(token_ids: Sequence[int], model_args: ModelConfig) -> LoraConfig:
    """
    [`~hfpref.encoders.speech_tokens.speech_lora_config`] for the speech tokens `token_ids`, with the LoRA fields of
    `model_args`: `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules` (default: the attention projections),
    `use_dora`, `use_rslora`.
    """
    config = speech_lora_config(
        token_ids,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or ("q_proj", "k_proj", "v_proj", "o_proj"),
    )
    return dataclasses.replace(config, use_dora=model_args.use_dora, use_rslora=model_args.use_rslora)


def main(
    script_args: AlignCapScriptArguments,
    training_args: AlignCapKDConfig,
    model_args: ModelConfig,
):
    set_seed(training_args.seed)
    refuse_remote_code((training_args, model_args), model_args.model_name_or_path)
    if bool(model_args.model_name_or_path) == script_args.tiny_llm:
        raise ValueError(
            "give exactly one model: model_name_or_path (a causal LM and its tokenizer) or tiny_llm: true"
        )
    check_aligncap_model_args(model_args, tiny_llm=script_args.tiny_llm)
    if not script_args.tiny_llm:
        check_pretrained_path(model_args.model_name_or_path, what="model_name_or_path")
    splits = speech_emotion_splits(script_args, training_args.seed)
    encoder = speech_encoder_for(script_args, splits["train"], seed=training_args.seed)
    if script_args.speech_tokenizer_path is None:  # fitted here: later stages (pairs, DPO) tokenize speech with it
        speech_dir = os.path.join(training_args.output_dir, "speech_tokenizer")
        save_on_main_process(
            training_args, lambda: save_speech_tokenizer(encoder.model, speech_dir), what="speech tokenizer"
        )
    data = {
        name: kd_alignment_dataset(
            split, encoder, instruction=script_args.instruction, audio_column=script_args.audio_column,
            caption_column=script_args.caption_column,
        )
        for name, split in splits.items()
    }  # fmt: skip
    if script_args.tiny_llm:
        texts = [c for refs in splits["train"]["references"] for c in refs]
        texts += [teacher_prompt(c, script_args.instruction) for c in splits["train"][script_args.caption_column]]
        model, tokenizer = build_tiny_speech_llm(texts, encoder.codebook_size, seed=training_args.seed)
        set_attn_implementation(model, model_args)
    else:
        model, tokenizer = load_aligncap_llm(model_args)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    token_ids = add_speech_tokens(tokenizer, model, encoder.codebook_size)
    if script_args.tiny_llm:  # the adapter's base must load from a folder
        save_tiny_llm(model, tokenizer, training_args)
    peft_config = aligncap_lora_config(token_ids, model_args)
    trainer = AlignCapKDTrainer(
        model, training_args, train_dataset=data["train"], eval_dataset=data["test"], processing_class=tokenizer,
        peft_config=peft_config,
    )  # fmt: skip
    before = trainer.evaluate(metric_key_prefix="eval_start")
    if script_args.dataset_name is None:  # the speech world: what the student tells from the speech alone
        before["eval_start_emotion_accuracy"] = clue_accuracy(trainer.model, tokenizer, data["test"])
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {**before, **trainer.evaluate()}
    if script_args.dataset_name is None:
        metrics["eval_emotion_accuracy"] = clue_accuracy(trainer.model, tokenizer, data["test"])
        logger.info(
            "held-out emotion accuracy (six-way forced choice, chance 1/6): %.3f -> %.3f",
            metrics["eval_start_emotion_accuracy"], metrics["eval_emotion_accuracy"],
        )  # fmt: skip
    trainer.save_metrics("eval", metrics)
    logger.info("held-out KL(teacher || student): %.4f -> %.4f", metrics["eval_start_kl"], metrics["eval_kl"])
    trainer.save_model(training_args.output_dir)
    # The merged student is what PO-regularization (recipes/aligncap_dpo.py) and `hfpref pairs` start from. It is
    # merged from the adapter just saved (whole under every engine; the trainer's own copy is partitioned under
    # ZeRO-3 and sharded under FSDP2), once, by the main process.
    if trainer.accelerator.is_main_process:
        save_merged_student(training_args.output_dir, os.path.join(training_args.output_dir, "merged"))
    trainer.accelerator.wait_for_everyone()
    dataset = script_args.dataset_name or f"speech world ({script_args.speech_world_clips} clips)"
    write_card_and_push(trainer, training_args, dataset_name=dataset, license=training_args.license)
    return trainer, metrics


def save_merged_student(adapter_dir: str, merged_dir: str):
    """
    The saved adapter merged into its base (loaded whole, outside ZeRO-3's `zero.Init`), saved with its tokenizer.
    The adapter holds the speech-token rows, not the embedding matrix:
    [`~hfpref.encoders.speech_tokens.load_speech_adapter`] resizes the base to the saved tokenizer and writes the rows
    back before loading it.
    """
    with zero3_init_disabled():
        model, tokenizer = load_speech_adapter(adapter_dir)
        merged = model.merge_and_unload()
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    return merged


def make_parser() -> HfprefParser:
    parser = HfprefParser((AlignCapScriptArguments, AlignCapKDConfig, ModelConfig), method="aligncap_kd")
    parser.set_defaults(use_peft=True)  # AlignCap trains a LoRA adapter; `use_peft: false` is refused
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
