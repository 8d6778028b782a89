import hashlib
import io
import json
import logging
import os
import time

import numpy as np
import pytest

from hfpref.encoders import EmbeddingCache
from hfpref.encoders import cache as cache_module


def vector(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def temp_files(root) -> list:
    return [path for path in root.rglob("*.tmp")]


def test_keys_are_deterministic_and_distinct():
    clip = np.linspace(-1, 1, 1000, dtype=np.float32)
    key = EmbeddingCache.key_for_audio(clip, 16_000)
    assert key == EmbeddingCache.key_for_audio(clip.copy(), 16_000)
    assert key == EmbeddingCache.key_for_audio(clip.astype(np.float64), 16_000)
    assert key != EmbeddingCache.key_for_audio(clip, 48_000)
    assert key != EmbeddingCache.key_for_audio(clip[:-1], 16_000)
    assert len(key) == 64 and int(key, 16) >= 0

    text_key = EmbeddingCache.key_for_text("a dog barks")
    assert text_key == EmbeddingCache.key_for_text("a dog barks")
    assert text_key != EmbeddingCache.key_for_text("A dog barks")
    with pytest.raises(TypeError):
        EmbeddingCache.key_for_text(3)


def test_put_get_round_trip_and_stats(tmp_path):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    assert cache.get("text", key) is None
    cache.put("text", key, vector(0).astype(np.float64))
    loaded = cache.get("text", key)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, vector(0))
    assert cache.stats == {"hits": 1, "misses": 1, "writes": 1, "corrupt": 0}
    assert cache.path_for("text", key) == tmp_path / "model-a" / "text" / key[:2] / f"{key}.vec"

    # A new object over the same directory (another process, a later run) sees the entry.
    assert EmbeddingCache(tmp_path, "model-a").get("text", key) is not None
    cache.reset_stats()
    assert cache.stats["hits"] == 0


def test_get_many_put_many(tmp_path):
    cache = EmbeddingCache(tmp_path, "model-a")
    keys = [EmbeddingCache.key_for_text(text) for text in ("one", "two", "three")]
    cache.put_many("text", keys[:2], np.stack([vector(1), vector(2)]))
    found = cache.get_many("text", keys)
    np.testing.assert_array_equal(found[0], vector(1))
    np.testing.assert_array_equal(found[1], vector(2))
    assert found[2] is None
    with pytest.raises(ValueError, match="2 keys but 1 vectors"):
        cache.put_many("text", keys[:2], [vector(1)])


def test_fingerprints_and_kinds_are_isolated(tmp_path):
    key = EmbeddingCache.key_for_text("a dog barks")
    EmbeddingCache(tmp_path, "model-a").put("text", key, vector(0))
    assert EmbeddingCache(tmp_path, "model-b").get("text", key) is None
    assert EmbeddingCache(tmp_path, "model-a").get("audio", key) is None


def test_fingerprint_json_is_written_once(tmp_path):
    EmbeddingCache(tmp_path, "model-a", metadata={"model_name": "tiny", "embedding_dim": 8})
    EmbeddingCache(tmp_path, "model-a", metadata={"model_name": "ignored"})
    description = json.loads((tmp_path / "model-a" / "fingerprint.json").read_text())
    assert description == {"fingerprint": "model-a", "model_name": "tiny", "embedding_dim": 8}


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "a b"])
def test_unsafe_names_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="fingerprint"):
        EmbeddingCache(tmp_path, bad)
    cache = EmbeddingCache(tmp_path, "model-a")
    with pytest.raises(ValueError, match="kind"):
        cache.get(bad, EmbeddingCache.key_for_text("x"))
    with pytest.raises(ValueError, match="key"):
        cache.get("text", bad or "zz")


def test_put_rejects_non_vectors(tmp_path):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("x")
    with pytest.raises(ValueError, match="1-D"):
        cache.put("text", key, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        cache.put("text", key, np.zeros(0, dtype=np.float32))


def test_write_dying_half_way_leaves_no_entry(tmp_path, monkeypatch):
    key = EmbeddingCache.key_for_text("a dog barks")
    real_save = np.save

    def half_save(handle, array, allow_pickle=False):
        # Write half of the real bytes, then die as a killed process or full disk would.
        probe = tmp_path / "probe.npy"
        real_save(probe, array)
        payload = probe.read_bytes()
        handle.write(payload[: len(payload) // 2])
        handle.flush()
        raise OSError("No space left on device")

    monkeypatch.setattr(cache_module.np, "save", half_save)
    cache = EmbeddingCache(tmp_path, "model-a")
    with pytest.raises(OSError, match="No space"):
        cache.put("text", key, vector(0))
    monkeypatch.undo()

    assert not cache.path_for("text", key).exists()
    assert temp_files(tmp_path / "model-a") == []
    fresh = EmbeddingCache(tmp_path, "model-a")
    assert fresh.get("text", key) is None
    fresh.put("text", key, vector(0))
    np.testing.assert_array_equal(fresh.get("text", key), vector(0))


def test_crash_between_write_and_rename_leaves_only_a_stray_temp_file(tmp_path, monkeypatch):
    key = EmbeddingCache.key_for_text("a dog barks")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C right before the rename

    cache = EmbeddingCache(tmp_path, "model-a")
    monkeypatch.setattr(cache_module.os, "replace", crash)
    # A hard kill would not even clean up: keep the temporary file to mimic it.
    monkeypatch.setattr(cache_module.os, "unlink", lambda path: None)
    with pytest.raises(KeyboardInterrupt):
        cache.put("text", key, vector(0))
    monkeypatch.undo()

    strays = temp_files(tmp_path / "model-a")
    assert len(strays) == 1 and strays[0].parent == cache.path_for("text", key).parent
    assert strays[0].name != cache.path_for("text", key).name
    fresh = EmbeddingCache(tmp_path, "model-a")
    assert fresh.get("text", key) is None
    fresh.put("text", key, vector(1))
    np.testing.assert_array_equal(fresh.get("text", key), vector(1))
    assert strays[0].exists()  # ignored, never read


def test_truncated_entry_is_a_miss_and_is_deleted(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    cache.put("text", key, vector(0))
    path = cache.path_for("text", key)
    path.write_bytes(path.read_bytes()[:-5])

    with caplog.at_level(logging.WARNING, logger="hfpref.encoders.cache"):
        assert cache.get("text", key) is None
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert not path.exists()
    assert cache.stats["corrupt"] == 1 and cache.stats["misses"] == 1

    cache.put("text", key, vector(0))
    np.testing.assert_array_equal(cache.get("text", key), vector(0))


@pytest.mark.parametrize(
    "payload",
    [np.zeros((2, 4), dtype=np.float32), np.zeros(4, dtype=np.int64), np.array([{"a": 1}], dtype=object)],
    ids=["matrix", "int", "pickle"],
)
def test_wrong_content_is_a_miss(tmp_path, payload):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    path = cache.path_for("text", key)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as handle:
        np.save(handle, payload, allow_pickle=True)
    assert cache.get("text", key) is None
    assert not path.exists()
    assert cache.stats["corrupt"] == 1


def test_empty_entry_is_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    path = cache.path_for("text", key)
    path.parent.mkdir(parents=True)
    path.touch()
    assert cache.get("text", key) is None
    assert cache.stats["corrupt"] == 1


def test_cache_dir_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", os.fspath(tmp_path))
    cache = EmbeddingCache("~/embeddings", "model-a")
    assert cache.root == tmp_path / "embeddings" / "model-a"


def test_flipped_byte_is_caught_by_the_checksum(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    cache.put("text", key, vector(0))
    path = cache.path_for("text", key)
    data = bytearray(path.read_bytes())
    data[-_checksum_size() - 3] ^= 0x01  # one bit of the last float: still a valid, finite .npy
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="hfpref.encoders.cache"):
        assert cache.get("text", key) is None
    assert "checksum mismatch" in caplog.text and str(path) in caplog.text
    assert not path.exists() and cache.stats["corrupt"] == 1


def _checksum_size() -> int:
    return cache_module._CHECKSUM_SIZE


def _entry_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    return data + cache_module._CHECKSUM_MARKER + hashlib.sha256(data).digest()


def test_non_finite_vectors_are_refused_on_put_and_discarded_on_get(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    with pytest.raises(ValueError, match="NaN or inf"):
        cache.put("text", key, np.array([0.1, np.nan], np.float32))
    assert not cache.path_for("text", key).exists()
    path = cache.path_for("text", key)
    path.parent.mkdir(parents=True)
    path.write_bytes(_entry_bytes(np.array([0.1, np.inf], np.float32)))  # a checksummed but poisoned entry
    with caplog.at_level(logging.WARNING, logger="hfpref.encoders.cache"):
        assert cache.get("text", key) is None
    assert "NaN or inf" in caplog.text and not path.exists()


def test_symlinks_out_of_the_cache_are_refused_and_their_targets_untouched(tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "secret.npy"
    target.write_bytes(_entry_bytes(vector(7)))
    cache = EmbeddingCache(tmp_path / "cache", "model-a")
    key = EmbeddingCache.key_for_text("a dog barks")
    path = cache.path_for("text", key)
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="hfpref.encoders.cache"):
        assert cache.get("text", key) is None
    assert "outside the cache" in caplog.text and not path.is_symlink() and target.exists()

    # A linked folder is refused too, and a write goes inside the cache, not through the link.
    other = EmbeddingCache.key_for_text("rain falls")
    folder = cache.path_for("text", other).parent
    folder.symlink_to(outside, target_is_directory=True)
    assert cache.get("text", other) is None and not folder.is_symlink()
    folder.symlink_to(outside, target_is_directory=True)
    cache.put("text", other, vector(1))
    assert not folder.is_symlink() and sorted(p.name for p in outside.iterdir()) == ["secret.npy"]
    np.testing.assert_array_equal(cache.get("text", other), vector(1))

    # Links that stay inside the cache are fine.
    inside = cache.path_for("text", EmbeddingCache.key_for_text("wind"))
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.symlink_to(cache.path_for("text", other))
    np.testing.assert_array_equal(cache.get("text", EmbeddingCache.key_for_text("wind")), vector(1))


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(tmp_path):
    root = tmp_path / "model-a" / "text" / "ab"
    root.mkdir(parents=True)
    stale, fresh = root / ".abcd.npy.1.tmp", root / ".abcd.npy.2.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 2 * cache_module.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    cache_module._SWEPT_ROOTS.discard(os.path.realpath(tmp_path / "model-a"))
    EmbeddingCache(tmp_path, "model-a")
    assert not stale.exists() and fresh.exists()


def test_entries_of_the_older_layout_are_removed_once(tmp_path, caplog):
    key = EmbeddingCache.key_for_text("a dog barks")
    legacy = tmp_path / "model-a" / "text" / key[:2] / f"{key}.npy"
    legacy.parent.mkdir(parents=True)
    np.save(legacy, vector(0))
    other = legacy.parent / "notes.npy"  # not an entry name: left alone
    np.save(other, vector(1))
    cache_module._SWEPT_ROOTS.discard(os.path.realpath(tmp_path / "model-a"))
    with caplog.at_level(logging.INFO, logger="hfpref.encoders.cache"):
        cache = EmbeddingCache(tmp_path, "model-a")
    assert not legacy.exists() and other.exists() and "1 embedding cache entries of an older layout" in caplog.text
    assert cache.get("text", key) is None and cache.stats["corrupt"] == 0
