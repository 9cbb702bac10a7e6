"""Atomic writes and hashing helpers."""
from __future__ import annotations

import os

import numpy as np
import pytest

from bmstudy.utils import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text, params_hash


def test_atomic_write_replaces_and_uses_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text(encoding="utf-8") == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_atomic_path_failure_keeps_old_content_and_no_temp(tmp_path):
    target = tmp_path / "b.json"
    atomic_write_json(target, {"x": np.int64(3)})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise RuntimeError("killed mid-write")
    assert target.read_text(encoding="utf-8").strip().startswith("{") and '"x": 3' in target.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_atomic_save_npy_round_trip_and_suffix(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = atomic_save_npy(tmp_path / "c.npy", arr)
    np.testing.assert_array_equal(np.load(out), arr)


def test_params_hash_ignores_key_order_and_sees_values():
    assert params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})
