"""
Train the audibility classifier that guides captioners towards audible captions (Classifier-Guided Captioning
Across Modalities, https://huggingface.co/papers/2501.03183): a 2-label DistilBERT fine-tuned on audible vs
non-audible sentences (the shipped seed set by default, or a file from `hfpref audibility-data`).

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml hfpref/scripts/audibility_classifier.py \
    --config recipes/audibility_classifier/config_distilbert.yaml
"""

import logging

from datasets import DatasetDict
from transformers import set_seed

from hfpref.data.loading import select_splits
from hfpref.guidance.audibility_data import load_audibility_dataset
from hfpref.scripts.utils import (
    AudibilityModelArguments,
    AudibilityScriptArguments,
    HfprefParser,
    load_audibility_classifier,
    write_card_and_push,
)
from hfpref.trainers.audibility_classifier.audibility_classifier_config import AudibilityClassifierConfig
from hfpref.trainers.audibility_classifier.audibility_classifier_trainer import (
    AudibilityClassifierTrainer,
    tokenize_audibility,
)


logger = logging.getLogger(__name__)


def load_splits(args: AudibilityScriptArguments) -> DatasetDict:
    data = load_audibility_dataset(args.dataset_name, text_column=args.text_column, label_column=args.label_column)
    return select_splits(
        data,
        name=args.dataset_name,
        train_split=args.dataset_train_split,
        test_split=args.dataset_test_split,
        test_size=args.test_size,
        seed=args.split_seed,
        stratify_by_column="label",
    )


def main(script_args: AudibilityScriptArguments, training_args: AudibilityClassifierConfig, model_args):
    set_seed(training_args.seed)
    splits = load_splits(script_args)
    for name, split in splits.items():
        counts = [split["label"].count(i) for i in (0, 1)]
        logger.info("%s: %d sentences (%d non-audible, %d audible)", name, len(split), *counts)
    model, tokenizer = load_audibility_classifier(model_args, splits["train"]["sentence"])
    tokenized = {name: tokenize_audibility(split, tokenizer, script_args.max_length) for name, split in splits.items()}

    # Train -> evaluate -> save -> card -> push.
    trainer = AudibilityClassifierTrainer(
        model,
        training_args,
        processing_class=tokenizer,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["test"],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model(training_args.output_dir)

    card = dict(
        base_model=None if model_args.tiny_classifier else model_args.model_name_or_path,
        dataset_name=script_args.dataset_name or "hfpref audibility seed set",
        metrics=metrics,
    )
    write_card_and_push(trainer, training_args, **card)
    return trainer, metrics


def make_parser() -> HfprefParser:
    return HfprefParser(
        (AudibilityScriptArguments, AudibilityClassifierConfig, AudibilityModelArguments),
        method="audibility_classifier",
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
