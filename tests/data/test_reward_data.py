import numpy as np
import pytest
import soundfile as sf

from hfpref.data.fense import attach_audio, load_fense
from hfpref.data.reward_data import load_reward_splits
from hfpref.judges.oracle import make_oracle_reward_data
from hfpref.scripts.utils import RewardScriptArguments


def test_attach_audio_finds_clips_by_raw_name_and_youtube_id(fense_dir, tmp_path):
    pairs = load_fense(fense_dir / "audiocaps_eval.json")
    by_name = next(r for r in pairs if r["raw_name"])
    by_id = next(r for r in pairs if not r["raw_name"])
    sf.write(tmp_path / by_name["raw_name"], np.zeros(160), 16000)
    (tmp_path / "nested").mkdir()
    sf.write(tmp_path / "nested" / f"Y{by_id['audio_id']}_30.000_40.000.wav", np.zeros(160), 16000)
    with pytest.raises(ValueError, match=r"clips have no audio file in .*skip_missing=True"):
        attach_audio(pairs, tmp_path)
    found = attach_audio(pairs, tmp_path, skip_missing=True)
    assert set(found["clip_id"]) == {by_name["clip_id"], by_id["clip_id"]}
    assert found.features["audio"].decode is False


def test_reward_splits_from_fense_are_split_by_clip_with_negatives(fense_dir, tmp_path):
    pairs = load_fense(fense_dir / "clotho_eval.json")
    for name in sorted(set(pairs["raw_name"]))[:20]:
        sf.write(tmp_path / name, np.zeros(160), 16000)
    # 20 of 250 clips have audio here: the run must fail loudly rather than train on a fraction.
    args = RewardScriptArguments(fense_files=[str(fense_dir / "clotho_eval.json")], fense_audio_dirs=[str(tmp_path)])
    with pytest.raises(ValueError, match="230 clips have no audio"):
        load_reward_splits(args, pairwise=True)


def test_reward_splits_synthetic_pairwise_and_pointwise():
    args = RewardScriptArguments(synthetic_clips=20, synthetic_negatives=True)
    with pytest.raises(ValueError, match="synthetic_clips=20: a judge labels"):
        load_reward_splits(args, pairwise=True)
    splits = load_reward_splits(args, pairwise=True, synthetic_data=make_oracle_reward_data)
    assert not set(splits["train"]["clip_id"]) & set(splits["test"]["clip_id"])
    assert "synthetic" in set(splits["train"]["category"]) and "synthetic" not in set(splits["test"]["category"])
    pointwise = load_reward_splits(
        RewardScriptArguments(synthetic_clips=20), pairwise=False, synthetic_data=make_oracle_reward_data
    )
    assert set(pointwise["train"]["label"]) == {0, 1}


def test_script_arguments_need_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one data source"):
        RewardScriptArguments()
    with pytest.raises(ValueError, match="exactly one data source"):
        RewardScriptArguments(dataset_name="x", synthetic_clips=3)
    with pytest.raises(ValueError, match="one audio folder per FENSE file"):
        RewardScriptArguments(fense_files=["a.json", "b.json"], fense_audio_dirs=["a"])


def test_reward_splits_drop_pairs_that_would_mislead_training(tmp_path, caplog):
    import json
    import logging

    rows = []
    for clip in range(6):
        sf.write(tmp_path / f"{clip}.wav", np.zeros(160), 16000)
        rows.append({"clip_id": clip, "audio": str(tmp_path / f"{clip}.wav"), "chosen": "a dog", "rejected": "a cat"})
    rows[1]["rejected"] = "A  dog"  # the same caption: no preference
    rows[4]["chosen"] = " "
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = RewardScriptArguments(dataset_name=str(path), test_size=0.5)
    with caplog.at_level(logging.WARNING, logger="hfpref.data.preference"):
        splits = load_reward_splits(args, pairwise=True)
    assert sorted([*splits["train"]["clip_id"], *splits["test"]["clip_id"]]) == [0, 2, 3, 5]
    assert "dropped 2 of 6 rows" in caplog.text and str(path) in caplog.text
    args = RewardScriptArguments(dataset_name=str(path), test_size=0.5, strict_data=True)
    with pytest.raises(ValueError, match=r"row 1 has 'chosen' == 'rejected'"):
        load_reward_splits(args, pairwise=True)
