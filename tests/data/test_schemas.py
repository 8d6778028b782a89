import pytest
from datasets import Dataset, DatasetDict

from hfpref.data.schemas import SCHEMAS, validate_dataset


def _pairwise(**extra):
    return Dataset.from_dict(
        {"audio": ["a.wav", "b.wav"], "chosen": ["a dog barks", "rain"], "rejected": ["a cat", "wind"], **extra}
    )


@pytest.mark.parametrize(
    "kind, columns",
    [
        ("pairwise", {"audio": ["a.wav"], "chosen": ["x"], "rejected": ["y"], "margin": [1.0], "clip_id": ["c"]}),
        ("pointwise", {"audio": ["a.wav"], "caption": ["x"], "label": [1]}),
        ("pointwise", {"audio": ["a.wav"], "prompt": ["x"], "label": [0]}),
        ("speech_caption", {"speech": ["s.wav"], "caption": ["a calm, low voice"]}),
        ("dpo", {"prompt": ["p"], "chosen": ["x"], "rejected": ["y"]}),
    ],
)
def test_valid_datasets_pass(kind, columns):
    validate_dataset(Dataset.from_dict(columns), kind)


def test_missing_columns_are_named_with_present_ones():
    ds = _pairwise().remove_columns(["chosen", "rejected"])
    with pytest.raises(ValueError) as error:
        validate_dataset(ds, "pairwise")
    message = str(error.value)
    assert "'chosen'" in message and "'rejected'" in message
    assert "['audio']" in message


def test_pointwise_text_column_may_be_caption_or_prompt():
    ds = Dataset.from_dict({"audio": ["a.wav"], "text": ["x"], "label": [1]})
    with pytest.raises(ValueError, match="'caption' or 'prompt'"):
        validate_dataset(ds, "pointwise")
    validate_dataset(ds, "pointwise", text_column="text")


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError) as error:
        validate_dataset(_pairwise(), "triplet")
    for kind in SCHEMAS:
        assert kind in str(error.value)


def test_empty_dataset_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        validate_dataset(_pairwise().select([]), "pairwise")


def test_pointwise_labels_must_be_binary_and_first_bad_row_is_named():
    ds = Dataset.from_dict({"audio": ["a", "b", "c", "d"], "prompt": list("wxyz"), "label": [1, 0, 2, -1]})
    with pytest.raises(ValueError, match=r"row 2: 2"):
        validate_dataset(ds, "pointwise")


def test_audio_column_override_and_text_only_pairs():
    ds = _pairwise().rename_column("audio", "clip")
    with pytest.raises(ValueError, match="'audio'"):
        validate_dataset(ds, "pairwise")
    validate_dataset(ds, "pairwise", audio_column="clip")
    validate_dataset(ds.remove_columns("clip"), "pairwise", require_audio=False)
    with pytest.raises(ValueError, match="no audio column"):
        validate_dataset(
            Dataset.from_dict({"prompt": ["p"], "chosen": ["x"], "rejected": ["y"]}), "dpo", audio_column="a"
        )


def test_every_split_of_a_dataset_dict_is_checked():
    good = _pairwise()
    validate_dataset(DatasetDict({"train": good, "test": good}), "pairwise")
    with pytest.raises(ValueError, match="Split 'test'"):
        validate_dataset(DatasetDict({"train": good, "test": good.remove_columns("chosen")}), "pairwise")
