"""
DPO of an audio captioner (an audio LLM such as Qwen2-Audio, with LoRA on its LLM; or a seq2seq captioner) on
(audio, chosen caption, rejected caption) pairs: AlignCap's preference step on a captioner that reads the audio.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_dpo.py \
    --config recipes/caption_dpo/config_tiny.yaml
"""

import logging
from dataclasses import dataclass

from transformers import set_seed

from hfpref.scripts.utils import (
    CaptionerArguments,
    HfprefParser,
    captioner_peft_config,
    load_captioner,
    save_tiny_llm,
    write_card_and_push,
)
from hfpref.trainers import CaptionDPOConfig, CaptionDPOTrainer
from hfpref.utils.checks import check_finite_training


logger = logging.getLogger(__name__)


@dataclass
class CaptionDPOScriptArguments:
    r"""
    Data arguments of `recipes/caption_dpo.py`. Exactly one source: `dataset_name` or `synthetic_clips`.

    Parameters:
        dataset_name (`str`, *optional*): Hub id, `save_to_disk` folder or data file of pairs: an audio column and
            the config's `chosen_column` and `rejected_column` captions.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): training split.
        dataset_test_split (`str`, *optional*): evaluation split; without one, `test_size` of the pairs are held out.
        test_size (`float`, *optional*, defaults to `0.1`): share held out when there is no test split (for the
            synthetic world, the share of clips whose pairs are held out).
        synthetic_clips (`int`, *optional*): pairs on a synthetic world of this many clips instead, judged by its
            oracle ([`~hfpref.judges.oracle.make_oracle_preferences`]); the held-out pairs are on held-out clips.
        synthetic_seed (`int`, *optional*, defaults to `0`): seed of the synthetic world, its pairs and the split.
        synthetic_clip_seconds (`float`, *optional*, defaults to `4.0`): clip length of the synthetic world.
        pairs_per_clip (`int`, *optional*, defaults to `4`): most oracle pairs per synthetic clip.
        max_train_samples (`int`, *optional*): keep only the first `max_train_samples` training pairs.
    """

    dataset_name: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str | None = None
    test_size: float = 0.1
    synthetic_clips: int | None = None
    synthetic_seed: int = 0
    synthetic_clip_seconds: float = 4.0
    pairs_per_clip: int = 4
    max_train_samples: int | None = None

    def __post_init__(self):
        sources = [name for name in ("dataset_name", "synthetic_clips") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one data source of ['dataset_name', 'synthetic_clips'], got {sources}")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size={self.test_size} must lie in (0, 1)")
        if self.synthetic_clip_seconds <= 0 or self.pairs_per_clip < 1:
            raise ValueError("synthetic_clip_seconds must be positive and pairs_per_clip >= 1")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples={self.max_train_samples} must be a positive number of rows")


def load_pair_splits(args: CaptionDPOScriptArguments):
    """Train/test preference pairs: oracle-judged pairs on a synthetic world split by clip, or a loaded dataset."""
    from datasets import DatasetDict

    from hfpref.data.loading import load_any_dataset, select_splits

    if args.synthetic_clips:
        from hfpref.data.synthetic.audio_world import make_world
        from hfpref.judges.oracle import make_oracle_preferences

        world = make_world(args.synthetic_clips, seed=args.synthetic_seed, clip_seconds=args.synthetic_clip_seconds)
        clips = world.train_test_split(test_size=args.test_size, seed=args.synthetic_seed)
        splits = DatasetDict(
            {
                name: make_oracle_preferences(part, seed=args.synthetic_seed + i, pairs_per_clip=args.pairs_per_clip)
                for i, (name, part) in enumerate(clips.items())
            }
        )
    else:
        splits = select_splits(
            load_any_dataset(args.dataset_name),
            name=args.dataset_name,
            train_split=args.dataset_train_split,
            test_split=args.dataset_test_split,
            test_size=args.test_size,
            seed=args.synthetic_seed,
        )
    if args.max_train_samples is not None:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    return splits


def main(script_args: CaptionDPOScriptArguments, training_args: CaptionDPOConfig, model_args: CaptionerArguments):
    set_seed(training_args.seed)
    splits = load_pair_splits(script_args)
    train = splits["train"]
    texts = None
    if model_args.tiny_captioner:
        texts = list(train[training_args.chosen_column]) + list(train[training_args.rejected_column])
    model, processor = load_captioner(model_args, texts, seed=training_args.seed)
    peft_config = captioner_peft_config(model_args, model)
    if model_args.tiny_captioner and peft_config is not None:
        save_tiny_llm(model, processor, training_args)  # the adapter's base must load from a folder
    trainer = CaptionDPOTrainer(
        model,
        training_args,
        train_dataset=train,
        eval_dataset=splits["test"],
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    check_finite_training(trainer.model, trainer.state.log_history, what=training_args.output_dir)
    trainer.save_model(training_args.output_dir)
    dataset = script_args.dataset_name or f"oracle pairs on a synthetic world ({script_args.synthetic_clips} clips)"
    write_card_and_push(trainer, training_args, dataset_name=dataset, metrics=metrics)
    return trainer, metrics


def make_parser() -> HfprefParser:
    return HfprefParser((CaptionDPOScriptArguments, CaptionDPOConfig, CaptionerArguments), method="caption_dpo")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
