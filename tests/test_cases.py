"""bmstudy.cases.run_cases: the one per-case loop."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pandas as pd
import pytest

from bmstudy.cases import CaseError, broken_pool_hint, run_cases, status_counts


class BadInput(ValueError):
    pass


def work(case, scale=1):
    pid = case["patient_id"]
    if pid == "boom":
        raise RuntimeError("exploded")
    if pid == "bad":
        raise BadInput(f"case {pid!r}: unreadable")
    if pid == "file":
        raise CaseError("truncated", case=pid, path="/data/file.nii.gz")
    return {"value": case["x"] * scale}


CASES = [{"patient_id": p, "x": i} for i, p in enumerate(["a", "boom", "b", "bad", "file", "c"])]


def _check(rows):
    by = {r["patient_id"]: r for r in rows}
    assert [r["patient_id"] for r in rows] == [c["patient_id"] for c in CASES]  # input order
    assert by["a"]["status"] == "ok" and by["a"]["value"] == 0 and by["c"]["value"] == 50
    assert by["boom"]["status"] == "failed" and "boom" in by["boom"]["reason"] and "exploded" in by["boom"]["reason"]
    assert by["bad"]["status"] == "excluded" and "unreadable" in by["bad"]["reason"]
    assert by["file"]["status"] == "failed" and "/data/file.nii.gz" in by["file"]["reason"]


def test_serial_errors_stay_per_case(tmp_path):
    res = run_cases(work, CASES, kwargs={"scale": 10}, excluded=(BadInput,), progress=False,
                    status_path=tmp_path / "status.csv", columns=["patient_id", "status", "reason", "value"])
    _check(res.rows)
    table = pd.read_csv(tmp_path / "status.csv")
    assert list(table.columns[:4]) == ["patient_id", "status", "reason", "value"] and len(table) == 6
    assert res.counts() == {"ok": 3, "excluded": 1, "failed": 2}


def test_process_pool_and_executor_give_the_same_rows():
    serial = run_cases(work, CASES, kwargs={"scale": 10}, excluded=(BadInput,), progress=False).rows
    pooled = run_cases(work, CASES, kwargs={"scale": 10}, excluded=(BadInput,), n_jobs=2, progress=False).rows
    with ThreadPoolExecutor(2) as ex:
        threaded = run_cases(work, CASES, kwargs={"scale": 10}, excluded=(BadInput,), executor=ex, progress=False).rows
    _check(pooled)
    assert pooled == serial == threaded


def die(case):
    if case["patient_id"] == "die":
        os._exit(3)  # a worker killed (for memory, say): the pool breaks
    return {}


def test_a_dead_worker_fails_its_cases_with_a_hint():
    cases = [{"patient_id": "die"}, {"patient_id": "b"}]
    with ProcessPoolExecutor(1) as pool:  # one worker: "b" waits behind "die" and is lost with the pool
        res = run_cases(die, cases, executor=pool, progress=False)
    by = {r["patient_id"]: r for r in res.rows}
    assert by["die"]["status"] == "failed" and "die" in by["die"]["reason"]
    assert "a worker process died" in by["die"]["reason"] and "n_jobs=1" in by["die"]["reason"]


def test_broken_pool_hint_names_the_main_guard_under_spawn():
    for method, guard in (("spawn", True), ("fork", False)):
        pool = ProcessPoolExecutor(1, mp_context=mp.get_context(method))
        try:
            hint = broken_pool_hint(pool)
        finally:
            pool.shutdown()
        assert "n_jobs=1" in hint and ('if __name__ == "__main__":' in hint) == guard


def test_finished_cases_are_skipped():
    seen = []

    def fn(case):
        seen.append(case["patient_id"])
        return {"value": 1}

    res = run_cases(fn, CASES[:3], is_finished=lambda c: {"status": "ok", "value": 7} if c["patient_id"] == "a" else None,
                    progress=False)
    assert seen == ["boom", "b"]
    assert res.rows[0] == {"patient_id": "a", "status": "ok", "value": 7, "cached": True}
    assert all(r["cached"] is False for r in res.rows[1:])


def test_bad_arguments():
    with pytest.raises(ValueError, match="duplicate case ids"):
        run_cases(work, [{"patient_id": "a", "x": 1}] * 2, progress=False)
    with pytest.raises(ValueError, match="n_jobs"):
        run_cases(work, CASES, n_jobs=0, progress=False)
    assert status_counts([{"status": "failed"}, {"status": "ok"}, {"status": "weird"}]) == {"ok": 1, "failed": 1, "weird": 1}
