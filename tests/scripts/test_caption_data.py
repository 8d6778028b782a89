"""Captioning data with an empty caption or reference is refused, naming the split, row and column (SFT and RL)."""

import json
import re

import pytest

from hfpref.data.loading import check_caption_rows
from hfpref.scripts.utils import CaptionRLScriptArguments, CaptionScriptArguments, load_caption_splits


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


ROWS = [
    {"audio": f"clip{i}.wav", "caption": f"a dog barks {i}", "references": [f"a dog {i}", "barking"]} for i in range(6)
]


@pytest.mark.parametrize("bad", ["", "   \n\t"])
def test_sft_data_with_an_empty_caption_is_refused(tmp_path, bad):
    rows = [dict(row) for row in ROWS]
    rows[3]["caption"] = bad
    args = CaptionScriptArguments(dataset_name=_jsonl(tmp_path / "clips.jsonl", rows), test_size=0.5)
    with pytest.raises(
        ValueError, match=re.escape(f"clips.jsonl, split 'train': row 3, column 'caption' is empty ({bad!r})")
    ):
        load_caption_splits(args)
    # Control: the same file with the caption filled in loads, every row kept.
    rows[3]["caption"] = "rain on a roof"
    splits = load_caption_splits(
        CaptionScriptArguments(dataset_name=_jsonl(tmp_path / "clips.jsonl", rows), test_size=0.5)
    )
    assert len(splits["train"]) + len(splits["test"]) == 6


def test_rl_data_with_an_empty_reference_is_refused(tmp_path):
    rows = [dict(row) for row in ROWS]
    rows[4]["references"] = ["a dog", " "]
    path = _jsonl(tmp_path / "rl.jsonl", rows)
    args = CaptionRLScriptArguments(dataset_name=path, tiny_reward_model=True, test_size=0.5)
    with pytest.raises(ValueError, match=r"rl.jsonl, split 'train': row 4, column 'references', caption 1 is empty"):
        load_caption_splits(args)


def test_a_named_test_split_is_checked_too(tmp_path):
    from datasets import Dataset, DatasetDict

    test = [dict(row) for row in ROWS[:2]]
    test[1]["caption"] = ""
    DatasetDict(train=Dataset.from_list(ROWS), test=Dataset.from_list(test)).save_to_disk(str(tmp_path / "data"))
    args = CaptionScriptArguments(dataset_name=str(tmp_path / "data"), dataset_test_split="test")
    with pytest.raises(ValueError, match=r"data, split 'test': row 1, column 'caption' is empty"):
        load_caption_splits(args)


def test_check_caption_rows_by_hand():
    from datasets import Dataset

    ds = Dataset.from_dict({"caption": ["rain", None], "references": [["a", "b"], []]})
    with pytest.raises(ValueError, match=r"row 1, column 'caption' is empty \(None\)"):
        check_caption_rows(ds, "caption", name="x")
    with pytest.raises(ValueError, match=r"row 1, column 'references' holds no caption"):
        check_caption_rows(ds, "references", name="x")
    check_caption_rows(ds.select([0]), "caption", name="x")
    check_caption_rows(ds.select([0]), "references", name="x")
    check_caption_rows(ds, "not_a_column", name="x")  # absent columns are the callers' to require
    with pytest.raises(ValueError, match=r"row 0, column 'n' is not text \(3\)"):
        check_caption_rows(Dataset.from_dict({"n": [3]}), "n", name="x")


@pytest.mark.parametrize(
    "architecture, freeze, frozen",
    [("qwen2_audio", None, True), ("qwen2_audio", False, False), ("whisper", None, False), ("whisper", True, True)],
)
def test_audio_llm_captioner_freezes_its_audio_tower_by_default(architecture, freeze, frozen):
    """`freeze_audio_encoder` unset: an audio LLM's audio tower is frozen, a seq2seq captioner's encoder trains."""
    from hfpref.scripts.utils import CaptionerArguments, load_captioner

    args = CaptionerArguments(tiny_captioner=True, tiny_architecture=architecture, freeze_audio_encoder=freeze)
    model, _ = load_captioner(args, ["a dog barks", "rain falls on a roof"] * 4)
    encoder = model.model.audio_tower if architecture == "qwen2_audio" else model.get_encoder()
    trainable = [p.requires_grad for p in encoder.parameters()]
    assert not any(trainable) if frozen else sum(trainable) > len(trainable) // 2  # Whisper's positions stay fixed
    assert any(p.requires_grad for p in model.parameters())  # the rest trains
    with pytest.raises(ValueError, match="tiny_architecture='llama'"):
        CaptionerArguments(tiny_captioner=True, tiny_architecture="llama")
