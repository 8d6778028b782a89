"""Fit a CLAP contrastively on (audio, caption) pairs, or adapt a pretrained one to a domain.

Offline, this fits the tiny CLAP that the quickstart then uses as a reward; online, it adapts
`laion/clap-htsat-unfused` to a Hub or local dataset.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/clap_contrastive.py --config recipes/clap_contrastive/config_synthetic.yaml
"""

from datasets import Dataset, DatasetDict

from hfpref.data import load_any_dataset, make_world
from hfpref.data.loading import get_split
from hfpref.data.preference import drop_uninformative_rows
from hfpref.encoders import build_tiny_clap, load_clap
from hfpref.scripts.utils import ClapContrastiveScriptArguments, ClapModelArguments, HfprefParser, write_card_and_push
from hfpref.trainers import ClapContrastiveConfig, ClapContrastiveTrainer
from hfpref.utils.checks import check_finite_training


def load_data(script_args: ClapContrastiveScriptArguments) -> tuple[Dataset, Dataset | None]:
    if script_args.synthetic_clips:
        seed, held_out = script_args.synthetic_seed, script_args.synthetic_eval_clips
        world = dict(
            sampling_rate=script_args.synthetic_sampling_rate, clip_seconds=script_args.synthetic_clip_seconds
        )
        train = make_world(script_args.synthetic_clips, seed=seed, **world)
        return train, make_world(held_out, seed=seed + 1, **world) if held_out else None
    dataset = load_any_dataset(script_args.dataset_name)
    if not isinstance(dataset, DatasetDict):
        dataset = DatasetDict({"train": dataset})
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    name = script_args.dataset_name
    train = get_split(dataset, train_split, name=name)
    return train, get_split(dataset, test_split, name=name) if test_split is not None else None


def load_model(model_args: ClapModelArguments, training_args: ClapContrastiveConfig, train: Dataset):
    if not model_args.tiny:
        return load_clap(model_args.model_name_or_path, revision=model_args.model_revision)
    texts = list(train[training_args.text_column])
    references = training_args.references_column
    if references is not None and references in train.column_names:
        texts += [text for row in train[references] for text in row or []]
    negatives = training_args.hard_negatives_column
    if negatives is not None and negatives in train.column_names:
        texts += [text for row in train[negatives] for text in row or []]
    return build_tiny_clap(
        texts,
        seed=training_args.seed,
        sampling_rate=model_args.tiny_sampling_rate,
        projection_dim=model_args.tiny_projection_dim,
        vocab_size=model_args.tiny_vocab_size,
        clip_seconds=model_args.tiny_clip_seconds,
        num_mel_bins=model_args.tiny_num_mel_bins,
        spec_size=model_args.tiny_spec_size,
        text_dropout=model_args.tiny_text_dropout,
        audio_dropout=model_args.tiny_audio_dropout,
    )


def main(script_args, training_args, model_args):
    train_dataset, eval_dataset = load_data(script_args)
    source = script_args.dataset_name or "the synthetic world"
    train_dataset, eval_dataset = (
        drop_uninformative_rows(
            ds, [training_args.text_column], strict=script_args.strict_data, name=f"{source} ({s})"
        )
        if ds is not None
        else None
        for ds, s in ((train_dataset, "train"), (eval_dataset, "test"))
    )
    if eval_dataset is None and training_args.eval_strategy != "no":
        raise ValueError(
            "eval_strategy needs dataset_test_split or synthetic_eval_clips > 0; or set eval_strategy: no"
        )
    model, processor = load_model(model_args, training_args, train_dataset)

    trainer = ClapContrastiveTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    check_finite_training(trainer.model, trainer.state.log_history, what=f"the CLAP for {training_args.output_dir}")
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model and processor saved to {training_args.output_dir}.")
    card = {"dataset": script_args.dataset_name, "finetuned_from": model_args.model_name_or_path}
    write_card_and_push(trainer, training_args, **card)
    return trainer


def make_parser() -> HfprefParser:
    return HfprefParser(
        (ClapContrastiveScriptArguments, ClapContrastiveConfig, ClapModelArguments), method="clap_contrastive"
    )


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
