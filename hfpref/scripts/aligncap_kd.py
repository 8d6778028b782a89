"""
AlignCap KD-regularization: distil the LLM given text (acoustic prompt + caption + instruction) into the same LLM
with a LoRA adapter given SpeechTokenizer RVQ-1 speech tokens + instruction
(https://huggingface.co/papers/2410.19134, section 3.1).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/aligncap_kd.py \
    --config recipes/aligncap_kd/config_kd.yaml
"""

import logging
import os

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
    load_causal_lm,
    save_on_main_process,
    save_tiny_llm,
    write_card_and_push,
)
from hfpref.trainers.aligncap_kd.aligncap_kd_config import AlignCapKDConfig
from hfpref.trainers.aligncap_kd.aligncap_kd_trainer import AlignCapKDTrainer, clue_accuracy, kd_alignment_dataset
from hfpref.utils.distributed import zero3_init_disabled
from hfpref.utils.safe_loading import check_pretrained_path, refuse_remote_code


logger = logging.getLogger(__name__)


def main(script_args: AlignCapScriptArguments, training_args: AlignCapKDConfig, model_args: ModelConfig):
    set_seed(training_args.seed)
    refuse_remote_code((training_args, model_args), model_args.model_name_or_path)
    if bool(model_args.model_name_or_path) == script_args.tiny_llm:
        raise ValueError(
            "give exactly one model: model_name_or_path (a causal LM and its tokenizer) or tiny_llm: true"
        )
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
    else:
        model, tokenizer = load_causal_lm(model_args)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    token_ids = add_speech_tokens(tokenizer, model, encoder.codebook_size)
    if script_args.tiny_llm:  # the adapter's base must load from a folder
        save_tiny_llm(model, tokenizer, training_args)
    peft_config = speech_lora_config(
        token_ids,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or ("q_proj", "k_proj", "v_proj", "o_proj"),
    )
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
    write_card_and_push(trainer, training_args, dataset_name=dataset)
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
    return HfprefParser((AlignCapScriptArguments, AlignCapKDConfig, ModelConfig), method="aligncap_kd")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
