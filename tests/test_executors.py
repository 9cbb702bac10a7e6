"""Cohort stages on Dask (issue 13): run_cases through a LocalCluster gives the local run's outputs."""
from __future__ import annotations

import inspect
import json
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed", reason="dask.distributed not installed (pip install distributed==2026.8.0)")

from bmstudy import cases  # noqa: E402
from bmstudy.cases import run_cases  # noqa: E402
from bmstudy.executors import (DaskExecutor, current_executor, make_executor, set_default_executor,  # noqa: E402
                                use_executor)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> pd.DataFrame:
    from bmstudy.synthetic import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    manifest = generate_cohort(out, profile="tiny", n_internal=2, n_external=1, n_jobs=1, progress=False)
    from bmstudy.io.manifest import load_manifest

    return load_manifest(manifest)


def _preprocess(cohort: pd.DataFrame, out: Path, executor: Executor | None) -> list[dict]:
    """The per-case preprocessing function of preprocess_cohort, run through run_cases (no folder lock)."""
    from bmstudy.plan import PreprocessParams
    from bmstudy.preprocessing import cohort as pc
    from bmstudy.preprocessing.cohort import _process_case

    rows = cohort.to_dict("records")
    res = run_cases(_process_case, rows, kwargs={"out_dir": out, "params": PreprocessParams(), "code": pc.code_hash()},
                    executor=executor, progress=False)
    return res.rows


def _outputs(out: Path) -> dict[str, dict]:
    found = {}
    for case in sorted(p for p in out.iterdir() if p.is_dir()):
        meta = json.loads((case / "meta.json").read_text(encoding="utf-8"))
        meta.pop("seconds"), meta["skull_strip"].pop("seconds")
        found[case.name] = {"meta": meta, **{f.stem: np.load(f) for f in sorted(case.glob("*.npy"))}}
    return found


def _strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_local_cluster_outputs_equal_local_run(cohort, tmp_path):
    local_rows = _preprocess(cohort, tmp_path / "local", None)
    ex = make_executor("local", 2, processes=False)
    try:
        assert isinstance(ex, DaskExecutor) and ex.n_workers() == 2
        dask_rows = _preprocess(cohort, tmp_path / "dask", ex)
    finally:
        ex.shutdown()
    assert [r["status"] for r in local_rows] == ["ok"] * 3
    assert _strip_times(dask_rows) == _strip_times(local_rows)
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "dask")
    assert sorted(a) == sorted(b) == sorted(cohort["patient_id"])
    for pid in a:
        assert a[pid]["meta"] == b[pid]["meta"], pid
        for name in ("image", "mask", "brain"):
            np.testing.assert_array_equal(a[pid][name], b[pid][name], err_msg=f"{pid} {name}")


def _die_once(case: dict, marker_dir: str) -> dict:
    """Kill the worker process the first time a case runs (a lost worker); succeed when rerun."""
    import os

    marker = Path(marker_dir) / f"{case['patient_id']}.started"
    if not marker.exists():
        marker.write_text("1", encoding="utf-8")
        os._exit(1)
    return {"value": case["x"] * 2, "pid": os.getpid()}


def test_lost_worker_case_is_retried(tmp_path):
    """A worker dying mid-case loses nothing: the scheduler reruns its case (idempotent outputs)."""
    import cloudpickle

    # the spawned workers cannot import this test module: pickle its functions by value
    cloudpickle.register_pickle_by_value(inspect.getmodule(_die_once))
    try:
        with use_executor("local", 2, processes=True) as ex:
            res = run_cases(_die_once, [{"patient_id": "c1", "x": 1}, {"patient_id": "c2", "x": 5}],
                            kwargs={"marker_dir": str(tmp_path)}, executor=ex, progress=False)
    finally:
        cloudpickle.unregister_pickle_by_value(inspect.getmodule(_die_once))
    assert [r["status"] for r in res.rows] == ["ok", "ok"], res.rows
    assert [r["value"] for r in res.rows] == [2, 10]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.started", "c2.started"]


def test_make_executor_none_and_errors():
    assert make_executor(None, 4) is None and make_executor("", 1) is None
    with pytest.raises(ValueError, match="n_jobs"):
        make_executor("local", 0)
    with pytest.raises(OSError, match="tcp://127.0.0.1:9"):
        make_executor("tcp://127.0.0.1:9", timeout=2)


def test_use_executor_context():
    assert current_executor() is None
    ex = make_executor("local", 1, processes=False)
    try:
        with use_executor(ex) as got:
            assert got is ex and current_executor() is ex
            with use_executor(None):
                assert current_executor() is None
            assert current_executor() is ex
        assert current_executor() is None
        assert ex.n_workers() == 1  # a passed executor is not closed by the block
    finally:
        ex.shutdown()
    with use_executor("local", 1, processes=False) as own:
        assert isinstance(own, DaskExecutor)
        assert own.submit(sum, [1, 2, 3]).result(timeout=30) == 6
    assert own._closed  # made by the block: shut down with it


def test_default_executor_outside_blocks():
    try:
        ex = set_default_executor("local", 1, processes=False)
        assert current_executor() is ex
        with use_executor(None):
            assert current_executor() is None  # an explicit block wins over the default
        assert set_default_executor(None) is None and current_executor() is None
        assert ex._closed  # the default made from a string is shut down when replaced
    finally:
        set_default_executor(None)


@pytest.mark.skipif("current_executor" not in inspect.getsource(cases),
                    reason="bmstudy.cases.run_cases does not consult executors.current_executor yet (lead wires the hook)")
def test_run_cases_uses_current_executor():
    seen = []

    class Spy(Executor):
        def submit(self, fn, /, *args, **kwargs):
            from concurrent.futures import Future

            seen.append(args[1])
            fut: Future = Future()
            fut.set_result(fn(*args, **kwargs))
            return fut

    with use_executor(Spy()):
        res = run_cases(lambda c: {"v": c["patient_id"]}, [{"patient_id": "a"}, {"patient_id": "b"}], progress=False)
    assert sorted(seen) == ["a", "b"] and [r["v"] for r in res.rows] == ["a", "b"]
