import csv
import json

import numpy as np
import pytest
import torch

from hfpref.cli.main import main as hfpref_main
from hfpref.data.audio import decode_audio_column
from hfpref.data.preference import load_binary_feedback
from hfpref.data.tta_feedback import (
    add_rewards,
    generated_dataset,
    load_unlabelled_feedback,
    mix_feedback,
    write_feedback_skeleton,
)
from hfpref.encoders.clap import ClapEmbedder, build_tiny_clap
from hfpref.models.tta_pipeline import build_tiny_tta_pipeline
from hfpref.prompts.tta_prompts import build_tta_prompts
from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    pass


def _clips(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(8000)).astype(np.float32) for _ in range(n)]


def test_skeleton_is_ready_for_annotation_and_loads_once_labelled(tmp_path):
    prompts = build_tta_prompts(["Dog", "Rain", "Bird"], 2, "integrity", seed=0)
    path = write_feedback_skeleton(prompts, [_clips(3, 0), _clips(3, 1)], tmp_path, sampling_rate=16000)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 6 and all(row["label"] == "" for row in rows)
    assert [row["task"] for row in rows] == ["integrity"] * 6
    assert json.loads(rows[0]["labels"]) == list(prompts[0].labels)
    assert rows[4]["audio"].startswith("audio/0001_") and rows[4]["audio"].endswith("_1.wav")
    assert all((tmp_path / row["audio"]).is_file() for row in rows)
    with pytest.raises(ValueError, match="no labeled item left after dropping 6"):
        load_binary_feedback(path)
    for i, row in enumerate(rows):  # an annotator labels all but one, which they skip
        row["label"] = "skip" if i == 5 else str(i % 2)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ds = load_binary_feedback(path)
    assert len(ds) == 5 and ds["label"] == [0, 1, 0, 1, 0] and "skipped" in ds.info.description


def test_unlabelled_rows_are_the_reward_model_pool(tmp_path):
    """Annotated rows load with load_binary_feedback; the rows left empty are the pool the reward model labels."""
    path = write_feedback_skeleton(
        ["a dog barks", "rain falls"], [_clips(2, 0), _clips(2, 1)], tmp_path, sampling_rate=16000
    )
    rows = list(csv.DictReader(path.open()))
    rows[0]["label"], rows[1]["label"], rows[2]["label"] = "1", "0", "skip"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pool = load_unlabelled_feedback(path)
    assert pool["prompt"] == ["rain falls"] and len(load_binary_feedback(path)) == 2  # the skipped row is in neither
    assert decode_audio_column(pool, "audio", 16000)[0][0].shape == (8000,)
    (tmp_path / rows[3]["audio"]).unlink()
    with pytest.raises(
        ValueError, match=r"feedback.csv: row 3 \(line 5\), column 'audio': audio file .* does not exist"
    ):
        load_unlabelled_feedback(path)


@pytest.fixture(scope="module")
def clap_and_reward():
    clap, processor = build_tiny_clap(
        ["a dog barks", "rain falls"] * 8, seed=0, clip_seconds=1.0, num_mel_bins=32, spec_size=64
    )
    embedder = ClapEmbedder(clap, processor, show_progress=False)
    torch.manual_seed(0)
    reward_model = CLAPRewardModel(CLAPRewardConfig(embedding_dim=embedder.embedding_dim, hidden_sizes=[16]))
    return clap, processor, embedder, reward_model.eval()


def test_add_rewards_scores_each_pair_with_the_reward_model(clap_and_reward):
    _, _, embedder, reward_model = clap_and_reward
    clips = _clips(4)
    ds = generated_dataset(["a dog barks", "rain falls"], [clips[:2], clips[2:]], sampling_rate=16000)
    scored = add_rewards(ds, reward_model, embedder)
    stored, _ = decode_audio_column(ds, "audio", 16000)  # the 16-bit WAVs the dataset holds
    expected = reward_model.score(stored, ["a dog barks"] * 2 + ["rain falls"] * 2, embedder)
    np.testing.assert_allclose(scored["reward"], expected, rtol=1e-5)
    assert all(0 < r < 1 for r in scored["reward"])


def test_mix_keeps_every_human_row_and_draws_reward_rows_at_the_ratio(clap_and_reward):
    _, _, embedder, reward_model = clap_and_reward
    human = generated_dataset(["h"] * 4, [[c] for c in _clips(4, 1)], sampling_rate=16000)
    human = human.add_column("label", [1, 0, 1, 1]).add_column("reward", [0.9, 0.2, 0.8, 0.7])
    machine = generated_dataset(["m"] * 10, [[c] for c in _clips(10, 2)], sampling_rate=16000)
    machine = add_rewards(machine, reward_model, embedder)
    one_to_one = mix_feedback(human, machine, ratio=1.0, seed=0)
    assert sorted(one_to_one["source"]) == ["human"] * 4 + ["reward_model"] * 4
    by_label = mix_feedback(human, machine, ratio=0.5, human_reward="label")
    assert sorted(r for r, s in zip(by_label["reward"], by_label["source"]) if s == "human") == [0, 1, 1, 1]
    assert by_label["source"].count("reward_model") == 2
    everything = mix_feedback(human, machine, ratio=5.0)  # asks for 20, has 10: all used, logged
    assert everything["source"].count("reward_model") == 10
    with pytest.raises(ValueError, match="human_reward='both' is not one of"):
        mix_feedback(human, machine, human_reward="both")
    with pytest.raises(ValueError, match=r"reward_labelled lacks columns \['reward'\]"):
        mix_feedback(human, machine.remove_columns("reward"))


def test_tta_generate_command_writes_a_skeleton(tmp_path, clap_and_reward):
    clap, processor, _, _ = clap_and_reward
    build_tiny_tta_pipeline(clap, processor.tokenizer).save_pretrained(tmp_path / "pipe")
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "a dog barks and rain falls", "labels": ["Dog", "Rain"], "task": "integrity"},
        {"prompt": "rain falls"},
    ]
    prompts.write_text("\n".join(json.dumps(r) for r in rows))
    code = hfpref_main(
        ["tta-generate", str(prompts), "--pipeline", str(tmp_path / "pipe"), "--output-dir", str(tmp_path / "out"),
         "--n-per-prompt", "2", "--num-inference-steps", "2", "--guidance-scale", "1.0", "--audio-length-in-s", "1.0"]
    )  # fmt: skip
    assert code == 0
    out = list(csv.DictReader((tmp_path / "out" / "feedback.csv").open()))
    assert [(r["prompt"], r["sample"], r["task"]) for r in out] == [
        ("a dog barks and rain falls", "0", "integrity"),
        ("a dog barks and rain falls", "1", "integrity"),
        ("rain falls", "0", ""),
        ("rain falls", "1", ""),
    ]
    assert json.loads(out[0]["order"]) == ["Dog", "Rain"]
