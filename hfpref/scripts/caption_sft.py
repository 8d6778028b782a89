"""
Supervised fine-tuning of an audio captioner (Whisper architecture by default) on (audio, caption)
pairs with `Seq2SeqTrainer`: how the baseline captioner for RL is made.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_sft.py \
    --config recipes/caption_sft/config_synthetic.yaml
"""

import logging

from transformers import set_seed

from hfpref.models.captioning import caption_collator, prepare_captioner
from hfpref.scripts.utils import (
    CaptionerArguments,
    CaptionScriptArguments,
    HfprefParser,
    captioner_peft_config,
    load_caption_splits,
    load_captioner,
    write_card_and_push,
)
from hfpref.trainers.caption_sft import CaptionSFTConfig, CaptionSFTTrainer
from hfpref.utils.checks import check_finite_training


logger = logging.getLogger(__name__)


def main(script_args: CaptionScriptArguments, training_args: CaptionSFTConfig, model_args: CaptionerArguments):
    set_seed(training_args.seed)
    splits = load_caption_splits(script_args)
    for name, split in splits.items():
        missing = {training_args.audio_column, script_args.caption_column} - set(split.column_names)
        if missing:
            raise ValueError(f"the {name} split lacks columns {sorted(missing)}; it has {split.column_names}")
    texts = [c for c in splits["train"][script_args.caption_column]]
    if "references" in splits["train"].column_names:
        texts += [r for refs in splits["train"]["references"] for r in refs]
    model, processor = load_captioner(model_args, texts, seed=training_args.seed)
    # One decoder prompt for training and decoding, saved in the generation config (Whisper: language fixed, no
    # timestamps): the captions are trained after exactly the tokens every later decode forces.
    prefix = prepare_captioner(model, processor.tokenizer, language=training_args.caption_language)

    collator = caption_collator(
        model,
        processor,
        audio_column=training_args.audio_column,
        caption_column=script_args.caption_column,
        max_caption_tokens=training_args.max_caption_tokens,
        decoder_prompt=prefix,
    )
    peft_config = captioner_peft_config(model_args, model)
    if peft_config is not None:
        from hfpref.utils.distributed import apply_peft

        model = apply_peft(model, peft_config)
    trainer = CaptionSFTTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=splits["train"],
        eval_dataset=splits["test"],
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    check_finite_training(trainer.model, trainer.state.log_history, what=training_args.output_dir)
    trainer.save_model(training_args.output_dir)

    card = dict(
        base_model=model_args.model_name_or_path,
        dataset_name=script_args.dataset_name or f"synthetic world ({script_args.synthetic_clips} clips)",
        metrics=metrics,
    )
    write_card_and_push(trainer, training_args, **card)
    return trainer, metrics


def make_parser() -> HfprefParser:
    return HfprefParser((CaptionScriptArguments, CaptionSFTConfig, CaptionerArguments), method="caption_sft")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
