"""
RL fine-tuning of a seq2seq audio captioner against a reward (SCST / RLOO / PPO-clip), as in
"Aligning Audio Captions with Human Preferences": the CLAP reward model's score with a length penalty.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/caption_rl.py \
    --config recipes/caption_rl/config_scst.yaml
"""

import logging
import os

from transformers import set_seed

from hfpref.encoders.dataset import add_embeddings
from hfpref.rewards.functions import build_reward_funcs
from hfpref.scripts.utils import (
    CaptionerArguments,
    CaptionRLScriptArguments,
    HfprefParser,
    captioner_peft_config,
    expected_length_for,
    load_caption_splits,
    load_captioner,
    resolve_reward_model,
    write_card_and_push,
)
from hfpref.trainers import CaptionRLConfig, CaptionRLTrainer
from hfpref.utils.checks import check_finite_training
from hfpref.utils.safe_loading import check_pretrained_path


logger = logging.getLogger(__name__)


def main(script_args: CaptionRLScriptArguments, training_args: CaptionRLConfig, model_args: CaptionerArguments):
    set_seed(training_args.seed)
    splits = load_caption_splits(script_args)
    train = splits["train"]
    expected_length = expected_length_for(script_args, train)
    captions = list(train[script_args.caption_column])
    if "references" in train.column_names:
        captions += [r for refs in train["references"] for r in refs]

    reward_model = resolve_reward_model(script_args, training_args, captions)
    reward_funcs, embedder = build_reward_funcs(
        script_args.reward_funcs,
        reward_model_name_or_path=reward_model,
        clap_model_name_or_path=script_args.clap_model_name_or_path,
        embedding_cache_dir=script_args.embedding_cache_dir
        or os.path.join(training_args.output_dir, "embedding-cache"),
        length_penalty_alpha=script_args.length_penalty_alpha,
        expected_length=expected_length,
        repetition_penalty=script_args.repetition_penalty,
        references_corpus=train["references"] if "references" in train.column_names else None,
        reward_ensemble_lambda=script_args.reward_ensemble_lambda,
    )
    if script_args.selection_reward_model:
        add_selection_reward(reward_funcs, training_args, embedder, script_args.selection_reward_model)
    if embedder is not None:  # CLAP is frozen: embed each clip once, rewards read `audio_embedding`
        splits = type(splits)({k: add_embeddings(v, embedder, text_columns=[]) for k, v in splits.items()})

    texts = list(train[script_args.caption_column]) if model_args.tiny_captioner else None
    model, processor = load_captioner(model_args, texts, seed=training_args.seed)
    ref_model = load_reference(script_args.ref_model_name_or_path, training_args, processor)
    trainer = CaptionRLTrainer(
        model,
        reward_funcs,
        training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["test"],
        processing_class=processor,
        peft_config=captioner_peft_config(model_args, model),
        ref_model=ref_model,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    check_finite_training(trainer.model, trainer.state.log_history, what=training_args.output_dir)
    trainer.save_model(training_args.output_dir)
    dataset = script_args.dataset_name or f"synthetic world ({script_args.synthetic_clips} clips)"
    write_card_and_push(trainer, training_args, dataset_name=dataset, reward_model=reward_model)
    return trainer, metrics


def load_reference(path: str | None, training_args: CaptionRLConfig, processor):
    """
    The KL term's frozen reference from `path` (`None`: the trainer's frozen copy of the policy). It must read and
    write the policy's tokens: a tokenizer with another vocabulary is refused, naming the checkpoint.
    """
    if path is None:
        return None
    if training_args.kl_coef <= 0:
        raise ValueError(f"ref_model_name_or_path={path!r} is the KL term's reference: it needs kl_coef > 0")
    reference, reference_processor = load_captioner(CaptionerArguments(model_name_or_path=path))
    if reference_processor.tokenizer.get_vocab() != processor.tokenizer.get_vocab():
        raise ValueError(
            f"ref_model_name_or_path={path!r} has another tokenizer than the policy (vocabularies differ): the KL "
            "term compares log-probabilities of the same tokens"
        )
    return reference


def add_selection_reward(reward_funcs: list, training_args: CaptionRLConfig, embedder, path: str) -> None:
    """
    Append the reward model at `path` as `selection_reward`, with weight 0: it never reaches the advantage, and
    evaluation logs it (`eval_rewards/selection_reward`) for checkpoint selection. It reads the embeddings of the
    RL reward's CLAP (checked: [`~hfpref.models.modeling_clap_reward.check_clap_pairing`]).
    """
    from hfpref.models.modeling_clap_reward import CLAPRewardModel
    from hfpref.rewards.functions import get_reward_model_reward

    if embedder is None:
        raise ValueError("selection_reward_model reads CLAP embeddings: the RL rewards must include 'reward_model'")
    check_pretrained_path(path, what="selection_reward_model")
    selection = get_reward_model_reward(CLAPRewardModel.from_pretrained(path), embedder)
    weights = training_args.reward_weights or [1.0] * len(reward_funcs)
    selection.__name__ = "selection_reward"  # the name the trainer logs it under
    reward_funcs.append(selection)
    training_args.reward_weights = [*weights, 0.0]


def make_parser() -> HfprefParser:
    return HfprefParser((CaptionRLScriptArguments, CaptionRLConfig, CaptionerArguments), method="caption_rl")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
