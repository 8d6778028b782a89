import pytest
import torch
from transformers import AutoConfig, AutoModel

from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel


def _model(dim=16, **kw):
    torch.manual_seed(0)
    return CLAPRewardModel(CLAPRewardConfig(embedding_dim=dim, hidden_sizes=[32, 8], **kw))


def test_paper_architecture_by_default():
    model = CLAPRewardModel(CLAPRewardConfig())
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 128), (128, 1)]


def test_rewards_in_unit_interval_and_clamped_in_training():
    model = _model()
    audio, text = torch.randn(64, 16) * 50, torch.randn(64, 16) * 50  # large inputs saturate the sigmoid
    model.eval()
    rewards = model(audio_embedding=audio, text_embedding=text).rewards
    assert ((rewards >= 0) & (rewards <= 1)).all()
    model.train()
    rewards = model(audio_embedding=audio, text_embedding=text).rewards
    assert rewards.min() >= 0.01 and rewards.max() <= 0.99


def test_refuses_other_width_and_non_finite():
    model = _model(clap_checkpoint="laion/clap-htsat-unfused")
    with pytest.raises(ValueError, match=r"\(batch, 16\) embeddings from laion/clap-htsat-unfused"):
        model(audio_embedding=torch.zeros(2, 32), text_embedding=torch.zeros(2, 32))
    bad = torch.zeros(3, 16)
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf values in rows \[1\]"):
        model(audio_embedding=bad, text_embedding=torch.zeros(3, 16))


def test_save_load_round_trip_is_safetensors_and_identical(tmp_path):
    model = _model(clap_checkpoint="laion/clap-htsat-unfused", clap_fingerprint="abc123")
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    audio, text = torch.randn(5, 16), torch.randn(5, 16)
    loaded = AutoModel.from_pretrained(tmp_path)  # registered with the Auto classes
    assert isinstance(loaded, CLAPRewardModel)
    assert AutoConfig.from_pretrained(tmp_path).clap_fingerprint == "abc123"
    loaded.eval()
    torch.testing.assert_close(
        loaded(audio_embedding=audio, text_embedding=text).rewards,
        model(audio_embedding=audio, text_embedding=text).rewards,
        rtol=0,
        atol=0,
    )


def test_config_validation():
    with pytest.raises(ValueError, match="reward_clamp"):
        CLAPRewardConfig(reward_clamp=(0.9, 0.1))
    with pytest.raises(ValueError, match="dropout"):
        CLAPRewardConfig(dropout=1.5)


def test_pickled_checkpoints_are_never_loaded(tmp_path):
    model = _model()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError):
        CLAPRewardModel.from_pretrained(tmp_path)
    with pytest.raises(OSError):
        AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors checkpoints only"):
        CLAPRewardModel.from_pretrained(tmp_path, use_safetensors=False)


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_corrupt_checkpoint_error_names_the_file(tmp_path, damage):
    from hfpref.utils.checks import CorruptCheckpointError

    _model().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * len(data))
    with pytest.raises(CorruptCheckpointError, match=f"{weights}: unreadable safetensors file"):
        CLAPRewardModel.from_pretrained(tmp_path)


def test_auto_model_loads_after_import_hfpref_in_a_fresh_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    model = _model(clap_checkpoint="laion/clap-htsat-unfused", clap_fingerprint="abc123")
    model.save_pretrained(tmp_path)
    code = (
        "import hfpref\n"
        "from transformers import AutoConfig, AutoModel\n"
        f"model = AutoModel.from_pretrained({str(tmp_path)!r})\n"
        f"config = AutoConfig.from_pretrained({str(tmp_path)!r})\n"
        "print(type(model).__name__, type(config).__name__, model.config.clap_checkpoint)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CLAPRewardModel", "CLAPRewardConfig", "laion/clap-htsat-unfused"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hfpref_clap_reward"


def test_local_clap_is_stored_relative_and_resolved_after_a_move(tmp_path):
    import json
    import shutil

    clap_dir, model_dir = tmp_path / "run" / "clap", tmp_path / "run" / "reward"
    clap_dir.mkdir(parents=True)
    model = _model(clap_checkpoint=str(clap_dir))
    model.save_pretrained(model_dir)
    assert json.loads((model_dir / "config.json").read_text())["clap_checkpoint"] == "../clap"
    assert model.config.clap_checkpoint == str(clap_dir)  # the in-memory config is left as it was

    shutil.move(tmp_path / "run", tmp_path / "moved")
    loaded = CLAPRewardModel.from_pretrained(tmp_path / "moved" / "reward")
    assert loaded.config.clap_checkpoint == str(tmp_path / "moved" / "clap")

    shutil.rmtree(tmp_path / "moved" / "clap")
    orphan = CLAPRewardModel.from_pretrained(tmp_path / "moved" / "reward")  # the head alone still loads
    assert orphan.config.clap_checkpoint == "../clap"
    with pytest.raises(
        FileNotFoundError, match=r"'\.\./clap' is a path relative to the reward model's folder.*does not exist"
    ):
        orphan.score([torch.zeros(16).numpy()], ["a dog barks"])


def test_clap_inside_the_model_folder_and_hub_ids_are_kept(tmp_path):
    import json

    from hfpref.models.modeling_clap_reward import portable_clap_reference

    (tmp_path / "clap").mkdir()
    _model(clap_checkpoint=str(tmp_path / "clap")).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["clap_checkpoint"] == "./clap"
    assert CLAPRewardModel.from_pretrained(tmp_path).config.clap_checkpoint == str(tmp_path / "clap")
    assert portable_clap_reference("laion/clap-htsat-unfused", tmp_path) == "laion/clap-htsat-unfused"
