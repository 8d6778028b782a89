import copy
import math

import numpy as np
import pytest
import torch

from hfpref.data.synthetic.audio_world import make_world
from hfpref.encoders.clap import build_tiny_clap
from hfpref.models.tta_pipeline import build_tiny_tta_pipeline
from hfpref.trainers.reward_weighted_diffusion.reward_weighted_diffusion_config import RewardWeightedDiffusionConfig
from hfpref.trainers.reward_weighted_diffusion.reward_weighted_diffusion_trainer import (
    LATENT_COLUMNS,
    RewardWeightedDiffusionTrainer,
    encode_audio_text,
    reward_weighted_denoising_loss,
)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    pass


@pytest.fixture(scope="module")
def world():
    return make_world(12, seed=5, clip_seconds=1.0, max_events=2)


@pytest.fixture
def pipeline(world):
    clap, processor = build_tiny_clap(
        list(world["caption"]) * 4, seed=0, clip_seconds=1.0, num_mel_bins=32, spec_size=64
    )
    return build_tiny_tta_pipeline(clap, processor.tokenizer, seed=0)


def config(tmp_path, **overrides) -> RewardWeightedDiffusionConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return RewardWeightedDiffusionConfig(**{**defaults, **overrides})


def preference_data(world, rewards):
    return world.rename_column("caption", "prompt").select_columns(["audio", "prompt"]).add_column("reward", rewards)


def test_loss_matches_a_hand_computation():
    pred = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]], [[3.0, -1.0]]])
    target = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]], [[3.0, 1.0]]])
    rewards = torch.tensor([0.9, 0.2, 0.5])
    # Per-sample mean squared error: (1 + 4) / 2 = 2.5, (1 + 1) / 2 = 1, (0 + 4) / 2 = 2.
    weighted_by_hand = (0.9 * 2.5 + 0.2 * 1.0 + 0.5 * 2.0) / 3
    pre_pred, pre_target = torch.tensor([[[1.0, 1.0]], [[0.0, 2.0]]]), torch.zeros(2, 1, 2)
    pretrain_by_hand = (1.0 + 2.0) / 2  # (1 + 1) / 2 and (0 + 4) / 2
    loss, weighted, pretrain = reward_weighted_denoising_loss(pred, target, rewards, pre_pred, pre_target, beta=0.5)
    assert weighted.item() == pytest.approx(weighted_by_hand)
    assert pretrain.item() == pytest.approx(pretrain_by_hand)
    assert loss.item() == pytest.approx(weighted_by_hand + 0.5 * pretrain_by_hand)
    # Rewards of 1 and no pretrain batch: the plain denoising loss.
    plain, _, _ = reward_weighted_denoising_loss(pred, target, torch.ones(3))
    assert plain.item() == pytest.approx(torch.nn.functional.mse_loss(pred, target).item())
    with pytest.raises(ValueError, match="rewards has shape"):
        reward_weighted_denoising_loss(pred, target, torch.ones(2))
    # Another beta than the default weighs the same pretrain term accordingly; beta = 0 drops it.
    loss, _, _ = reward_weighted_denoising_loss(pred, target, rewards, pre_pred, pre_target, beta=2.0)
    assert loss.item() == pytest.approx(weighted_by_hand + 2.0 * pretrain_by_hand)
    loss, _, _ = reward_weighted_denoising_loss(pred, target, rewards, pre_pred, pre_target, beta=0.0)
    assert loss.item() == pytest.approx(weighted_by_hand)


def _first_rows(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def test_the_configured_beta_and_the_rewards_reach_the_loss(tmp_path, world, pipeline, monkeypatch):
    """
    The trainer's loss on a batch is `weighted + beta * pretrain` with the configured beta (2, not the default 0.5),
    the pretrain term is computed on an original-data batch (> 0), and the reward weights are the batch's rewards.
    """
    import hfpref.trainers.reward_weighted_diffusion.reward_weighted_diffusion_trainer as module

    calls = []
    real = module.reward_weighted_denoising_loss

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "reward_weighted_denoising_loss", spy)
    rewards = np.linspace(0.1, 0.9, len(world)).tolist()
    trainer = RewardWeightedDiffusionTrainer(
        pipeline, config(tmp_path, beta=2.0), train_dataset=preference_data(world, rewards), pretrain_dataset=world
    )
    batch = _first_rows(trainer)
    loss = trainer.compute_loss(trainer.model.eval(), batch)
    ((args, kwargs),) = calls
    prediction, target, passed_rewards, pretrain_prediction, pretrain_target = args
    assert torch.equal(passed_rewards, batch["reward"]) and torch.allclose(batch["reward"], torch.tensor(rewards[:4]))
    # Both terms by hand from what the UNet predicted: per-sample mean squared errors.
    weighted = (batch["reward"] * (prediction - target).pow(2).flatten(1).mean(1)).mean()
    pretrain = (pretrain_prediction - pretrain_target).pow(2).flatten(1).mean(1).mean()
    assert pretrain.item() > 0 and len(pretrain_prediction) == 4
    assert loss.item() == pytest.approx(weighted.item() + 2.0 * pretrain.item(), rel=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noisy_latents_and_targets_follow_the_noise_schedule(tmp_path, world, pipeline, prediction_type):
    """
    The UNet sees `x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps` with `x_0` the scaled VAE latent and `a_t` the
    cumulative alpha of its timestep, conditioned on the prompt's text embedding; the target is `eps`
    (epsilon) or `v = sqrt(a_t) eps - sqrt(1 - a_t) x_0` (v-prediction), checked by hand from the schedule.
    """
    from types import SimpleNamespace

    trainer = RewardWeightedDiffusionTrainer(
        pipeline,
        config(tmp_path, beta=0.0, sample_latents=False, prediction_type=prediction_type),
        train_dataset=preference_data(world, [1.0] * len(world)),
    )
    batch = _first_rows(trainer)
    seen = {}

    def unet(sample, timestep, encoder_hidden_states=None, class_labels=None):
        seen.update(sample=sample, timestep=timestep, class_labels=class_labels)
        return SimpleNamespace(sample=torch.zeros_like(sample))

    torch.manual_seed(0)
    _, target = trainer._denoising_prediction(unet, batch)
    x0 = batch["latent_mean"] * pipeline.vae.config.scaling_factor
    assert pipeline.vae.config.scaling_factor != 1.0  # so that a missing scaling shows
    t = seen["timestep"]
    assert ((t >= 0) & (t < trainer.noise_scheduler.config.num_train_timesteps)).all()
    a = trainer.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = (seen["sample"] - a.sqrt() * x0) / (1 - a).sqrt()
    assert 0.5 < eps.std().item() < 1.5  # standard normal noise (512 draws per clip)
    expected = eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(target, expected, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(seen["class_labels"], batch["text_embedding"])


def test_paper_preset_and_validation(tmp_path):
    args = RewardWeightedDiffusionConfig.from_preset("paper", output_dir=str(tmp_path))
    assert (args.beta, args.num_train_epochs, args.learning_rate, args.per_device_train_batch_size, args.optim) == (
        0.5,
        10,
        1e-5,
        6,
        "adamw_torch",
    )
    with pytest.raises(ValueError, match="beta=-1"):
        config(tmp_path, beta=-1)
    with pytest.raises(ValueError, match=r"prediction_type='x0' is not one of \['epsilon', 'v_prediction'\]"):
        config(tmp_path, prediction_type="x0")
    with pytest.raises(ValueError, match="preset='fast' is not one of"):
        RewardWeightedDiffusionConfig.from_preset("fast", output_dir=str(tmp_path))


def test_trainer_logs_finite_losses_and_updates_every_unet_weight(tmp_path, world, pipeline):
    rewards = np.linspace(0.1, 0.9, len(world)).tolist()
    before = {n: p.detach().clone() for n, p in pipeline.unet.named_parameters()}
    vae_before = {n: p.detach().clone() for n, p in pipeline.vae.named_parameters()}
    trainer = RewardWeightedDiffusionTrainer(
        pipeline,
        config(tmp_path, save_strategy="no"),
        train_dataset=preference_data(world, rewards),
        pretrain_dataset=world,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all(math.isfinite(entry["loss"]) for entry in logs)
    for key in ("reward_weighted_loss", "pretrain_loss", "mean_reward"):
        assert all(math.isfinite(entry[key]) for entry in logs)
    assert all(0.1 <= entry["mean_reward"] <= 0.9 for entry in logs)
    unchanged = [n for n, p in pipeline.unet.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged[:5]
    assert all(torch.equal(p, vae_before[n]) for n, p in pipeline.vae.named_parameters())
    trainer.save_model(str(tmp_path / "unet"))
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_zero_rewards_without_pretrain_loss_leave_the_unet_unchanged(tmp_path, world, pipeline):
    """r = 0 everywhere and beta = 0: the loss is identically 0, so no weight may move (plain SGD, no decay)."""
    before = {n: p.detach().clone() for n, p in pipeline.unet.named_parameters()}
    trainer = RewardWeightedDiffusionTrainer(
        pipeline,
        config(tmp_path, beta=0.0, optim="sgd", weight_decay=0.0),
        train_dataset=preference_data(world, [0.0] * len(world)),
    )
    trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in pipeline.unet.named_parameters())


def test_lora_trains_adapters_only_and_saves_them(tmp_path, world, pipeline):
    trainer = RewardWeightedDiffusionTrainer(
        pipeline,
        config(tmp_path, use_lora=True, lora_target_modules=["conv1", "conv2"], learning_rate=1e-2),
        train_dataset=preference_data(world, [1.0] * len(world)),
        pretrain_dataset=world,
    )
    before = {n: p.detach().clone() for n, p in pipeline.unet.named_parameters()}
    trainable = {n for n, p in pipeline.unet.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    trainer.train()
    changed = {n for n, p in pipeline.unet.named_parameters() if not torch.equal(p, before[n])}
    # LoRA's B starts at zero, so A gets no gradient on the first step; every B moves, nothing else does.
    assert changed and changed <= trainable and all(n in changed for n in trainable if "lora_B" in n)
    trainer.save_model(str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_bad_inputs_are_refused_with_names(tmp_path, world, pipeline):
    with pytest.raises(ValueError, match="pass pretrain_dataset"):
        RewardWeightedDiffusionTrainer(pipeline, config(tmp_path), train_dataset=preference_data(world, [1.0] * 12))
    with pytest.raises(ValueError, match="no reward column 'reward'"):
        RewardWeightedDiffusionTrainer(
            pipeline, config(tmp_path, beta=0.0), train_dataset=world.rename_column("caption", "prompt")
        )
    with pytest.raises(ValueError, match="negative rewards"):
        RewardWeightedDiffusionTrainer(
            pipeline, config(tmp_path, beta=0.0), train_dataset=preference_data(world, [-0.5] + [1.0] * 11)
        )


def test_encoding_is_computed_once_and_reused(world, pipeline):
    encoded = encode_audio_text(pipeline, world, text_column="caption")
    assert all(c in encoded.column_names for c in LATENT_COLUMNS)
    mean = np.asarray(encoded[0]["latent_mean"])
    assert mean.shape == (4, 16, 8) and (np.asarray(encoded[0]["latent_std"]) > 0).all()


def _pretrain_rows_drawn(trainer, monkeypatch, processes: int, accumulation: int, steps: int) -> list[list[int]]:
    """Each step's original-data rows as `processes` processes of `accumulation` micro-steps draw them: one list per
    (process, micro-step), process-major; each process is the trainer as it would be in that process."""
    accelerator = type(trainer.accelerator)
    monkeypatch.setattr(trainer.args, "gradient_accumulation_steps", accumulation)
    monkeypatch.setattr(accelerator, "num_processes", property(lambda self: processes))
    drawn = [[] for _ in range(steps)]
    for process in range(processes):
        monkeypatch.setattr(accelerator, "process_index", property(lambda self, p=process: p))
        view = copy.copy(trainer)  # a fresh process: no micro-batch counted yet
        for step in range(steps):
            view.state.global_step = step
            drawn[step] += [view._pretrain_rows() for _ in range(accumulation)]
    return drawn


def test_each_process_draws_its_own_share_of_the_pretraining_batch(tmp_path, world, pipeline, monkeypatch):
    """
    2 processes read disjoint original-data rows at every step, together exactly those 1 process reads when it
    accumulates the same global batch (process p's micro-step m holds the global batch's part m * 2 + p); every row
    once per epoch; and the draw is a function of seed and step (a rerun draws the same).
    """
    trainer = RewardWeightedDiffusionTrainer(
        pipeline,
        config(tmp_path, pretrain_batch_size=2, per_device_train_batch_size=2),
        train_dataset=preference_data(world, [0.5] * len(world)),
        pretrain_dataset=world,
    )
    steps = 6  # 4 rows per step: 3 steps per epoch of 12 rows, then a second epoch
    two = _pretrain_rows_drawn(trainer, monkeypatch, processes=2, accumulation=1, steps=steps)
    one = _pretrain_rows_drawn(trainer, monkeypatch, processes=1, accumulation=2, steps=steps)
    assert two == one
    two_by_two = _pretrain_rows_drawn(trainer, monkeypatch, processes=2, accumulation=2, steps=3)
    one_by_four = _pretrain_rows_drawn(trainer, monkeypatch, processes=1, accumulation=4, steps=3)
    # process-major order: process 0's micro-steps hold parts 0 and 2, process 1's parts 1 and 3
    assert two_by_two == [[parts[0], parts[2], parts[1], parts[3]] for parts in one_by_four]
    for step in two:
        rows = [row for part in step for row in part]
        assert len(rows) == 4 and len(set(rows)) == 4, step
    for epoch in (two[:3], two[3:]):
        assert sorted(row for step in epoch for part in step for row in part) == list(range(len(world)))
    assert two[:3] != two[3:]  # a new order every epoch
    assert _pretrain_rows_drawn(trainer, monkeypatch, processes=2, accumulation=1, steps=steps) == two


def _learning_check(tmp_path, size: dict) -> dict:
    """
    The synthetic world end to end: fit a tiny CLAP, train the binary reward model on oracle feedback, build a tiny
    AudioLDM pipeline on the CLAP's text tower, fit its VAE and pretrain its UNet from scratch on world clips, render
    clips for built integrity prompts, score them with the reward model, mix them 1:1 with oracle-labelled world
    pairs, fine-tune reward-weighted (beta 0.5) and, as a control, with uniform weights; score held-out prompts.

    Returns per-held-out-prompt mean rewards (`start`, `reward_weighted`, `uniform`, same initial noise for all three,
    so they pair) and the wall time of each stage.
    """
    import copy
    import time

    from hfpref.data.audio import decode_audio_column
    from hfpref.data.synthetic.audio_world import EVENT_KINDS
    from hfpref.data.tta_feedback import add_rewards, generated_dataset, mix_feedback
    from hfpref.encoders.clap import ClapEmbedder
    from hfpref.encoders.dataset import add_embeddings
    from hfpref.judges.oracle import make_oracle_feedback
    from hfpref.metrics.tta import clap_score
    from hfpref.models.tta_pipeline import fit_vae, generate_audio
    from hfpref.prompts.tta_prompts import build_tta_prompts, world_event_phrases
    from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
    from hfpref.trainers import ClapContrastiveConfig, ClapContrastiveTrainer, RewardModelConfig, RewardModelTrainer

    seed = size.get("seed", 0)
    clip_s = size["clip_seconds"]
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 1)
        clock[0] = now

    common = dict(save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False, seed=seed)
    world = make_world(size["n_clips"], seed=seed, clip_seconds=clip_s, max_events=2)
    if size.get("audioldm_levels", True):
        world = at_audioldm_levels(world)
    texts = [c for refs in world["references"] for c in refs]
    clap, processor = build_tiny_clap(
        texts, seed=seed, clip_seconds=clip_s, num_mel_bins=32, spec_size=64, text_dropout=0.0
    )
    clap_args = ClapContrastiveConfig(
        output_dir=str(tmp_path / "clap"), max_steps=size["clap_steps"], per_device_train_batch_size=64,
        learning_rate=3e-3, warmup_steps=10, cache_audio_features=True, **common,
    )  # fmt: skip
    ClapContrastiveTrainer(model=clap, args=clap_args, train_dataset=world, processing_class=processor).train()
    embedder = ClapEmbedder(clap.eval(), processor, show_progress=False, batch_size=64)
    lap("clap")

    feedback = make_oracle_feedback(world, seed=seed)
    reward_model = CLAPRewardModel(
        CLAPRewardConfig(embedding_dim=embedder.embedding_dim, hidden_sizes=[128, 64], dropout=0.0)
    )
    reward_args = RewardModelConfig(
        output_dir=str(tmp_path / "rm"), loss_type="bce", l2_coef=0.0, num_train_epochs=size["rm_epochs"],
        learning_rate=3e-3, per_device_train_batch_size=64, reward_histogram=False, **common,
    )  # fmt: skip
    embedded = add_embeddings(feedback, embedder, text_columns={"caption": "text_embedding"})
    RewardModelTrainer(reward_model, reward_args, train_dataset=embedded).train()
    reward_model.eval()
    lap("reward_model")

    pipeline = build_tiny_tta_pipeline(
        clap, processor.tokenizer, seed=seed, clip_seconds=clip_s, n_mels=size.get("n_mels", 32),
        hop_length=size.get("hop_length", 256), vae_channels=size.get("vae_channels", (8, 16, 32)),
        unet_channels=size.get("unet_channels", (32, 64)),
    )  # fmt: skip
    clips, _ = decode_audio_column(world, "audio", 16000)
    vae_fit = fit_vae(pipeline, clips, steps=size["vae_steps"], batch_size=size.get("vae_batch", 32), seed=seed)
    lap("vae")
    pretrain = encode_audio_text(pipeline, world.add_column("reward", [1.0] * len(world)), text_column="caption")
    pretrain_args = RewardWeightedDiffusionConfig(
        output_dir=str(tmp_path / "pre"), beta=0.0, max_steps=size["pretrain_steps"], learning_rate=2e-3,
        per_device_train_batch_size=32, warmup_steps=20, lr_scheduler_type="cosine", **common,
    )  # fmt: skip
    RewardWeightedDiffusionTrainer(pipeline, pretrain_args, train_dataset=pretrain).train()
    lap("pretrain")

    phrases = world_event_phrases()
    n_prompts = size["n_prompts"]
    train_prompts = [
        p.prompt for p in build_tta_prompts(EVENT_KINDS, n_prompts, seed=10 + seed, event_phrases=phrases)
    ]
    held_out = build_tta_prompts(
        EVENT_KINDS, size.get("eval_prompts", n_prompts), seed=20 + seed, event_phrases=phrases
    )
    held_out = [p.prompt for p in held_out]
    held_out = [p for p in held_out if p not in train_prompts]
    per_prompt = size.get("eval_clips_per_prompt", 2)
    steps = size.get("inference_steps", 10)

    def held_out_scores(name: str) -> None:
        """Per held-out prompt: the reward model's mean score and the CLAP score (audio-prompt cosine)."""
        pipeline.unet.eval()
        audio = generate_audio(
            pipeline, held_out, num_waveforms_per_prompt=per_prompt, num_inference_steps=steps,
            audio_length_in_s=clip_s, seed=123,
        )  # fmt: skip
        flat = [clip for group in audio for clip in group]
        texts = [p for p in held_out for _ in range(per_prompt)]
        scores = reward_model.score(flat, texts, embedder, sampling_rate=16000)
        results[name] = np.asarray(scores).reshape(len(held_out), per_prompt).mean(1)
        results[f"{name}_clap"] = (
            np.asarray(clap_score(flat, texts, embedder, sampling_rate=16000))
            .reshape(len(held_out), per_prompt)
            .mean(1)
        )

    results: dict = {}
    held_out_scores("start")
    lap("eval_start")
    rendered = generate_audio(
        pipeline, train_prompts, num_waveforms_per_prompt=size.get("clips_per_prompt", 4), num_inference_steps=steps,
        audio_length_in_s=clip_s, seed=7,
    )  # fmt: skip
    generated = add_rewards(generated_dataset(train_prompts, rendered, sampling_rate=16000), reward_model, embedder)
    human = add_rewards(feedback.rename_column("caption", "prompt"), reward_model, embedder)
    mixed = encode_audio_text(pipeline, mix_feedback(human, generated, ratio=1.0, seed=seed))
    mixed = mixed.add_column("uniform", [1.0] * len(mixed))
    lap("feedback")
    start_unet = copy.deepcopy(pipeline.unet.state_dict())
    for name, column in [("reward_weighted", "reward"), ("uniform", "uniform")][: 2 if size.get("control") else 1]:
        pipeline.unet.load_state_dict(start_unet)
        args = RewardWeightedDiffusionConfig(
            output_dir=str(tmp_path / name), beta=0.5, reward_column=column, max_steps=size["finetune_steps"],
            learning_rate=size.get("finetune_lr", 1e-3), per_device_train_batch_size=32,
            pretrain_batch_size=size.get("pretrain_batch_size"), **common,
        )  # fmt: skip
        RewardWeightedDiffusionTrainer(pipeline, args, train_dataset=mixed, pretrain_dataset=pretrain).train()
        held_out_scores(name)
        lap(name)
    results["timings"] = timings
    results["vae"] = vae_fit
    results["n_held_out"] = len(held_out)
    results["generated_reward_mean"] = float(np.mean(generated["reward"]))
    return results


def at_audioldm_levels(world):
    """
    The world's clips as AudioLDM's data pipeline leaves them (mean removed, peak 0.5: `normalize_wav`), so that the
    CLAP, the reward model and the pipeline all see clips at the level the pipeline generates, as a real AudioLDM,
    its outputs and a reward model trained on them do.
    """
    from hfpref.data.audio import audio_value, decode_audio
    from hfpref.models.tta_pipeline import normalize_wav

    def normalized(row):
        waveform = normalize_wav(torch.as_tensor(decode_audio(row["audio"], 16000))).numpy()
        return {"audio": audio_value(waveform, 16000, path=row["audio"]["path"])}

    return world.map(normalized, features=world.features, desc="AudioLDM levels")


def _paired_gain(after: np.ndarray, before: np.ndarray) -> tuple[float, float]:
    """Mean per-prompt reward gain and its standard error (paired: both renderings start from the same noise)."""
    gain = after - before
    return float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(len(gain)))


# The check's scale (world 256 x 1 s, CLAP 150 steps, VAE 150, UNet (32, 64) pretrained 400 steps, fine-tuned 400
# steps at lr 2e-3 with beta 0.5, 48 held-out integrity prompts x 2 clips). Smaller worlds, shorter pretraining or
# fine-tuning (192 clips, 200-300 steps) did not reach a significant gain (paired t 0.2-2.0), so the default suite
# runs this scale, control included.
FULL = dict(
    n_clips=256, clip_seconds=1.0, clap_steps=150, rm_epochs=40, vae_steps=150, vae_batch=16, pretrain_steps=400,
    n_prompts=48, finetune_steps=400, finetune_lr=2e-3, unet_channels=(32, 64), control=True,
)  # fmt: skip


def _assert_reward_weighting_learns(results: dict) -> None:
    """
    Margins, measured (world at AudioLDM levels; world, CLAP, reward model, pipeline and prompts re-drawn per seed;
    48 held-out prompts x 2 clips, same initial noise for all three renderings, so the differences pair):

    | seed | reward: start -> reward-weighted (t) | uniform (RW over it, t) | CLAP score: start -> RW (t) | uniform (t) |
    |---|---|---|---|---|
    | 0 | 0.379 -> 0.464 (+0.084, 3.6) | 0.298 (6.7) | 0.579 -> 0.642 (+0.064, 4.4) | 0.495 (6.8) |
    | 1 | 0.291 -> 0.381 (+0.090, 2.8) | 0.254 (5.6) | 0.620 -> 0.685 (+0.066, 2.7) | 0.552 (6.5) |
    | 2 | 0.311 -> 0.394 (+0.083, 2.6) | 0.276 (5.5) | 0.587 -> 0.676 (+0.089, 4.2) | 0.541 (6.4) |

    A gain is a mean of per-prompt paired differences, so its noise over prompts and noise draws is the paired
    standard error: 2 SE is a one-sided 2.5% test, which every seed passes (3 SE would fail seeds 1 and 2; the
    seed-to-seed spread exceeds one SE). The 0.04 floor is half the smallest measured reward gain. The controls: the
    same pairs and steps with every weight 1 (uniform weights train the wrong-caption pairs as hard as the right
    ones) must do worse by 3 SE, on the reward and on the CLAP score, which no part of the training optimises
    (t >= 5.5 measured on every seed).
    """
    gain, se = _paired_gain(results["reward_weighted"], results["start"])
    edge, edge_se = _paired_gain(results["reward_weighted"], results["uniform"])
    clap_gain, clap_se = _paired_gain(results["reward_weighted_clap"], results["start_clap"])
    clap_edge, clap_edge_se = _paired_gain(results["reward_weighted_clap"], results["uniform_clap"])
    means = {name: round(float(results[name].mean()), 3) for name in results if isinstance(results[name], np.ndarray)}
    print(f"held-out means {means}; stage seconds {results['timings']}")
    assert gain > max(2 * se, 0.04), results
    assert edge > 3 * edge_se, results
    assert clap_gain > 2 * clap_se, results
    assert clap_edge > 3 * clap_edge_se, results


def test_reward_weighted_fine_tuning_beats_uniform_weights_on_held_out_prompts(tmp_path):
    """The full chain (seed 0) with its uniform-weights control, scored by the reward model and by the CLAP score."""
    _assert_reward_weighting_learns(_learning_check(tmp_path, FULL))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_reward_weighted_fine_tuning_beats_uniform_weights_on_other_seeds(tmp_path, seed):
    _assert_reward_weighting_learns(_learning_check(tmp_path, {**FULL, "seed": seed}))
