import json
import multiprocessing

import pytest

from hfpref.annotate.storage import append_answer, check_answer, read_answer_file, read_answers


def _record(annotator, item, answer="tie", answer_id=None):
    return {
        "answer_id": answer_id or f"{annotator}-{item}-{answer}",
        "annotator": annotator,
        "item_id": item,
        "answer": answer,
    }


def _writer(output_dir, annotator, start, count):
    for i in range(start, start + count):
        append_answer(output_dir, _record(annotator, f"item-{i:04d}", answer_id=f"{annotator}-{i:06d}"))


def test_concurrent_writers_lose_and_interleave_nothing(tmp_path):
    # Four processes append to one annotator's file, two to another, at the same time.
    jobs = [("alice", k * 200, 200) for k in range(4)] + [("bob", k * 200, 200) for k in range(2)]
    processes = [multiprocessing.get_context("fork").Process(target=_writer, args=(tmp_path, *job)) for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    for annotator, expected in (("alice", 800), ("bob", 400)):
        lines = (tmp_path / "answers" / f"{annotator}.jsonl").read_text().splitlines()
        assert len(lines) == expected
        ids = {json.loads(line)["answer_id"] for line in lines}  # every line is whole JSON
        assert ids == {f"{annotator}-{i:06d}" for i in range(expected)}
    assert len(read_answers(tmp_path)) == 1200


def test_latest_answer_wins_and_a_resent_answer_counts_once(tmp_path):
    append_answer(tmp_path, _record("alice", "x", "caption_1", answer_id="first-answer"))
    append_answer(tmp_path, _record("alice", "x", "caption_2", answer_id="revised-answer"))
    append_answer(tmp_path, _record("alice", "y", "tie", answer_id="third-answer"))
    append_answer(tmp_path, _record("alice", "x", "caption_1", answer_id="first-answer"))  # a resend
    assert [r["answer_id"] for r in read_answer_file(tmp_path / "answers" / "alice.jsonl")] == [
        "first-answer",
        "revised-answer",
        "third-answer",
    ]
    latest = {r["item_id"]: r["answer"] for r in read_answers(tmp_path, "alice")}
    assert latest == {"x": "caption_2", "y": "tie"}


def test_a_torn_last_line_is_skipped_then_cut_before_the_next_append(tmp_path, caplog):
    append_answer(tmp_path, _record("alice", "x", answer_id="whole-answer"))
    path = tmp_path / "answers" / "alice.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"answer_id": "torn-ans')  # a crash in the middle of a write
    assert [r["answer_id"] for r in read_answers(tmp_path)] == ["whole-answer"]
    assert "torn last line" in caplog.text
    append_answer(tmp_path, _record("alice", "y", answer_id="after-crash"))
    assert path.read_text().count("\n") == 2 and "torn-ans" not in path.read_text()
    assert [r["answer_id"] for r in read_answers(tmp_path)] == ["whole-answer", "after-crash"]


def test_a_malformed_line_names_file_and_line(tmp_path):
    append_answer(tmp_path, _record("alice", "x", answer_id="whole-answer"))
    path = tmp_path / "answers" / "alice.jsonl"
    path.write_text(path.read_text() + "not json\n" + path.read_text())
    with pytest.raises(ValueError, match=r"alice.jsonl: line 2 is not valid JSON"):
        read_answers(tmp_path)


@pytest.mark.parametrize(
    "task, answer, correction, message",
    [
        ("pairwise", "both_wrong", "  ", "needs a correction"),
        ("pairwise", "caption_1", "a dog", "goes with"),
        ("pairwise", "A", None, "not one of"),
        ("binary", "match", "a dog", "goes with"),
    ],
)
def test_invalid_answers_say_why(task, answer, correction, message):
    with pytest.raises(ValueError, match=message):
        check_answer(task, answer, correction)


def test_annotator_names_cannot_escape_the_folder(tmp_path):
    with pytest.raises(ValueError, match="annotator name"):
        append_answer(tmp_path, _record("../evil", "x"))
