import json
import logging
import re

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict

from hfpref.data.fense import load_fense
from hfpref.data.preference import (
    add_synthetic_negatives,
    challenging_split,
    load_binary_feedback,
    load_preference_dataset,
    split_by_clip,
)
from hfpref.data.schemas import validate_dataset


def _wav_bytes(tmp_path, name="tone.wav", seconds=0.05, sampling_rate=16000):
    path = tmp_path / name
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t).astype("float32"), sampling_rate)
    return path


def _pairs(n_clips=20, pairs_per_clip=3):
    clips = [f"clip-{i:02d}" for i in range(n_clips) for _ in range(pairs_per_clip)]
    return Dataset.from_dict(
        {
            "clip_id": clips,
            "chosen": [f"good {c} {k}" for k, c in enumerate(clips)],
            "rejected": [f"bad {c} {k}" for k, c in enumerate(clips)],
        }
    )


def _captions(tmp_path, n_clips=6):
    wav = _wav_bytes(tmp_path).read_bytes()
    return Dataset.from_dict(
        {
            "clip_id": [f"c{i}" for i in range(n_clips)],
            "caption": [f"sound number {i}" for i in range(n_clips)],
            "audio": [{"bytes": wav, "path": f"c{i}.wav"} for i in range(n_clips)],
        }
    ).cast_column("audio", Audio(decode=False))


def test_split_by_clip_is_disjoint_deterministic_and_sized():
    ds = _pairs()
    splits = split_by_clip(ds, test_size=0.2, seed=3)
    train, test = set(splits["train"]["clip_id"]), set(splits["test"]["clip_id"])
    assert not train & test and train | test == set(ds["clip_id"])
    assert len(test) == 4 and len(splits["train"]) + len(splits["test"]) == len(ds)
    again = split_by_clip(ds, test_size=0.2, seed=3)
    assert again["test"]["clip_id"] == splits["test"]["clip_id"]
    assert set(split_by_clip(ds.shuffle(seed=1), test_size=0.2, seed=3)["test"]["clip_id"]) == test
    other_seeds = {frozenset(split_by_clip(ds, seed=s)["test"]["clip_id"]) for s in range(5)}
    assert len(other_seeds) > 1


def test_split_by_clip_errors():
    with pytest.raises(ValueError, match="'group'.*clip_id"):
        split_by_clip(_pairs(), clip_column="group")
    with pytest.raises(ValueError, match="test_size"):
        split_by_clip(_pairs(), test_size=1.5)
    with pytest.raises(ValueError, match="at least 2 clips"):
        split_by_clip(_pairs(n_clips=1))


def test_split_by_clip_on_fense_keeps_80_20_of_clips(fense_dir):
    ds = load_fense(fense_dir / "clotho_eval.json")
    splits = split_by_clip(ds, test_size=0.2, seed=0)
    assert len(set(splits["test"]["clip_id"])) == 50
    assert not set(splits["train"]["clip_id"]) & set(splits["test"]["clip_id"])


def test_synthetic_negatives_never_self_pair_and_are_seeded(tmp_path):
    ds = _captions(tmp_path)
    pairs = add_synthetic_negatives(ds, seed=0, n_per_clip=3)
    assert len(pairs) == 18 and set(pairs["category"]) == {"synthetic"}
    own = dict(zip(ds["clip_id"], ds["caption"]))
    for row in pairs:
        assert row["chosen"] == own[row["clip_id"]]
        assert row["rejected"] != own[row["clip_id"]] and row["rejected_clip_id"] != row["clip_id"]
        assert row["rejected"] == own[row["rejected_clip_id"]]
    assert pairs.features["audio"] == Audio(decode=False)
    assert pairs[0]["audio"]["path"] == "c0.wav"
    validate_dataset(pairs, "pairwise")
    assert add_synthetic_negatives(ds, seed=0, n_per_clip=3)["rejected"] == pairs["rejected"]
    assert add_synthetic_negatives(ds, seed=1, n_per_clip=3)["rejected"] != pairs["rejected"]


def test_synthetic_negatives_skip_captions_shared_with_another_clip():
    ds = Dataset.from_dict({"clip_id": ["a", "b", "c"], "caption": [["dog", "bark"], ["dog"], ["rain"]]})
    for seed in range(20):
        for row in add_synthetic_negatives(ds, seed=seed, n_per_clip=2):
            if row["clip_id"] == "a":
                assert row["rejected"] == "rain"
    with pytest.raises(ValueError, match="Every caption"):
        add_synthetic_negatives(Dataset.from_dict({"clip_id": ["a", "b"], "caption": ["same", "same"]}))


def test_synthetic_negatives_from_fense_pairs_use_references(fense_dir):
    fense = load_fense(fense_dir / "audiocaps_eval.json")
    pairs = add_synthetic_negatives(fense, seed=0)
    references = {}
    for clip, refs in zip(fense["clip_id"], fense["references"]):
        references[clip] = set(refs)
    assert len(pairs) == len(references)
    for row in pairs:
        assert row["chosen"] in references[row["clip_id"]]
        assert row["rejected"] in references[row["rejected_clip_id"]]
        assert row["rejected"] not in references[row["clip_id"]]
    assert {"audio_id", "raw_name"} <= set(pairs.column_names)
    validate_dataset(pairs, "pairwise", require_audio=False)


def test_synthetic_negatives_need_true_captions():
    with pytest.raises(ValueError, match="references"):
        add_synthetic_negatives(_pairs())
    assert len(add_synthetic_negatives(_pairs(n_clips=3), caption_column="chosen")) == 3


def test_challenging_split_picks_lowest_clips():
    ds = _pairs(n_clips=5, pairs_per_clip=2)
    scores = {"clip-00": 0.9, "clip-01": 0.1, "clip-02": 0.5, "clip-03": 0.05, "clip-04": 0.7}
    hard = challenging_split(ds, scores, n=2)
    assert set(hard["clip_id"]) == {"clip-01", "clip-03"} and len(hard) == 4
    per_row = [scores[c] for c in ds["clip_id"]]
    assert challenging_split(ds, per_row, n=2)["chosen"] == hard["chosen"]
    with pytest.raises(ValueError, match="number of clips"):
        challenging_split(ds, scores, n=6)
    with pytest.raises(ValueError, match="no score"):
        challenging_split(ds, {"clip-00": 1.0}, n=1)
    with pytest.raises(ValueError, match="one score per row"):
        challenging_split(ds, [0.1, 0.2], n=1)


@pytest.fixture
def feedback_dir(tmp_path):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        _wav_bytes(audio_dir, name)
    return tmp_path


def test_binary_feedback_from_csv(feedback_dir, caplog):
    path = feedback_dir / "feedback.csv"
    path.write_text(
        "audio,prompt,label,annotator\n"
        "audio/a.wav,a dog barks and a car passes,1,x\n"
        "audio/b.wav,birds chirp then thunder,0,y\n"
        "audio/c.wav,rain on a roof,skip,x\n"
        "audio/d.wav,a siren wails,,y\n"
        f"{feedback_dir / 'audio' / 'd.wav'},a siren wails,-1,y\n"
    )
    with caplog.at_level(logging.INFO, logger="hfpref.data.preference"):
        ds = load_binary_feedback(path)
    assert ds["label"] == [1, 0] and ds["annotator"] == ["x", "y"]
    assert ds.features["audio"] == Audio(decode=False)
    assert ds[0]["audio"]["path"] == str(feedback_dir / "audio" / "a.wav")
    assert re.search(r"3 skipped items dropped", ds.info.description)
    assert any("dropped 3 skipped" in record.getMessage() for record in caplog.records)
    validate_dataset(ds, "pointwise")


def test_binary_feedback_from_json_and_jsonl(feedback_dir):
    rows = [
        {"wav": "a.wav", "text": "a dog barks", "y": 1},
        {"wav": "b.wav", "text": "rain", "y": 0},
        {"wav": "c.wav", "text": "wind", "y": None},
    ]
    json_path = feedback_dir / "feedback.json"
    json_path.write_text(json.dumps(rows))
    ds = load_binary_feedback(
        json_path, audio_column="wav", text_column="text", label_column="y", base_dir=feedback_dir / "audio"
    )
    assert ds["y"] == [1, 0] and "1 skipped" in ds.info.description
    validate_dataset(ds, "pointwise", audio_column="wav", text_column="text", label_column="y")

    jsonl_path = feedback_dir / "audio" / "feedback.jsonl"
    jsonl_path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    ds = load_binary_feedback(jsonl_path, audio_column="wav", text_column="text", label_column="y")
    assert ds["text"] == ["a dog barks", "rain"] and "0 skipped" in ds.info.description


def test_binary_feedback_bad_label_names_file_and_row(feedback_dir):
    path = feedback_dir / "bad.csv"
    path.write_text("audio,prompt,label\naudio/a.wav,x,1\naudio/b.wav,y,maybe\n")
    with pytest.raises(ValueError, match=r"bad\.csv: row 1 \(line 3\): label 'maybe'"):
        load_binary_feedback(path)
    path.write_text("audio,prompt,label\naudio/a.wav,x,2\n")
    with pytest.raises(ValueError, match=r"row 0 .*label '2'"):
        load_binary_feedback(path)


def test_binary_feedback_missing_audio_and_columns(feedback_dir):
    path = feedback_dir / "missing.csv"
    path.write_text("audio,prompt,label\naudio/a.wav,x,1\naudio/nope.wav,y,0\n")
    with pytest.raises(ValueError, match=r"missing\.csv: row 1 .*missing audio file .*nope\.wav"):
        load_binary_feedback(path)
    path.write_text("audio,caption,label\naudio/a.wav,x,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['prompt'\]"):
        load_binary_feedback(path)
    assert load_binary_feedback(path, text_column="caption")["caption"] == ["x"]
    path.write_text("audio,prompt,label\naudio/a.wav,x,skip\n")
    with pytest.raises(ValueError, match="no labeled item"):
        load_binary_feedback(path)


def test_load_preference_dataset_from_disk_and_files(tmp_path):
    pairs = _pairs(n_clips=4, pairs_per_clip=1)
    splits = split_by_clip(pairs, test_size=0.25)
    splits.save_to_disk(tmp_path / "saved")
    loaded = load_preference_dataset(tmp_path / "saved", kind="pairwise", require_audio=False)
    assert isinstance(loaded, DatasetDict) and len(loaded["test"]) == 1
    assert (
        load_preference_dataset(tmp_path / "saved", kind="pairwise", split="train", require_audio=False).num_rows == 3
    )
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_preference_dataset(tmp_path / "saved", kind="pairwise", split="dev", require_audio=False)
    with pytest.raises(ValueError, match="'audio'"):
        load_preference_dataset(tmp_path / "saved", kind="pairwise")

    pairs.to_json(tmp_path / "pairs.jsonl")
    from_json = load_preference_dataset(tmp_path / "pairs.jsonl", kind="pairwise", split="train", require_audio=False)
    assert from_json["chosen"] == pairs["chosen"]
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    from_csv = load_preference_dataset(tmp_path / "pairs.csv", kind="pairwise", require_audio=False)
    assert from_csv["train"]["rejected"] == pairs["rejected"]
    with pytest.raises(ValueError, match="'prompt'"):
        load_preference_dataset(tmp_path / "pairs.csv", kind="dpo")
    with pytest.raises(ValueError, match="does not exist"):
        load_preference_dataset(tmp_path / "nothing.json", kind="pairwise")


def test_load_preference_dataset_keeps_audio_undecoded(tmp_path):
    ds = _captions(tmp_path).cast_column("audio", Audio())
    pairs = add_synthetic_negatives(ds)
    assert pairs.features["audio"].decode
    pairs.save_to_disk(tmp_path / "synthetic")
    loaded = load_preference_dataset(tmp_path / "synthetic", kind="pairwise")
    assert loaded.features["audio"] == Audio(decode=False)
    assert loaded[0]["audio"]["bytes"].startswith(b"RIFF")


def test_uninformative_rows_are_dropped_with_a_count_or_refused(caplog):
    from hfpref.data.preference import drop_uninformative_rows

    ds = Dataset.from_dict(
        {
            "chosen": ["a dog barks", "  ", "Rain falls", "wind", "a bell", None],
            "rejected": ["a cat meows", "thunder", "rain  falls", "", "a horn", "a car"],
        }
    )
    kwargs = dict(text_columns=["chosen", "rejected"], pair_columns=("chosen", "rejected"), name="pairs.jsonl")
    with caplog.at_level(logging.WARNING, logger="hfpref.data.preference"):
        kept = drop_uninformative_rows(ds, **kwargs)
    assert list(kept["chosen"]) == ["a dog barks", "a bell"]
    message = caplog.text
    assert "pairs.jsonl: dropped 4 of 6 rows" in message
    assert "2 with empty 'chosen' (rows [1, 5])" in message and "1 with empty 'rejected' (rows [3])" in message
    assert "1 with 'chosen' == 'rejected' (rows [2])" in message
    with pytest.raises(ValueError, match=r"pairs.jsonl: row 1 has empty 'chosen'"):
        drop_uninformative_rows(ds, **kwargs, strict=True)
    clean = ds.select([0, 4])
    assert drop_uninformative_rows(clean, **kwargs, strict=True) is clean
    with pytest.raises(ValueError, match="every one of its 2 rows"):
        drop_uninformative_rows(ds.select([1, 2]), **kwargs)


def test_binary_feedback_drops_empty_prompts_with_a_count(feedback_dir, caplog):
    path = feedback_dir / "feedback.csv"
    path.write_text("audio,prompt,label\naudio/a.wav,a dog barks,1\naudio/b.wav,   ,0\naudio/c.wav,,1\n")
    with caplog.at_level(logging.WARNING, logger="hfpref.data.preference"):
        ds = load_binary_feedback(path)
    assert ds["prompt"] == ["a dog barks"] and "2 items with an empty 'prompt' dropped" in ds.info.description
    assert "row 1 (line 3), row 2 (line 4)" in caplog.text
    with pytest.raises(ValueError, match=r"feedback.csv: row 1 \(line 3\) has an empty 'prompt'"):
        load_binary_feedback(path, strict=True)


def test_invalid_utf8_names_the_file_and_line(feedback_dir, tmp_path):
    from hfpref.data.loading import load_any_dataset

    captions = tmp_path / "captions.jsonl"
    captions.write_bytes('{"caption": "a dog"}\n{"caption": "un café"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"captions.jsonl: line 2 is not valid UTF-8 \(byte 19 of the line"):
        load_any_dataset(captions)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.csv").write_bytes("caption\nna\u00efve\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"train.csv: line 2 is not valid UTF-8"):
        load_any_dataset(folder)
    feedback = feedback_dir / "feedback.csv"
    feedback.write_bytes("audio,prompt,label\naudio/a.wav,caf\u00e9 noise,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"feedback.csv: line 2 is not valid UTF-8"):
        load_binary_feedback(feedback)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"caption": "a dog"}\n\n{"caption": "a cat",}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl: line 3 is not valid JSON \(.* at column 21\)"):
        load_any_dataset(broken)
    broken.write_text('{"caption": "a dog"}\n["a cat"]\n')
    with pytest.raises(ValueError, match=r"broken.jsonl: line 2 holds a JSON list, not an object"):
        load_any_dataset(broken)


def test_a_plus_split_joins_splits_in_order_and_a_missing_one_is_named():
    from hfpref.data.loading import get_split, select_splits

    data = DatasetDict(
        train=Dataset.from_dict({"x": [1, 2]}), clap=Dataset.from_dict({"x": [3]}), test=Dataset.from_dict({"x": [4]})
    )
    assert get_split(data, "train+clap", name="world")["x"] == [1, 2, 3]
    assert get_split(data, "clap+train", name="world")["x"] == [3, 1, 2]
    assert get_split(data, "test", name="world")["x"] == [4]
    splits = select_splits(data, name="world", train_split="train+clap", test_split="test")
    assert splits["train"]["x"] == [1, 2, 3] and splits["test"]["x"] == [4]
    with pytest.raises(ValueError, match=r"world has no split 'extra'; it has \['train', 'clap', 'test'\]"):
        get_split(data, "train+extra", name="world")
