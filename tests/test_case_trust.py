"""Issue 10, per-case side: safe ids, per-case records (code, params, input and model hashes), folder
locks, temp files of atomic writes, ``bmstudy validate --deep`` and the exit-code convention."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bmstudy.cases import exit_code
from bmstudy.cli import main
from bmstudy.io.locks import LOCK_NAME, LockError, folder_lock
from bmstudy.io.manifest import REQUIRED_COLUMNS, ManifestError, load_manifest
from bmstudy.plan import PreprocessParams
from bmstudy.utils import (atomic_path, atomic_save_npy, atomic_to_csv, atomic_write_json, clean_stale_temps,
                           id_problem, safe_join, source_hash)

REPO = Path(__file__).resolve().parents[1]
PARAMS = PreprocessParams(target_spacing=None, skull_strip="none")
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def _volume(path: Path, seed: int = 0, shape=(12, 12, 8), mask: bool = False, affine=AFFINE) -> Path:
    rng = np.random.default_rng(seed)
    if mask:
        data = np.zeros(shape, np.uint8)
        data[4:7, 4:7, 3:5] = 1
    else:
        data = (100 + 50 * rng.random(shape)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _rows(folder: Path, ids, split="train", suffix=".nii.gz") -> list[dict]:
    rows = []
    for i, pid in enumerate(ids):
        safe = f"case{i}"
        rows.append(dict(patient_id=pid, site="internal", split=split, age=50, sex="F", cancer_type="lung",
                         image=str(_volume(folder / f"{safe}_img{suffix}", seed=i)),
                         mask=str(_volume(folder / f"{safe}_mask.nii.gz", mask=True)), manual_seconds=10.0))
    return rows


def _manifest(tmp_path: Path, ids=("P0", "P1"), split="train") -> Path:
    path = tmp_path / "data_manifest.csv"
    pd.DataFrame(_rows(tmp_path / "img", ids, split)).to_csv(path, index=False)
    return path


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# --------------------------------------------------------------------------- finding 7: safe ids
HOSTILE = ["../evil", "a/b", "/abs/path", "x/../INT004", "..", ".hidden", "sp ace", ""]


@pytest.mark.parametrize("pid", HOSTILE)
def test_unsafe_ids_are_refused(pid):
    assert id_problem(pid) is not None
    for ok in ("INT004", "p1.v2", "A-b_c", "a."):
        assert id_problem(ok) is None


def test_manifest_names_every_unsafe_row(tmp_path):
    path = _manifest(tmp_path, ids=["ok1", "../evil", "a/b", "/abs/path", "x/../INT004", "Ok1"])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    msg = str(err.value)
    for line, pid in ((3, "../evil"), (4, "a/b"), (5, "/abs/path"), (6, "x/../INT004")):
        assert f"line {line}, patient_id={pid!r}" in msg and "unsafe patient_id" in msg
    assert "ignoring letter case" in msg and "line 7" in msg and "line 2" in msg  # ok1 vs Ok1
    assert len(err.value.problems) == 6


def test_safe_join_stays_inside(tmp_path):
    assert safe_join(tmp_path, "P1", "meta.json") == tmp_path / "P1" / "meta.json"
    assert safe_join(tmp_path, "a..nii.gz") == tmp_path / "a..nii.gz"  # '..' inside a name is harmless
    for bad in ("../evil", "a/b", "/abs/path", "..", ".", ""):
        with pytest.raises(ValueError, match="unsafe name"):
            safe_join(tmp_path, bad)
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        safe_join(tmp_path, "link", "x")


def test_preprocess_and_load_case_refuse_unsafe_ids(tmp_path):
    from bmstudy.preprocessing import load_case, preprocess_cohort

    df = pd.DataFrame(_rows(tmp_path / "img", ["good", "../evil"]))
    out = tmp_path / "sub" / "pre"
    with pytest.raises(ValueError, match=r"row 1 patient_id '\.\./evil'"):
        preprocess_cohort(df, out, PARAMS, progress=False, qc=False)
    assert not (tmp_path / "sub" / "evil").exists()
    with pytest.raises(ValueError, match="unsafe name"):
        load_case(out, "../evil")
    with pytest.raises(ValueError, match="letter case"):
        preprocess_cohort(pd.DataFrame(_rows(tmp_path / "img2", ["INT004", "int004"])), out, PARAMS,
                          progress=False, qc=False)


def _two_column(tmp_path: Path, ids) -> Path:
    rows = [{"patient_id": pid, "image": str(_volume(tmp_path / "in" / f"c{i}.nii.gz", seed=i))}
            for i, pid in enumerate(ids)]
    path = tmp_path / "predict.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_prediction_inputs_refuse_unsafe_and_clashing_ids(tmp_path):
    from bmstudy.inference import predict_cohort
    from bmstudy.inference.inputs import cases_from_input
    from bmstudy.inference.outputs import output_paths

    cfg = {"preprocessing": {"skull_strip": "none", "target_spacing": None}, "inference_patch": 16,
           "inference_stride": 8}
    out = tmp_path / "o" / "pred"
    with pytest.raises(ValueError, match=r"row 3: unsafe patient_id '\.\./evil'"):
        predict_cohort(_two_column(tmp_path, ["ok", "../evil"]), None, out, predict_fn=np.zeros_like, config=cfg,
                       progress=False, warmup=False)
    assert not (tmp_path / "o" / "evil.nii.gz").exists()
    folder = tmp_path / "folder"
    _volume(folder / "P1.nii.gz")
    _volume(folder / "p1.nii.gz", seed=1)
    with pytest.raises(ValueError, match="name the same output files"):
        cases_from_input(folder)
    spaced = tmp_path / "spaced"
    _volume(spaced / "bad name.nii.gz")
    with pytest.raises(ValueError, match="bad name.nii.gz: patient_id 'bad name'"):
        cases_from_input(spaced)
    with pytest.raises(ValueError):
        output_paths(out, "../evil")


# --------------------------------------------------------------------------- findings 2 and 4: per-case records
def test_source_hash_follows_the_module_source(tmp_path, monkeypatch):
    mod = tmp_path / "trust_probe_mod.py"
    mod.write_text("X = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("trust_probe_mod")
    before = source_hash(module, "bmstudy.utils")
    assert before == source_hash("bmstudy.utils", "trust_probe_mod")  # order does not matter
    mod.write_text("X = 1  # a comment\n", encoding="utf-8")
    os.utime(mod, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert source_hash(module, "bmstudy.utils") != before


def _preprocess(manifest_rows, out):
    from bmstudy.preprocessing import preprocess_cohort

    return preprocess_cohort(pd.DataFrame(manifest_rows), out, PARAMS, progress=False, qc=False)


def test_preprocessed_case_records_code_and_is_redone_when_it_differs(tmp_path):
    from bmstudy.preprocessing.store import code_hash

    rows = _rows(tmp_path / "img", ["P0", "P1"])
    out = tmp_path / "pre"
    assert (_preprocess(rows, out)["status"] == "ok").all()
    meta_path = out / "P0" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    assert meta["code_hash"] == code_hash() and meta["input_files"]["image"]["sha256"]
    assert meta["params_hash"] == PARAMS.hash()
    assert _preprocess(rows, out)["cached"].all()
    meta["code_hash"] = "0" * 64  # produced by other code
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    again = _preprocess(rows, out).set_index("patient_id")
    assert not again.loc["P0", "cached"] and again.loc["P1", "cached"]
    assert json.loads(meta_path.read_text(encoding="utf-8"))["code_hash"] == code_hash()


def test_replaced_image_content_at_the_same_path_is_preprocessed_again(tmp_path):
    rows = _rows(tmp_path / "img", ["P0"], suffix=".nii")  # uncompressed: same size for other content
    out = tmp_path / "pre"
    _preprocess(rows, out)
    img = Path(rows[0]["image"])
    size = img.stat().st_size
    before = np.load(out / "P0" / "image.npy")
    data = np.asarray(nib.load(str(img)).dataobj)[::-1].copy()  # same size, other content
    nib.save(nib.Nifti1Image(data, AFFINE), str(img))
    assert img.stat().st_size == size
    again = _preprocess(rows, out)
    assert not again["cached"].iat[0]
    assert not np.array_equal(np.load(out / "P0" / "image.npy"), before)


def _model_dir(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "model_best.keras").write_bytes(weights)
    cfg = {"preprocessing": {"skull_strip": "none", "target_spacing": None}, "inference_patch": 16,
           "inference_stride": 8}
    (path / "train_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return path


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return np.full(batch.shape, 0.7, np.float32)


def test_predicting_with_another_model_redoes_every_case(tmp_path):
    from bmstudy.inference import predict_cohort

    src = _two_column(tmp_path, ["c0", "c1"])
    a, b = _model_dir(tmp_path / "A", b"weights A"), _model_dir(tmp_path / "B", b"weights B")
    out = tmp_path / "pred"
    fn = Counting()
    kw = dict(predict_fn=fn, warmup=False, progress=False)
    df = predict_cohort(src, a, out, **kw)
    assert (df["status"] == "ok").all() and df["model_hash"].nunique() == 1
    n = fn.calls
    predict_cohort(src, a, out, **kw)
    assert fn.calls == n  # same model: nothing runs
    df_b = predict_cohort(src, b, out, **kw)
    assert fn.calls == 2 * n  # OTHER_MODEL: every case predicted again
    assert (df_b["model_hash"] != df["model_hash"]).all() and not df_b["model_hash"].isna().any()
    # replaced input content at the same path: that case is predicted again
    img = tmp_path / "in" / "c1.nii.gz"
    _volume(img, seed=7)
    fn.calls = 0
    predict_cohort(src, b, out, **kw)
    assert fn.calls == n // 2


# --------------------------------------------------------------------------- folder locks
HOLDER = textwrap.dedent("""
    import sys, time
    from bmstudy.io.locks import folder_lock
    with folder_lock(sys.argv[1], "prediction output folder"):
        print("held", flush=True)
        time.sleep(120)
""")


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            encoding="utf-8", cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_fails_at_once_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    out = tmp_path / "pred"
    holder = _hold(out)
    try:
        img = _volume(tmp_path / "c0.nii.gz")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "bmstudy", "predict", "-i", str(img), "-o", str(out), "-m",
                              str(tmp_path / "nomodel")], capture_output=True, text=True, encoding="utf-8", cwd=REPO,
                             timeout=120)
        assert res.returncode == 1, res.stderr
        assert f"in use by PID {holder.pid}" in res.stderr and "since 20" in res.stderr
        with pytest.raises(LockError, match=f"PID {holder.pid}"):
            _preprocess(_rows(tmp_path / "img", ["P0"]), out)
        assert time.perf_counter() - t0 < 100  # failed at once, did not wait for the holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).is_file()  # SIGKILL leaves the lock behind
    with caplog.at_level("WARNING", logger="bmstudy"):
        with folder_lock(out) as lock:
            assert json.loads(lock.read_text(encoding="utf-8"))["pid"] == os.getpid()
    assert f"taking over the lock of PID {holder.pid}" in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_lock_is_reentrant_in_one_process(tmp_path):
    with folder_lock(tmp_path / "x"):
        with folder_lock(tmp_path / "x"):
            pass
        assert (tmp_path / "x" / LOCK_NAME).is_file()
    assert not (tmp_path / "x" / LOCK_NAME).exists()


# --------------------------------------------------------------------------- temp files of atomic writes
def test_temp_files_are_removed_when_the_writer_raises(tmp_path, monkeypatch):
    class Boom(Exception):
        pass

    class PartialFrame:
        def to_csv(self, path, **kwargs):
            Path(path).write_text("half,", encoding="utf-8")
            raise Boom

    with pytest.raises(Boom):
        atomic_to_csv(PartialFrame(), tmp_path / "t.csv")

    def bad_save(path, arr, allow_pickle=False):
        Path(path).write_bytes(b"\x93NUMPY")
        raise Boom

    monkeypatch.setattr(np, "save", bad_save)
    with pytest.raises(Boom):
        atomic_save_npy(tmp_path / "a.npy", np.zeros(3))
    monkeypatch.undo()
    with pytest.raises(Boom):  # a writer that leaves a folder at the temp path (e.g. a SavedModel)
        with atomic_path(tmp_path / "model.keras") as tmp:
            tmp.unlink()
            (tmp / "variables").mkdir(parents=True)
            raise Boom
    (tmp_path / "dest.json").mkdir()  # the final rename fails
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "dest.json", {"a": 1})
    assert _tree(tmp_path) == {"dest.json"}


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from bmstudy.utils import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text("partial")
        print(tmp, flush=True)
        time.sleep(120)
""")


def test_temp_files_of_a_killed_writer_are_cleaned(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "model_best.keras")],
                            stdout=subprocess.PIPE, text=True, encoding="utf-8", cwd=REPO)
    tmp = Path(proc.stdout.readline().strip())
    try:
        with atomic_path(tmp_path / "sub" / "mine.json") as mine:  # a live writer's temp is kept
            assert clean_stale_temps(tmp_path) == []
            assert tmp.is_file() and mine.is_file()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert tmp.is_file()  # SIGKILL runs no clean-up
            assert clean_stale_temps(tmp_path) == [tmp]
            assert mine.is_file()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _tree(tmp_path) == {"sub", "sub/mine.json"}


def test_detached_header_write_failure_leaves_nothing(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from bmstudy.io.volumes import write_volume

    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".mhd"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_volume(np.ones((4, 4, 4), np.float32), np.eye(4), tmp_path / "P1.mhd")
    assert _tree(tmp_path) == set()
    assert sitk  # SimpleITK available


# --------------------------------------------------------------------------- finding 10: validate --deep
def _validate(capsys, *args) -> tuple[int, str]:
    code = main(["validate", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_validate_deep_reports_every_broken_file_in_one_table(tmp_path, capsys):
    path = _manifest(tmp_path, ids=["P0", "P1", "P2", "P3", "P4"])
    df = pd.read_csv(path)
    good = Path(df.loc[0, "image"]).read_bytes()
    Path(df.loc[1, "image"]).write_bytes(good[: len(good) // 2])         # truncated .nii.gz
    Path(df.loc[2, "image"]).write_text("not an image\n", encoding="utf-8")  # text named .nii.gz
    Path(df.loc[3, "mask"]).write_bytes(b"")                              # 0 bytes
    _volume(Path(df.loc[4, "mask"]), mask=True, shape=(12, 12, 9))       # other grid
    df.loc[0, "age"] = 7                                                  # and a field problem
    df.to_csv(path, index=False)
    code, shallow = _validate(capsys, path)
    assert code == 1 and "age must be" in shallow and "P1" not in shallow  # without --deep: files exist
    code, out = _validate(capsys, path, "--deep")
    assert code == 1 and "5 problem(s)" in out
    lines = out.splitlines()
    assert lines[1].split() == ["row", "patient_id", "column", "file", "problem"]
    table = "\n".join(lines[2:])
    assert "P0" in table and "age must be" in table
    assert "P1" in table and "truncated" in table
    assert "P2" in table and "not a readable NIfTI" in table
    assert "P3" in table and "empty file (0 bytes)" in table
    assert "P4" in table and "not on the image's grid" in table and "shape (12, 12, 9)" in table


def test_validate_deep_accepts_a_good_manifest(tmp_path, capsys):
    code, out = _validate(capsys, _manifest(tmp_path), "--deep")
    assert code == 0 and "2 patients, valid (headers checked)" in out


def test_validate_clear_messages_for_empty_semicolon_and_no_training(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    code, out = _validate(capsys, empty)
    assert code == 1 and "the manifest is empty" in out
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(REQUIRED_COLUMNS) + "\n", encoding="utf-8")
    code, out = _validate(capsys, header_only)
    assert code == 1 and "header but no rows" in out
    semi = tmp_path / "semi.csv"
    pd.read_csv(_manifest(tmp_path)).to_csv(semi, sep=";", index=False)
    code, out = _validate(capsys, semi)
    assert code == 1 and "looks ;-separated" in out
    ext = tmp_path / "ext"
    ext.mkdir()
    code, out = _validate(capsys, _manifest(ext, split="external"))
    assert code == 1 and "no training rows" in out
    assert _validate(capsys, ext / "data_manifest.csv", "--no-train-ok")[0] == 0


# --------------------------------------------------------------------------- exit codes
def test_exit_code_convention():
    assert exit_code([]) == 0
    assert exit_code([{"status": "ok"}, {"status": "ok"}]) == 0
    assert exit_code([{"status": "ok"}, {"status": "excluded"}]) == 3
    assert exit_code([{"status": "ok"}, {"status": "failed"}]) == 3
    assert exit_code([{"status": "failed"}, {"status": "excluded"}]) == 1
    assert exit_code(pd.DataFrame({"status": ["ok", "failed"]})) == 3


def test_preprocess_cli_exits_3_when_a_case_is_excluded(tmp_path, capsys):
    path = _manifest(tmp_path, ids=["P0", "P1"])
    df = pd.read_csv(path)
    _volume(Path(df.loc[1, "mask"]), mask=True, shape=(12, 12, 9))  # misaligned: excluded
    args = ["preprocess", "--manifest", str(path), "--out", str(tmp_path / "pre"), "--no-resample",
            "--skull-strip", "none", "--no-qc"]
    assert main(args) == 3
    assert "excluded=1" in capsys.readouterr().out
    df.loc[0, "mask"] = df.loc[1, "mask"]
    df.to_csv(path, index=False)
    assert main(args) == 1  # none ok
