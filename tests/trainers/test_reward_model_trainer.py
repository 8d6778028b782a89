import copy
import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
from hfpref.trainers import RewardModelConfig, RewardModelTrainer


DIM = 16


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def pairwise_data(n, seed=0, noise=0.5):
    """A learnable preference: the chosen caption's embedding lies near the clip's, the rejected one anywhere."""
    rng = np.random.default_rng(seed)
    audio = _unit(rng.normal(size=(n, DIM)))
    return Dataset.from_dict(
        {
            "audio_embedding": list(audio),
            "chosen_embedding": list(_unit(audio + noise * rng.normal(size=(n, DIM)))),
            "rejected_embedding": list(_unit(rng.normal(size=(n, DIM)))),
            "category": ["near" if i % 2 else "far" for i in range(n)],
        }
    )


def pointwise_data(n, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    audio = _unit(rng.normal(size=(n, DIM)))
    label = rng.integers(0, 2, size=n)
    text = np.where(
        label[:, None] == 1, _unit(audio + noise * rng.normal(size=(n, DIM))), _unit(rng.normal(size=(n, DIM)))
    )
    return Dataset.from_dict({"audio_embedding": list(audio), "text_embedding": list(text), "label": label.tolist()})


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return CLAPRewardModel(CLAPRewardConfig(embedding_dim=DIM, hidden_sizes=[64, 16], dropout=dropout))


def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        learning_rate=1e-2,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=5,
    )
    return RewardModelConfig(**{**defaults, **kw})


def test_training_logs_finite_loss_and_updates_every_parameter(tmp_path):
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = RewardModelTrainer(model, _args(tmp_path, max_steps=5), train_dataset=pairwise_data(160))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses and all(np.isfinite(losses))
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"


def test_bradley_terry_learns_held_out_preferences(tmp_path):
    # 200 held-out pairs: chance is 0.5 with a binomial std of 0.035, so 0.75 is more than 7 std above chance.
    trainer = RewardModelTrainer(
        _model(),
        _args(tmp_path, num_train_epochs=20),
        train_dataset=pairwise_data(400, seed=0),
        eval_dataset=pairwise_data(200, seed=1),
    )
    before = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] >= 0.75 > before + 0.1
    assert metrics["eval_reward_chosen"] > metrics["eval_reward_rejected"]
    assert {"eval_accuracy_near", "eval_accuracy_far"} <= set(metrics)
    assert (tmp_path / "eval_reward_histogram.png").stat().st_size > 0
    assert any("eval_accuracy" in e for e in trainer.state.log_history)


def test_binary_feedback_learns(tmp_path):
    # Same chance argument as above: 200 held-out labels, balanced, chance 0.5; 0.75 is > 7 std above it.
    trainer = RewardModelTrainer(
        _model(dropout=0.1),
        _args(tmp_path, loss_type="bce", l2_coef=0.0, num_train_epochs=10),
        train_dataset=pointwise_data(1200, seed=0),
        eval_dataset=pointwise_data(200, seed=1),
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] >= 0.75
    assert metrics["eval_reward_positive"] > metrics["eval_reward_negative"]
    assert np.isfinite(metrics["eval_bce"])


def test_a_tie_counts_as_wrong(tmp_path):
    data = pairwise_data(8)
    data = data.remove_columns("rejected_embedding").add_column("rejected_embedding", data["chosen_embedding"])
    trainer = RewardModelTrainer(_model(), _args(tmp_path), eval_dataset=data)
    assert trainer.evaluate()["eval_accuracy"] == 0.0


def test_resume_from_checkpoint_gives_the_same_final_metrics(tmp_path):
    train, test = pairwise_data(128, seed=0), pairwise_data(64, seed=1)
    kw = dict(num_train_epochs=3, save_strategy="steps", save_steps=6, logging_steps=100)

    full = RewardModelTrainer(
        _model(dropout=0.1), _args(tmp_path / "full", **kw), train_dataset=train, eval_dataset=test
    )
    full.train()
    reference = full.evaluate()

    interrupted_args = _args(tmp_path / "resumed", **kw)
    first = RewardModelTrainer(_model(dropout=0.1), interrupted_args, train_dataset=train, eval_dataset=test)
    first.train()  # writes checkpoints every 6 steps; resume from the one mid-way, as after a crash
    checkpoint = tmp_path / "resumed" / "checkpoint-6"
    assert (checkpoint / "model.safetensors").is_file()
    resumed = RewardModelTrainer(
        _model(seed=123, dropout=0.1), interrupted_args, train_dataset=train, eval_dataset=test
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    metrics = resumed.evaluate()
    for key in ["eval_loss", "eval_accuracy", "eval_reward_chosen", "eval_reward_rejected"]:
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.select([]), "empty"),
        (lambda d: d.remove_columns("chosen_embedding"), r"lacks columns \['chosen_embedding'\]"),
        (
            lambda d: d.remove_columns("audio_embedding").add_column("audio_embedding", [[0.0] * 8] * len(d)),
            "width 8",
        ),
        (
            lambda d: d.remove_columns("audio_embedding").add_column(
                "audio_embedding", [[float("nan")] * DIM] + [[0.0] * DIM] * (len(d) - 1)
            ),
            r"NaN or inf values in rows \[0\]",
        ),
    ],
)
def test_bad_pairwise_input_is_refused_with_a_clear_error(tmp_path, mutate, message):
    with pytest.raises(ValueError, match=message):
        RewardModelTrainer(_model(), _args(tmp_path), train_dataset=mutate(pairwise_data(4)))


def test_labels_outside_zero_one_are_refused(tmp_path):
    data = pointwise_data(4)
    data = data.remove_columns("label").add_column("label", [0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"column 'label' row 2 is 2; labels must be 0 or 1"):
        RewardModelTrainer(_model(), _args(tmp_path, loss_type="bce"), train_dataset=data)


def test_config_validation_and_presets(tmp_path):
    with pytest.raises(ValueError, match=r"loss_type='bt2' is not one of \['bt', 'bce', 'mse'\]"):
        RewardModelConfig(output_dir=str(tmp_path), loss_type="bt2")
    pairwise = RewardModelConfig.from_preset("paper_pairwise", output_dir=str(tmp_path))
    assert (pairwise.num_train_epochs, pairwise.per_device_train_batch_size, pairwise.loss_type) == (70, 64, "bt")
    binary = RewardModelConfig.from_preset("paper_binary", output_dir=str(tmp_path))
    assert (binary.num_train_epochs, binary.per_device_train_batch_size, binary.learning_rate) == (50, 64, 0.01)
    assert binary.loss_type == "bce" and binary.weight_decay == 0.0
    with pytest.raises(ValueError, match="preset='fast'"):
        RewardModelConfig.from_preset("fast", output_dir=str(tmp_path))


def test_model_card_is_written(tmp_path):
    trainer = RewardModelTrainer(_model(), _args(tmp_path, max_steps=2), train_dataset=pairwise_data(64))
    trainer.train()
    trainer.create_model_card(dataset_name="user/prefs", metrics={"eval_accuracy": 0.8})
    text = (tmp_path / "README.md").read_text()
    assert "hfpref" in text and "user/prefs" in text


def test_push_to_hub_uploads_the_reward_card(tmp_path, monkeypatch):
    import transformers.trainer as trainer_module

    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["create_repo"] = repo_id
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls["upload"] = (repo_id, folder_path)
            calls["readme"] = (tmp_path / "README.md").read_text()

    monkeypatch.setattr(trainer_module, "hf_api", lambda: FakeApi())
    args = _args(tmp_path, max_steps=2, hub_model_id="user/clap-reward")
    trainer = RewardModelTrainer(_model(), args, train_dataset=pairwise_data(64), eval_dataset=pairwise_data(32))
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub(dataset_name="user/prefs")
    assert calls["create_repo"] == "user/clap-reward" and calls["upload"] == ("user/clap-reward", str(tmp_path))
    assert "user/prefs" in calls["readme"] and "CLAPRewardModel" in calls["readme"]
    assert (tmp_path / "model.safetensors").is_file()


def test_save_model_refuses_a_broken_model(tmp_path):
    from hfpref.utils.checks import NonFiniteModelError

    trainer = RewardModelTrainer(_model(), _args(tmp_path, max_steps=2), train_dataset=pairwise_data(64))
    trainer.train()
    trainer.save_model(str(tmp_path / "good"))
    assert (tmp_path / "good" / "model.safetensors").is_file()
    with torch.no_grad():
        trainer.model.mlp[0].bias[3] = float("nan")
    with pytest.raises(NonFiniteModelError, match=r"mlp.0.bias"):
        trainer.save_model(str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_batches_are_the_rows_and_evaluation_prepares_a_dataset_once(tmp_path):
    from hfpref.trainers.reward_model.reward_model_trainer import EmbeddingTable

    data = pairwise_data(10)
    trainer = RewardModelTrainer(_model(), _args(tmp_path, per_device_eval_batch_size=4), train_dataset=data)
    table = trainer.train_dataset
    assert isinstance(table, EmbeddingTable)
    batch = table.__getitems__([3, 7])
    for column in ["audio_embedding", "chosen_embedding", "rejected_embedding"]:
        np.testing.assert_array_equal(batch[column].numpy(), np.asarray(data[[3, 7]][column], dtype=np.float32))
    assert batch["row_index"].tolist() == [3, 7]
    loader_rows = torch.cat([b["row_index"] for b in trainer.get_train_dataloader()])
    assert sorted(loader_rows.tolist()) == list(range(10))  # every row once per epoch, shuffled

    held_out = pairwise_data(6, seed=1)
    first = trainer.evaluate(eval_dataset=held_out)
    assert len(trainer._prepared) == 2 and trainer._prepared[held_out._fingerprint] is trainer._metric_dataset
    assert trainer.evaluate(eval_dataset=held_out)["eval_accuracy"] == first["eval_accuracy"]
    assert len(trainer._prepared) == 2
    assert set(first) >= {"eval_accuracy_near", "eval_accuracy_far"}


def test_variable_length_feature_columns_are_read_and_ragged_rows_named(tmp_path):
    from datasets import Features, Value
    from datasets import List as ListFeature

    data = pairwise_data(6)
    ragged = data.cast(Features({**data.features, "audio_embedding": ListFeature(Value("float64"))}))
    trainer = RewardModelTrainer(_model(), _args(tmp_path), train_dataset=ragged)
    np.testing.assert_allclose(
        trainer.train_dataset.tensors["audio_embedding"].numpy(), np.asarray(data["audio_embedding"]), rtol=1e-6
    )
    broken = ragged.map(
        lambda row, i: {"audio_embedding": row["audio_embedding"][: 8 if i == 4 else DIM]}, with_indices=True
    )
    with pytest.raises(
        ValueError, match=r"column 'audio_embedding' is not a \(rows, width\) array.*row 4 has 8 values, row 0 has 16"
    ):
        RewardModelTrainer(_model(), _args(tmp_path), train_dataset=broken)


def test_overhead_benchmark_runs_both_sides(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "reward_trainer_overhead.py"
    command = [sys.executable, str(bench), "--pairs", "128", "--eval-pairs", "32", "--dim", "16"]
    result = subprocess.run(
        [*command, "--epochs", "2", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert sum(" bare: " in line for line in lines) == 2 and sum("trainer: " in line for line in lines) >= 2
    assert lines[-1].startswith("RATIO reward_trainer_overhead=") and float(lines[-1].split("=")[1]) > 0


# The trainer's loss on hand-built batches, through `compute_loss`: a reward model with no hidden layer is one linear
# unit, r(a, t) = sigmoid(0.5 a + 2 t - 0.5) on 1-d embeddings, so every reward, loss and penalty is computed by hand.
W_AUDIO, W_TEXT, BIAS = 0.5, 2.0, -0.5


def _linear_model():
    model = CLAPRewardModel(CLAPRewardConfig(embedding_dim=1, hidden_sizes=[], dropout=0.0, reward_clamp=None))
    with torch.no_grad():
        model.mlp[0].weight.copy_(torch.tensor([[W_AUDIO, W_TEXT]]))
        model.mlp[0].bias.fill_(BIAS)
    return model


def _reward_by_hand(a, t):
    return 1 / (1 + math.exp(-(W_AUDIO * a + W_TEXT * t + BIAS)))


# Rows: (audio, chosen text, rejected text). The second row ranks its rejected caption higher, so the loss knows which
# side is which; the rewards are sigmoid(2) vs 1/2, sigmoid(0.5) vs sigmoid(1.5), 1/2 vs sigmoid(-1.5).
AUDIO, CHOSEN, REJECTED = [1.0, 0.0, 2.0], [1.0, 0.5, -0.25], [0.0, 1.0, -1.0]
MARGIN = [0.5, -1.0, 2.0]


def _pairwise_batch(margin=None):
    batch = {
        name: torch.tensor(values).unsqueeze(-1)  # (batch, 1) embeddings
        for name, values in [
            ("audio_embedding", AUDIO),
            ("chosen_embedding", CHOSEN),
            ("rejected_embedding", REJECTED),
        ]
    }
    if margin is not None:
        batch["margin"] = torch.tensor(margin)
    return batch


def _bt_by_hand(scale, margin=(0.0, 0.0, 0.0)):
    """mean over rows of -log sigmoid(s (r_w - r_l) - m) = log(1 + exp(-(s (r_w - r_l) - m)))."""
    terms = [
        math.log1p(math.exp(-(scale * (_reward_by_hand(a, t_w) - _reward_by_hand(a, t_l)) - m)))
        for a, t_w, t_l, m in zip(AUDIO, CHOSEN, REJECTED, margin)
    ]
    return sum(terms) / len(terms)


def _trainer_loss(tmp_path, batch, **kw):
    trainer = RewardModelTrainer(_linear_model(), _args(tmp_path, **kw))
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    return trainer, loss, outputs


def test_compute_loss_is_the_bradley_terry_loss_with_the_configured_scale(tmp_path):
    _, loss, outputs = _trainer_loss(tmp_path, _pairwise_batch(), bt_scale=3.0, l2_coef=0.0)
    by_hand = [[_reward_by_hand(a, t_w), _reward_by_hand(a, t_l)] for a, t_w, t_l in zip(AUDIO, CHOSEN, REJECTED)]
    np.testing.assert_allclose(outputs["rewards"].detach().numpy(), by_hand, rtol=1e-6)  # (batch, 2): chosen, rejected
    assert loss.item() == pytest.approx(_bt_by_hand(3.0), rel=1e-6)
    # The scale matters on this batch: s = 10 (the default) and s = 3 give clearly different losses.
    assert abs(_bt_by_hand(10.0) - _bt_by_hand(3.0)) > 0.1
    _, default_scale, _ = _trainer_loss(tmp_path, _pairwise_batch(), l2_coef=0.0)
    assert default_scale.item() == pytest.approx(_bt_by_hand(10.0), rel=1e-6)


def test_compute_loss_subtracts_the_margin_only_with_use_margin(tmp_path):
    _, loss, _ = _trainer_loss(tmp_path, _pairwise_batch(MARGIN), bt_scale=3.0, l2_coef=0.0, use_margin=True)
    assert loss.item() == pytest.approx(_bt_by_hand(3.0, MARGIN), rel=1e-6)
    assert abs(_bt_by_hand(3.0, MARGIN) - _bt_by_hand(3.0)) > 0.1
    # Without use_margin a margin column in the batch is ignored.
    _, loss, _ = _trainer_loss(tmp_path, _pairwise_batch(MARGIN), bt_scale=3.0, l2_coef=0.0)
    assert loss.item() == pytest.approx(_bt_by_hand(3.0), rel=1e-6)


@pytest.mark.parametrize("reduction, count", [("sum", 1), ("mean", 3)])
def test_compute_loss_adds_the_l2_penalty_with_its_coefficient_and_reduction(tmp_path, reduction, count):
    # ||theta||^2 = 0.5^2 + 2^2 + 0.5^2 = 4.5 over |theta| = 3 weights; "mean" divides by 3.
    squared_norm = W_AUDIO**2 + W_TEXT**2 + BIAS**2
    plain_trainer, plain, _ = _trainer_loss(tmp_path, _pairwise_batch(), bt_scale=3.0, l2_coef=0.0)
    trainer, loss, _ = _trainer_loss(tmp_path, _pairwise_batch(), bt_scale=3.0, l2_coef=0.25, l2_reduction=reduction)
    assert loss.item() == pytest.approx(_bt_by_hand(3.0) + 0.25 * squared_norm / count, rel=1e-6)
    # Its gradient, 0.25 * 2 theta / count, comes on top of the Bradley-Terry gradient (two models, equal weights).
    plain.backward()
    loss.backward()
    for param, plain_param in zip(trainer.model.parameters(), plain_trainer.model.parameters()):
        torch.testing.assert_close(param.grad, plain_param.grad + 0.25 * 2 * param.detach() / count)


@pytest.mark.parametrize("loss_type", ["bce", "mse"])
def test_compute_loss_on_binary_feedback_uses_the_configured_loss_type(tmp_path, loss_type):
    audio, text, label = [1.0, 0.0, 2.0], [1.0, 0.5, -1.0], [1, 0, 0]
    batch = {
        "audio_embedding": torch.tensor(audio).unsqueeze(-1),
        "text_embedding": torch.tensor(text).unsqueeze(-1),
        "label": torch.tensor(label, dtype=torch.float32),
    }
    _, loss, outputs = _trainer_loss(tmp_path, batch, loss_type=loss_type, l2_coef=0.0)
    rewards = [_reward_by_hand(a, t) for a, t in zip(audio, text)]  # sigmoid(2), sigmoid(0.5), sigmoid(-1.5)
    np.testing.assert_allclose(outputs["rewards"].detach().numpy(), rewards, rtol=1e-6)
    bce = -sum(math.log(r) if y else math.log(1 - r) for r, y in zip(rewards, label)) / 3
    mse = sum((r - y) ** 2 for r, y in zip(rewards, label)) / 3
    assert abs(bce - mse) > 0.1
    assert loss.item() == pytest.approx(bce if loss_type == "bce" else mse, rel=1e-6)


def _ensemble(members: int, seed=0, hidden_sizes=(16,), **config):
    torch.manual_seed(seed)
    return CLAPRewardModel(
        CLAPRewardConfig(embedding_dim=DIM, hidden_sizes=hidden_sizes, dropout=0.0, num_members=members, **config)
    )


def test_ensemble_reward_is_mean_minus_lambda_std_and_saves_as_one_artifact(tmp_path):
    from transformers import AutoModel

    model = _ensemble(3, ensemble_lambda=0.5).eval()
    data = pairwise_data(6)
    audio, text = torch.tensor(data["audio_embedding"]), torch.tensor(data["chosen_embedding"])
    out = model(audio_embedding=audio, text_embedding=text)
    alone = torch.stack([torch.sigmoid(head(torch.cat([audio, text], -1))).squeeze(-1) for head in model.heads], -1)
    torch.testing.assert_close(out.member_rewards, alone)
    mean, std = alone.mean(-1), ((alone - alone.mean(-1, keepdim=True)) ** 2).mean(-1).sqrt()
    torch.testing.assert_close(out.rewards, mean - 0.5 * std)
    assert (out.member_rewards.std(-1) > 0).all()  # the members were initialised apart
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CLAPRewardModel and loaded.config.num_members == 3
    torch.testing.assert_close(loaded(audio_embedding=audio, text_embedding=text).rewards, out.rewards)
    loaded.config.ensemble_lambda = 0.0  # a RL run may choose the plain mean
    torch.testing.assert_close(loaded(audio_embedding=audio, text_embedding=text).rewards, mean)
    with pytest.raises(ValueError, match="num_members=0"):
        CLAPRewardConfig(num_members=0)


def test_each_member_trains_as_it_would_alone_on_its_bootstrap_resample(tmp_path):
    """
    Two members with bootstrap weights w[:, k]: each ends exactly where a single reward model with the member's
    initial weights ends when trained on the same batches with its loss weighted by w[:, k] (plain SGD, L2 included),
    the reference loop written here. Without the bootstrap both members see the same rows.
    """
    data = pairwise_data(48, seed=2)
    ensemble = _ensemble(2, seed=1)
    initial = [copy.deepcopy(head) for head in ensemble.heads]
    args = _args(tmp_path, per_device_train_batch_size=16, optim="sgd", learning_rate=0.5, weight_decay=0.0,
                 l2_coef=0.1, num_train_epochs=1, seed=3, max_grad_norm=0.0, lr_scheduler_type="constant")  # fmt: skip
    trainer = RewardModelTrainer(ensemble, args, train_dataset=data)
    weights = trainer._bootstrap.clone()
    assert weights.shape == (48, 2) and not torch.equal(weights[:, 0], weights[:, 1])
    batches, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, *rest, **kwargs):  # the batches in the order the trainer sees them
        batches.append({k: v.detach().clone() for k, v in inputs.items()})
        return compute_loss(model, inputs, *rest, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    assert len(batches) == 3
    for k, head in enumerate(initial):
        optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
        for batch in batches:
            rows = batch["row_index"]
            pair = torch.cat([batch["audio_embedding"]] * 2)
            text = torch.cat([batch["chosen_embedding"], batch["rejected_embedding"]])
            rewards = torch.sigmoid(head(torch.cat([pair, text], -1))).squeeze(-1).clamp(0.01, 0.99)
            chosen, rejected = rewards.chunk(2)
            losses = -torch.nn.functional.logsigmoid(10.0 * (chosen - rejected))
            w = weights[rows, k]
            params = list(head.parameters())
            l2 = sum((p**2).sum() for p in params) / sum(p.numel() for p in params)
            loss = (w * losses).sum() / w.sum().clamp(min=1.0) + 0.1 * l2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for trained, alone in zip(trainer.model.heads[k].parameters(), head.parameters()):
            torch.testing.assert_close(trained, alone, rtol=1e-5, atol=1e-6)
    plain = RewardModelTrainer(_ensemble(2), _args(tmp_path, ensemble_bootstrap=False), train_dataset=data)
    assert plain._bootstrap is None


def test_ensemble_evaluation_reports_each_member_and_the_ensemble(tmp_path):
    trainer = RewardModelTrainer(
        _ensemble(3, hidden_sizes=(64, 16)),
        _args(tmp_path, num_train_epochs=20, reward_histogram=False),
        train_dataset=pairwise_data(400, seed=0),
        eval_dataset=pairwise_data(200, seed=1),
    )
    trainer.train()
    metrics = trainer.evaluate()
    members = [metrics[f"eval_accuracy_member_{k}"] for k in range(3)]
    assert all(m >= 0.7 for m in members) and metrics["eval_accuracy"] >= 0.7, metrics
    # The ensemble's accuracy is that of its mean reward, recomputed from the members' rewards.
    data = pairwise_data(200, seed=1)
    model = trainer.model.eval()
    with torch.no_grad():
        audio = torch.tensor(data["audio_embedding"])
        chosen = model(audio_embedding=audio, text_embedding=torch.tensor(data["chosen_embedding"])).rewards
        rejected = model(audio_embedding=audio, text_embedding=torch.tensor(data["rejected_embedding"])).rewards
    assert metrics["eval_accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    # Each member's accuracy per category (what the quickstart weighs into its human-pair accuracy), recomputed.
    with torch.no_grad():
        member_chosen = model(
            audio_embedding=audio, text_embedding=torch.tensor(data["chosen_embedding"])
        ).member_rewards
        member_rejected = model(
            audio_embedding=audio, text_embedding=torch.tensor(data["rejected_embedding"])
        ).member_rewards
    near = torch.tensor([c == "near" for c in data["category"]])
    for k in range(3):
        correct = member_chosen[:, k] > member_rejected[:, k]
        assert metrics[f"eval_accuracy_member_{k}"] == pytest.approx(correct.float().mean().item())
        assert metrics[f"eval_accuracy_near_member_{k}"] == pytest.approx(correct[near].float().mean().item())
        assert metrics[f"eval_accuracy_far_member_{k}"] == pytest.approx(correct[~near].float().mean().item())
