import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from hfpref.annotate.items import load_items
from hfpref.data.audio import decode_audio
from hfpref.data.tta_feedback import write_feedback_skeleton
from hfpref.prompts.tta_prompts import TTAPrompt


def _audio_of(world, clip_id):
    return world["audio"][list(world["clip_id"]).index(clip_id)]


def test_quickstart_judgments_joined_with_the_world_by_clip_id(world_dir, judgments_dir):
    items, counts = load_items(judgments_dir, "pairwise", audio_dataset=world_dir)
    world, judged = load_from_disk(str(world_dir)), load_from_disk(str(judgments_dir))
    assert counts["caption_columns"] == ["greedy", "top_k"] and counts["items"] == len(judged) == 6
    assert items["caption_1"] == judged["greedy"] and items["caption_2"] == judged["top_k"]
    assert set(items["source_1"]) == {"greedy"} and set(items["source_2"]) == {"top_k"}
    for row in items:
        assert row["audio"]["bytes"] == _audio_of(world, row["clip_id"])["bytes"]
    assert len(set(items["item_id"])) == 6


def test_pairs_output_joined_by_source_row(world_dir, tmp_path):
    # `hfpref pairs` writes prompt/chosen/rejected/scores/row, and clip_id only when its dataset had one.
    world = load_from_disk(str(world_dir))
    pairs = Dataset.from_dict(
        {
            "prompt": ["<st_1><st_2> Describe the speaker's emotion."] * 3,
            "chosen": ["she sounds calm", "he sounds angry", "he sounds angry"],
            "rejected": ["she sounds sad", "he sounds happy", "he sounds bored"],
            "chosen_score": [0.9, 0.8, 0.8],
            "rejected_score": [0.1, 0.2, 0.3],
            "row": [4, 1, 1],
        }
    )
    pairs.save_to_disk(str(tmp_path / "pairs"))
    items, counts = load_items(tmp_path / "pairs", "pairwise", audio_dataset=world_dir)
    assert counts["caption_columns"] == ["chosen", "rejected"]
    assert items["clip_id"] == [world["clip_id"][4], world["clip_id"][1], world["clip_id"][1]]
    assert items[0]["audio"]["bytes"] == world[4]["audio"]["bytes"]
    binary, counts = load_items(tmp_path / "pairs", "binary", audio_dataset=world_dir)
    # one item per caption; "he sounds angry" on clip 1 appears twice and is asked once (counted)
    assert binary["text"] == [
        "she sounds calm",
        "she sounds sad",
        "he sounds angry",
        "he sounds happy",
        "he sounds bored",
    ]
    assert counts["duplicates"] == 1 and counts["text_column"] == "caption"


def test_tta_generate_feedback_csv_becomes_binary_items_with_its_tasks(tmp_path):
    rng = np.random.default_rng(0)
    prompts = [
        TTAPrompt(
            prompt="a dog barks and a bell rings",
            labels=("dog", "bell"),
            order=("dog", "bell"),
            task="integrity",
            conjunctions=("and",),
        ),
        TTAPrompt(
            prompt="rain then thunder",
            labels=("rain", "thunder"),
            order=("rain", "thunder"),
            task="temporal",
            conjunctions=("then",),
        ),
    ]
    clips = [[rng.uniform(-0.5, 0.5, 8000) for _ in range(2)] for _ in prompts]
    path = write_feedback_skeleton(prompts, clips, tmp_path, sampling_rate=16000)
    items, counts = load_items(tmp_path, "binary")  # the folder tta-generate wrote
    assert counts["text_column"] == "prompt" and counts["split_column"] == "task"
    assert items["text"] == [prompts[0].prompt] * 2 + [prompts[1].prompt] * 2
    assert items["split"] == ["integrity", "integrity", "temporal", "temporal"]
    assert items["clip_id"] == [
        "audio/0000_a_dog_barks_and_a_bell_rings_0.wav",
        "audio/0000_a_dog_barks_and_a_bell_rings_1.wav",
        "audio/0001_rain_then_thunder_0.wav",
        "audio/0001_rain_then_thunder_1.wav",
    ]
    waveform = decode_audio(items[2]["audio"], 16000)
    np.testing.assert_allclose(waveform, clips[1][0], atol=1e-4)
    # rows somebody already labelled are not asked again
    text = path.read_text().splitlines()
    text[1] = text[1].replace(",,integrity", ",1,integrity")
    path.write_text("\n".join(text) + "\n")
    assert len(load_items(path, "binary")[0]) == 3


def test_evaluation_jsonl_pairs_baseline_and_rl_by_challenging_split(world_dir, tmp_path):
    world = load_from_disk(str(world_dir))
    rows = [
        {"clip_id": c, "challenging": i % 2 == 0, "truth": t, "baseline": "a beep", "rl": t}
        for i, (c, t) in enumerate(zip(world["clip_id"], world["caption"]))
    ]
    (tmp_path / "evaluation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, counts = load_items(tmp_path / "evaluation.jsonl", "pairwise", audio_dataset=world_dir)
    assert counts["caption_columns"] == ["baseline", "rl"] and counts["split_column"] == "challenging"
    assert items["split"] == ["challenging", "non_challenging"] * 3


def test_identical_captions_are_dropped_and_counted(world_dir, tmp_path, caplog):
    world = load_from_disk(str(world_dir)).select_columns(["clip_id", "audio", "caption"])
    same = world.add_column("other", list(world["caption"])).add_column("top", ["a beep"] + list(world["caption"])[1:])
    same.save_to_disk(str(tmp_path / "same"))
    items, counts = load_items(tmp_path / "same", "pairwise", caption_columns=["top", "other"])
    assert len(items) == 1 and counts["identical_captions"] == 5
    assert "identical" in caplog.text


def test_splits_of_a_dataset_dict_become_item_splits(world_dir, tmp_path):
    world = load_from_disk(str(world_dir)).rename_column("caption", "prompt")
    DatasetDict(train=world.select(range(4)), test=world.select(range(4, 6))).save_to_disk(str(tmp_path / "dd"))
    items, counts = load_items(tmp_path / "dd", "binary")
    assert items["split"] == ["train"] * 4 + ["test"] * 2 and counts["split_column"] == "split"


def test_missing_audio_and_missing_clips_are_clear_errors(world_dir, judgments_dir, tmp_path):
    with pytest.raises(ValueError, match="has no 'audio' column; pass the clips with --audio-dataset"):
        load_items(judgments_dir, "pairwise")
    few = load_from_disk(str(world_dir)).select(range(2))
    few.save_to_disk(str(tmp_path / "few"))
    with pytest.raises(ValueError, match=r"4 clip\(s\) of .* are not in --audio-dataset"):
        load_items(judgments_dir, "pairwise", audio_dataset=tmp_path / "few")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['nope'\]"):
        load_items(judgments_dir, "pairwise", audio_dataset=world_dir, caption_columns=["greedy", "nope"])


def test_source_rows_index_the_train_split_and_speech_columns_are_read(world_dir, tmp_path):
    world = load_from_disk(str(world_dir)).rename_column("audio", "speech")
    DatasetDict(train=world.select(range(3, 6)), test=world.select(range(3))).save_to_disk(str(tmp_path / "speech"))
    pairs = Dataset.from_dict(
        {"prompt": ["p", "p"], "chosen": ["calm", "angry"], "rejected": ["sad", "happy"], "row": [0, 2]}
    )
    pairs.save_to_disk(str(tmp_path / "pairs"))
    items, _ = load_items(tmp_path / "pairs", "pairwise", audio_dataset=tmp_path / "speech", audio_column="speech")
    assert items["clip_id"] == [world["clip_id"][3], world["clip_id"][5]]  # rows of `train`, as `hfpref pairs` read
    assert items[1]["audio"]["bytes"] == world[5]["speech"]["bytes"]
    items, _ = load_items(
        tmp_path / "pairs", "pairwise", audio_dataset=tmp_path / "speech", audio_column="speech", audio_split="test"
    )
    assert items["clip_id"] == [world["clip_id"][0], world["clip_id"][2]]
