"""
BATON's reward-weighted fine-tuning of a text-to-audio diffusion model (https://huggingface.co/papers/2402.00744):
human-labelled and reward-model-labelled (prompt, audio) pairs mixed 1:1, each weighted by the binary reward model's
score, plus a denoising loss on the original training data; the held-out prompts are rendered and scored before and
after, and the table goes into the model card.

accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/reward_weighted_diffusion.py \
    --config recipes/reward_weighted_diffusion/config_baton.yaml
"""

import logging
import os

from transformers import set_seed

from hfpref.data.audio import decode_audio_column
from hfpref.data.loading import load_any_dataset
from hfpref.data.preference import load_binary_feedback
from hfpref.data.synthetic.audio_world import EVENT_KINDS, make_world
from hfpref.data.tta_feedback import add_rewards, generated_dataset, load_unlabelled_feedback, mix_feedback
from hfpref.encoders.clap import ClapEmbedder, load_clap
from hfpref.judges.oracle import make_oracle_feedback
from hfpref.metrics.tta import check_frechet_subsets, evaluate_tta
from hfpref.models.tta_pipeline import (
    build_tiny_tta_pipeline,
    fit_vae,
    generate_audio,
    load_tta_pipeline,
    sampling_rate_of,
)
from hfpref.prompts.tta_prompts import build_tta_prompts, world_event_phrases
from hfpref.rewards import CLAPRewardModel
from hfpref.scripts.utils import (
    HfprefParser,
    RewardWeightedDiffusionScriptArguments,
    TTAPipelineArguments,
    resolve_reward_model,
    write_card_and_push,
)
from hfpref.trainers import RewardWeightedDiffusionConfig, RewardWeightedDiffusionTrainer
from hfpref.utils.safe_loading import check_pretrained_path, load_pretrained


logger = logging.getLogger(__name__)


def _render(pipeline, prompts, script_args, n, seed):
    return generate_audio(
        pipeline,
        prompts,
        num_waveforms_per_prompt=n,
        num_inference_steps=script_args.num_inference_steps,
        guidance_scale=script_args.guidance_scale,
        audio_length_in_s=script_args.audio_length_in_s,
        seed=seed,
    )


def eval_task_sizes(eval_prompts: int, eval_clips_per_prompt: int) -> dict[str, int]:
    """Clips per task subset of the held-out evaluation: half the prompts (rounded down) are temporal."""
    half = eval_prompts // 2
    sizes = {"integrity": (eval_prompts - half) * eval_clips_per_prompt, "temporal": half * eval_clips_per_prompt}
    return {task: n for task, n in sizes.items() if n}


def check_evaluation_settings(eval_prompts: int, eval_clips_per_prompt: int, *, frechet: bool) -> None:
    """
    Refuse, before any rendering or training, held-out evaluation settings whose scores cannot be computed: with a
    reference set (`frechet`), the Frechet distance of every task subset fits a covariance, so each subset needs at
    least 2 clips.

    Example:

    ```python
    >>> eval_task_sizes(4, 1)
    {'integrity': 2, 'temporal': 2}
    >>> check_evaluation_settings(2, 1, frechet=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: eval_prompts=2 with eval_clips_per_prompt=1 renders {'integrity': 1, 'temporal': 1} clips per task ...

    ```
    """
    if eval_prompts == 0 or not frechet:
        return
    sizes = eval_task_sizes(eval_prompts, eval_clips_per_prompt)
    try:
        check_frechet_subsets([task for task, n in sizes.items() for _ in range(n)], sum(sizes.values()))
    except ValueError as error:
        raise ValueError(
            f"eval_prompts={eval_prompts} with eval_clips_per_prompt={eval_clips_per_prompt} renders {sizes} clips "
            "per task subset, but the Frechet distance to the original training data needs at least 2 per subset: "
            "raise eval_clips_per_prompt (2 or more) or eval_prompts (4 or more), or set eval_prompts=0"
        ) from error


def _evaluate(pipeline, prompts, reward_model, embedder, reference, script_args) -> dict:
    """
    Render each held-out prompt's clips (same initial noise every call) and score them overall and per task. The
    renders are at the pipeline's rate, the reference clips at the embedder's; CLAP resamples the renders.
    """
    pipeline.unet.eval()
    n = script_args.eval_clips_per_prompt
    audio = _render(pipeline, [p.prompt for p in prompts], script_args, n, script_args.generation_seed + 1)
    flat = [clip for group in audio for clip in group]
    texts = [p.prompt for p in prompts for _ in range(n)]
    tasks = [p.task for p in prompts for _ in range(n)]
    return evaluate_tta(
        flat,
        texts,
        sampling_rate=sampling_rate_of(pipeline),
        tasks=tasks,
        reference_audio=reference,
        reference_sampling_rate=embedder.sampling_rate,
        embedder=embedder,
        reward_model=reward_model,
    )


def main(
    script_args: RewardWeightedDiffusionScriptArguments,
    training_args: RewardWeightedDiffusionConfig,
    model_args: TTAPipelineArguments,
):
    set_seed(training_args.seed)
    # Every checkpoint is checked before anything is loaded or rendered: safetensors only, the path must exist.
    if not model_args.tiny_pipeline:
        check_pretrained_path(model_args.pipeline_name_or_path, what="pipeline_name_or_path")
    if script_args.clap_model_name_or_path:
        check_pretrained_path(script_args.clap_model_name_or_path, what="clap_model_name_or_path")
    if script_args.reward_model_name_or_path:
        check_pretrained_path(script_args.reward_model_name_or_path, what="reward_model_name_or_path")

    # Data: human feedback, the unlabelled pool, the original training data.
    world = None
    if script_args.synthetic_clips:
        world = make_world(
            script_args.synthetic_clips, seed=training_args.seed, clip_seconds=script_args.synthetic_clip_seconds
        )
        human = make_oracle_feedback(world, seed=training_args.seed).rename_column("caption", "prompt")
        unlabelled = None
    else:
        human = load_binary_feedback(script_args.feedback_file, text_column="prompt")
        unlabelled = load_unlabelled_feedback(script_args.feedback_file)
    if script_args.pretrain_dataset:
        pretrain = load_any_dataset(script_args.pretrain_dataset, split=script_args.pretrain_split)
    elif world is not None:
        pretrain = world
    else:
        pretrain = None
    if pretrain is None and training_args.beta > 0:
        raise ValueError(f"beta={training_args.beta} needs pretrain_dataset (the original training data)")
    # The Frechet distance's reference set is the original training data, when it has 2 clips or more.
    check_evaluation_settings(
        script_args.eval_prompts,
        script_args.eval_clips_per_prompt,
        frechet=pretrain is not None and len(pretrain) >= 2,
    )

    # The binary reward model (a tiny one is built on the human prompts) and the CLAP it reads.
    reward_model_path = resolve_reward_model(script_args, training_args, human["prompt"])
    reward_model = load_pretrained(CLAPRewardModel, reward_model_path).eval()
    clap_path = script_args.clap_model_name_or_path or reward_model.config.clap_checkpoint
    if not clap_path:
        raise ValueError("the reward model records no clap_checkpoint: set clap_model_name_or_path")
    check_pretrained_path(clap_path, what="the reward model's CLAP")
    cache_dir = script_args.embedding_cache_dir or os.path.join(training_args.output_dir, "embedding-cache")
    embedder = ClapEmbedder.from_pretrained(clap_path, cache_dir=cache_dir, show_progress=False)

    # Pipeline.
    if model_args.tiny_pipeline:
        clap, processor = load_clap(clap_path)
        pipeline = build_tiny_tta_pipeline(clap, processor.tokenizer, seed=training_args.seed)
        if model_args.tiny_vae_steps and pretrain is not None:
            clips, _ = decode_audio_column(pretrain, training_args.audio_column, sampling_rate_of(pipeline))
            logger.info("tiny VAE: %s", fit_vae(pipeline, clips, steps=model_args.tiny_vae_steps))
    else:
        pipeline = load_tta_pipeline(model_args.pipeline_name_or_path)

    # Prompts: the unlabelled pool of the synthetic world, and held-out evaluation prompts.
    labels = script_args.label_set or list(EVENT_KINDS)
    phrases = world_event_phrases() if script_args.label_set is None else None
    if unlabelled is None:
        built = build_tta_prompts(labels, script_args.n_prompts, seed=training_args.seed, event_phrases=phrases)
        prompts = [p.prompt for p in built]
        rendered = _render(pipeline, prompts, script_args, script_args.clips_per_prompt, script_args.generation_seed)
        unlabelled = generated_dataset(prompts, rendered, sampling_rate=sampling_rate_of(pipeline))
    half = script_args.eval_prompts // 2
    eval_prompts = [
        p
        for task, n in (("integrity", script_args.eval_prompts - half), ("temporal", half))
        for p in build_tta_prompts(labels, n, task, seed=training_args.seed + 1000, event_phrases=phrases)
    ]
    reference = None  # the Frechet distance's reference set: up to 256 clips of the original training data
    if pretrain is not None and len(pretrain) >= 2:
        reference, _ = decode_audio_column(
            pretrain.select(range(min(len(pretrain), 256))), training_args.audio_column, embedder.sampling_rate
        )

    # Rewards, computed once; human : reward-labelled = 1 : mix_ratio.
    human = add_rewards(human, reward_model, embedder)
    unlabelled = add_rewards(unlabelled, reward_model, embedder)
    mixed = mix_feedback(
        human, unlabelled, ratio=script_args.mix_ratio, seed=training_args.seed, human_reward=script_args.human_reward
    )
    logger.info(
        "training on %d pairs (%d human, mean reward %.3f)", len(mixed), len(human), sum(mixed["reward"]) / len(mixed)
    )

    before = _evaluate(pipeline, eval_prompts, reward_model, embedder, reference, script_args) if eval_prompts else {}
    trainer = RewardWeightedDiffusionTrainer(
        pipeline, training_args, train_dataset=mixed, pretrain_dataset=pretrain if training_args.beta > 0 else None
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    after = _evaluate(pipeline, eval_prompts, reward_model, embedder, reference, script_args) if eval_prompts else {}
    metrics = {
        f"{stage}_{subset}_{name}": value
        for stage, result in (("start", before), ("eval", after))
        for subset, entry in result.items()
        if subset != "skipped"
        for name, value in entry.items()
        if name != "n"
    }
    trainer.save_metrics("eval", metrics)
    trainer.save_model(training_args.output_dir)
    base = None if model_args.tiny_pipeline else model_args.pipeline_name_or_path
    dataset = script_args.feedback_file or f"synthetic world ({script_args.synthetic_clips} clips)"
    card = dict(base_model=base, dataset_name=dataset, reward_model=reward_model_path)
    write_card_and_push(trainer, training_args, metrics=metrics, **card, license=training_args.license)
    return trainer, metrics


def make_parser() -> HfprefParser:
    return HfprefParser(
        (RewardWeightedDiffusionScriptArguments, RewardWeightedDiffusionConfig, TTAPipelineArguments),
        method="reward_weighted_diffusion",
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(*make_parser().parse_args_and_config())
