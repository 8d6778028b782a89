import csv
import json
from collections import Counter

import pytest

from hfpref.data.fense import load_fense
from hfpref.data.schemas import validate_dataset


EXPECTED = {
    "audiocaps_eval": (1483, {"HC": 203, "HI": 247, "HM": 239, "MM": 794}, 1671),
    "clotho_eval": (1555, {"HC": 210, "HI": 244, "HM": 232, "MM": 869}, 1750),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def fense(request, fense_dir):
    name = request.param
    return name, fense_dir, load_fense(fense_dir / f"{name}.json")


def test_pair_counts_match_the_published_selection(fense):
    name, _, ds = fense
    n_pairs, per_category, _ = EXPECTED[name]
    assert len(ds) == n_pairs
    assert Counter(ds["category"]) == per_category
    assert all(m >= 1 for m in ds["margin"])
    validate_dataset(ds, "pairwise", require_audio=False)


def test_keeping_ties_gives_every_pair(fense):
    name, fense_dir, _ = fense
    ds = load_fense(fense_dir / f"{name}.json", drop_ties=False)
    assert len(ds) == EXPECTED[name][2]
    ties = ds.filter(lambda row: row["vote_sum"] == 0)
    assert len(ties) == EXPECTED[name][2] - EXPECTED[name][0]
    assert set(ties["preferred"]) == {0}
    assert ties["chosen"] == ties["caption_1"] and set(ties["margin"]) == {0.0}


def test_orientation_is_recoverable(fense):
    _, _, ds = fense
    for row in ds:
        assert sum(row["votes"]) == row["vote_sum"] and row["margin"] == abs(row["vote_sum"])
        first_wins = row["preferred"] == 1
        assert row["chosen"] == (row["caption_1"] if first_wins else row["caption_2"])
        assert row["rejected"] == (row["caption_2"] if first_wins else row["caption_1"])
        assert row["chosen_source"] == (row["source_1"] if first_wins else row["source_2"])
        assert row["clip_id"] == f"{row['pair_id'].rsplit('-', 1)[0]}"


def test_reference_removal_follows_the_fense_protocol(fense):
    _, _, ds = fense
    for row in ds:
        refs, chosen_refs, rejected_refs = row["references"], row["chosen_references"], row["rejected_references"]
        if row["category"] == "HC":
            assert chosen_refs == [r for r in refs if r != row["chosen"]]
            assert rejected_refs == [r for r in refs if r != row["rejected"]]
            assert row["chosen"] not in chosen_refs and row["rejected"] not in rejected_refs
        elif row["category"] in ("HI", "HM"):
            assert chosen_refs == rejected_refs == [r for r in refs if r != row["caption_1"]]
            assert row["caption_1"] in refs
        else:
            assert chosen_refs == rejected_refs == refs
        assert len(refs) == 5


def test_reference_removal_on_concrete_rows(fense_dir):
    ds = load_fense(fense_dir / "clotho_eval.json")
    rows = {row["pair_id"]: row for row in ds}
    hc = rows["clotho-0000-HC"]  # caption_2 won: chosen is human_4, its own references drop it but keep human_2
    assert hc["chosen_source"] == "human_4" and hc["vote_sum"] == -1 and hc["preferred"] == 2
    assert len(hc["chosen_references"]) == 4 and hc["rejected"] in hc["chosen_references"]
    assert len(hc["rejected_references"]) == 4 and hc["chosen"] in hc["rejected_references"]

    audiocaps = {row["pair_id"]: row for row in load_fense(fense_dir / "audiocaps_eval.json")}
    hm = audiocaps["audiocaps-0000-HM"]
    assert (
        hm["caption_1"]
        == "A missile launching followed by an explosion and metal screeching as a motor hums in the background."
    )
    assert hm["chosen_references"] == hm["rejected_references"]
    assert hm["caption_1"] not in hm["chosen_references"] and len(hm["chosen_references"]) == 4
    mm = audiocaps["audiocaps-0000-MM_1"]
    assert mm["chosen_references"] == mm["references"] and len(mm["references"]) == 5
    # A clip whose references repeat the judged caption: every copy goes, as in the FENSE experiment code.
    hc = audiocaps["audiocaps-0029-HC"]
    assert hc["references"].count(hc["caption_1"]) == 2
    refs_1 = hc["chosen_references"] if hc["preferred"] == 1 else hc["rejected_references"]
    assert hc["caption_1"] not in refs_1 and len(refs_1) == 3


def test_matches_the_flattened_csv(fense):
    name, fense_dir, ds = fense
    with open(fense_dir / f"{name}_pairs.csv", newline="", encoding="utf-8") as handle:
        csv_rows = {row["pair_id"]: row for row in csv.DictReader(handle) if row["has_majority"] == "1"}
    assert sorted(csv_rows) == sorted(ds["pair_id"])
    for row in ds:
        expected = csv_rows[row["pair_id"]]
        assert row["clip_id"] == f"{expected['dataset']}-{int(expected['entry_index']):04d}"
        assert row["entry_index"] == int(expected["entry_index"])
        assert (row["audio_id"] or "") == expected["audio_id"] and (row["raw_name"] or "") == expected["raw_name"]
        assert row["category"] == expected["category"] and row["slot"] == expected["slot"]
        assert row["caption_1"] == expected["caption_1"] and row["caption_2"] == expected["caption_2"]
        assert row["source_1"] == expected["source_1"] and row["source_2"] == expected["source_2"]
        assert row["votes"] == [int(expected[f"vote_{i}"]) for i in range(1, 5)]
        assert row["vote_sum"] == int(expected["vote_sum"]) and row["preferred"] == int(expected["preferred"])
        assert row["references"] == [expected[f"ref_{i}"] for i in range(1, 6)]


def _write(tmp_path, entries):
    path = tmp_path / "toy_eval.json"
    path.write_text(json.dumps(entries))
    return path


def _entry(**slots):
    return {"references": ["r1", "r2", "r3", "r4", "r5"], "raw_name": "x.wav", **slots}


def test_small_file_and_clip_id_prefix(tmp_path):
    path = _write(
        tmp_path,
        [
            _entry(
                HC=["r1", "r2", "human_1", "human_2", [-1, -1, 0, 1]], MM_1=["m1", "m2", "fc", "rl", 0, [1, 1, 0, 0]]
            ),
            _entry(HI=["r3", "other", "human_3", "idx7", [1, 0, 0, -1]]),
        ],
    )
    ds = load_fense(path)
    assert ds["pair_id"] == ["toy-0000-HC", "toy-0000-MM_1"]
    assert ds[0]["chosen"] == "r2" and ds[0]["chosen_references"] == ["r1", "r3", "r4", "r5"]
    assert ds[1]["votes"] == [1, 1, 0, 0] and ds[1]["audio_id"] is None
    assert load_fense(path, name="mine")["clip_id"][0] == "mine-0000"
    assert len(load_fense(path, drop_ties=False)) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ({"clips": []}, "expected a JSON list"),
        ([_entry(), _entry(HC=["a", "b", "s1", [1, 1, 1, 1]])], r"entry 1, slot 'HC'"),
        ([_entry(MM_2=["a", "b", "s1", "s2", [1, 1, 1]])], r"entry 0, slot 'MM_2'.*4 integers"),
        ([_entry(HM=["a", "b", "s1", "s2", [1, 2, 1, 1]])], r"entry 0, slot 'HM'.*4 integers"),
        ([_entry(HI=["a", "b", "s1", "s2", "1111"])], r"entry 0, slot 'HI'"),
        ([{"raw_name": "x.wav"}], r"entry 0 needs 'references'"),
    ],
)
def test_bad_files_name_the_file_entry_and_slot(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as error:
        load_fense(path)
    assert str(path) in str(error.value)
