"""
Train a CLAP reward model on preference data: pairwise (Bradley-Terry, RLHF audio captioning) or
binary feedback (BCE/MSE, BATON). CLAP is frozen, so every clip and caption is embedded once
(through the on-disk cache) and the MLP head trains on the cached vectors.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/reward_model.py \
    --config recipes/reward_model/config_fense_bt.yaml
"""

import logging
import os

from transformers import set_seed

from hfpref.data.loading import check_input_exists
from hfpref.data.reward_data import has_embeddings, load_reward_splits
from hfpref.encoders.clap import ClapEmbedder
from hfpref.encoders.dataset import add_embeddings
from hfpref.judges.oracle import make_oracle_reward_data
from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel, check_clap_pairing
from hfpref.scripts.utils import (
    TINY_CLAP_DIR,
    HfprefParser,
    RewardHeadArguments,
    RewardScriptArguments,
    save_on_main_process,
    save_tiny_clap,
    write_card_and_push,
)
from hfpref.trainers import RewardModelConfig, RewardModelTrainer
from hfpref.utils.checks import check_finite_training


logger = logging.getLogger(__name__)


def main(script_args: RewardScriptArguments, training_args: RewardModelConfig, head_args: RewardHeadArguments):
    set_seed(training_args.seed)
    pairwise = training_args.pairwise
    # Upstream outputs first: a missing one names the stage that writes it, before any data work.
    if not script_args.tiny_clap:
        check_input_exists(script_args.clap_model_name_or_path, "the CLAP (clap_model_name_or_path)")
    if head_args.init_from:
        check_input_exists(head_args.init_from, "the reward model to start from (init_from)")

    # Data -> embeddings, through the cache; splits with precomputed embedding columns are used as they are.
    splits = load_reward_splits(script_args, pairwise=pairwise, synthetic_data=make_oracle_reward_data)
    to_embed = [name for name, split in splits.items() if not has_embeddings(split, pairwise, f"split {name!r}")]
    embedder, clap_path = None, script_args.clap_model_name_or_path
    if to_embed:
        if script_args.tiny_clap:
            clap_path = os.path.join(training_args.output_dir, TINY_CLAP_DIR)
            texts = training_texts(splits["train"], pairwise, script_args.text_column)
            save_on_main_process(
                training_args, lambda: save_tiny_clap(texts, clap_path, seed=training_args.seed), what="tiny CLAP"
            )
        cache_dir = script_args.embedding_cache_dir or os.path.join(training_args.output_dir, "embedding-cache")
        embedder = ClapEmbedder.from_pretrained(clap_path, cache_dir=cache_dir)
    model = None
    if head_args.init_from:
        model = CLAPRewardModel.from_pretrained(head_args.init_from)
        if embedder is not None:
            # Training on another CLAP's embeddings would keep the old fingerprint on a head that now reads new ones.
            check_clap_pairing(model, embedder)
    text_columns = ["chosen", "rejected"] if pairwise else {script_args.text_column: "text_embedding"}
    embedded = {
        name: add_embeddings(
            split,
            embedder,
            audio_column=script_args.audio_column,
            text_columns=text_columns,
            skip_bad_audio=script_args.skip_bad_audio,
        )
        if name in to_embed
        else split
        for name, split in splits.items()
    }
    if embedder is not None:
        logger.info("embedding cache %s: %s", cache_dir, embedder.cache.stats)
    if len(to_embed) < len(splits):
        logger.info("precomputed embedding columns used as they are in %s", sorted(set(splits) - set(to_embed)))
    embedding_dim = precomputed_width(embedded, script_args.embedding_dim, embedder)

    # Model (a new head is built after embedding, so its initialisation follows the same seeded RNG as always).
    if model is None:
        model = CLAPRewardModel(
            CLAPRewardConfig(
                embedding_dim=embedding_dim,
                hidden_sizes=head_args.hidden_sizes,
                dropout=head_args.dropout,
                reward_clamp=head_args.reward_clamp,
                num_members=head_args.num_members,
                ensemble_lambda=head_args.ensemble_lambda,
                clap_checkpoint=clap_path if embedder else script_args.embeddings_from,
                clap_fingerprint=embedder.fingerprint if embedder else None,
            )
        )

    # Train -> evaluate -> save -> card -> push.
    eval_sets = {name: split for name, split in embedded.items() if name != "train"}
    eval_dataset = eval_sets["test"] if list(eval_sets) == ["test"] else eval_sets  # named sets: eval_<name>_*
    trainer = RewardModelTrainer(model, training_args, train_dataset=embedded["train"], eval_dataset=eval_dataset)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    check_finite_training(
        trainer.model, trainer.state.log_history, what=f"the reward model for {training_args.output_dir}"
    )
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model(training_args.output_dir)

    source = (
        script_args.dataset_name or script_args.fense_files or f"synthetic world ({script_args.synthetic_clips} clips)"
    )
    named = script_args.named_eval_datasets()  # eval_<name>_* results go under their own data on the card
    write_card_and_push(trainer, training_args, dataset_name=source, metrics=metrics, eval_dataset=named or None)
    return trainer, metrics


def training_texts(train, pairwise: bool, text_column: str) -> list[str]:
    """The captions of the training split, which a tiny CLAP's tokenizer is trained on."""
    columns = ["chosen", "rejected"] if pairwise else [text_column]
    return [text for column in columns for text in train[column]]


def precomputed_width(embedded: dict, embedding_dim: int | None, embedder) -> int:
    """The reward model's input width: the CLAP's, or that of the precomputed columns (checked against embedding_dim)."""
    if embedder is not None:
        width = embedder.embedding_dim
    else:
        first = next(iter(embedded.values()))
        width = len(first[0]["audio_embedding"])
    if embedding_dim is not None and embedding_dim != width:
        source = (
            f"the CLAP {getattr(embedder, 'model_name', '')}"
            if embedder is not None
            else "the precomputed audio_embedding"
        )
        raise ValueError(f"embedding_dim={embedding_dim}, but {source} is {width}-d.")
    return width


def make_parser() -> HfprefParser:
    return HfprefParser((RewardScriptArguments, RewardModelConfig, RewardHeadArguments), method="reward_model")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
