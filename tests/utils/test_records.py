import logging
import os
import subprocess
import sys
import textwrap

import pytest

from hfpref.utils.records import OutputLock, OutputLockedError, atomic_write_json, read_json_record


def test_atomic_write_leaves_no_temporary_file_and_round_trips(tmp_path):
    path = atomic_write_json(tmp_path / "stages" / "reward.json", {"seconds": 2.5, "outputs": {"accuracy": 0.9}})
    assert read_json_record(path) == {"seconds": 2.5, "outputs": {"accuracy": 0.9}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["reward.json"]


def test_unserializable_value_keeps_the_old_record(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"done": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"done": object()})
    assert read_json_record(path) == {"done": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize(
    "content",
    [b'{"fingerprint": "abc", "config": {"lr"', b"", b"\xff\xfe not utf-8", b"[1, 2]"],
    ids=["truncated", "empty", "bad-utf8", "not-an-object"],
)
def test_unreadable_record_is_not_done_with_a_warning_naming_it(tmp_path, caplog, content):
    path = tmp_path / "stages" / "rl.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="hfpref.utils.records"):
        assert read_json_record(path) is None
    assert str(path) in caplog.text and "will run again" in caplog.text
    # Rewriting it repairs it.
    atomic_write_json(path, {"ok": 1})
    assert read_json_record(path) == {"ok": 1}


def test_missing_record_is_silently_not_done(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert read_json_record(tmp_path / "nope.json") is None
    assert caplog.text == ""


def test_second_run_cannot_take_the_folder_and_the_error_names_folder_and_pid(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from hfpref.utils.records import OutputLock
        with OutputLock({str(tmp_path)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError) as error:
            OutputLock(tmp_path).acquire()
        assert str(tmp_path) in str(error.value) and f"pid {process.pid}" in str(error.value)
    finally:
        process.stdin.write("\n")
        process.stdin.close()
        process.wait(timeout=60)
    # The lock dies with its holder: the folder is free again.
    with OutputLock(tmp_path) as lock:
        assert (tmp_path / ".hfpref.lock").read_text() == str(os.getpid())
    assert lock._handle is None


def test_lock_is_exclusive_within_one_process_and_released_on_exit(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(OutputLockedError):
            OutputLock(tmp_path).acquire()
    OutputLock(tmp_path).acquire().release()
