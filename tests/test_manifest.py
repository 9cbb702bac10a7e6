"""Manifest validation: each error names the file, line and column."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bmstudy.io.manifest import REQUIRED_COLUMNS, ManifestError, load_manifest, validate_manifest, write_manifest


def _make(tmp_path: Path, n: int = 4) -> Path:
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(n):
        img = tmp_path / "img" / f"P{i}_t1c.nii.gz"
        msk = tmp_path / "img" / f"P{i}_mask.nii.gz"
        img.write_bytes(b"x")
        msk.write_bytes(b"x")
        rows.append(dict(patient_id=f"P{i}", site="internal", split="", age=50 + i, sex="M" if i % 2 else "F",
                         cancer_type="lung", image=f"img/P{i}_t1c.nii.gz", mask=f"img/P{i}_mask.nii.gz",
                         manual_seconds=100.0 + i))
    path = tmp_path / "data_manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _edit(path: Path, **changes) -> Path:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (row, col), value in changes.get("cells", {}).items():
        df.loc[row, col] = value
    for col in changes.get("drop", []):
        df = df.drop(columns=col)
    df.to_csv(path, index=False)
    return path


def test_valid_manifest_resolves_paths(tmp_path):
    path = _make(tmp_path)
    df = load_manifest(path)
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert len(df) == 4
    assert all(Path(p).is_absolute() and Path(p).exists() for p in df["image"])
    assert df["age"].dtype == float
    assert (df["split"] == "").all()


@pytest.mark.parametrize("column", ["patient_id", "age", "image", "manual_seconds"])
def test_missing_column(tmp_path, column):
    path = _edit(_make(tmp_path), drop=[column])
    with pytest.raises(ManifestError, match=f"missing required column.*{column}"):
        load_manifest(path)


def test_duplicate_ids_named(tmp_path):
    path = _edit(_make(tmp_path), cells={(2, "patient_id"): "P0"})
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    msg = str(err.value)
    assert "duplicate patient_id" in msg and "line 2" in msg and "line 4" in msg and "'P0'" in msg


@pytest.mark.parametrize(
    "column,value,expect",
    [
        ("age", "7", "age must be a number"),
        ("age", "abc", "age must be a number"),
        ("sex", "X", "sex must be one of"),
        ("cancer_type", "breastish", "cancer_type must be one of"),
        ("split", "validation", "split must be one of"),
        ("manual_seconds", "-3", "manual_seconds must be"),
        ("site", "", "site must not be empty"),
    ],
)
def test_bad_values_name_row_and_column(tmp_path, column, value, expect):
    path = _edit(_make(tmp_path), cells={(1, column): value})
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    msg = str(err.value)
    assert expect in msg
    assert "line 3" in msg and f"column {column!r}" in msg and "patient_id='P1'" in msg
    assert str(path) in msg


def test_missing_file_named(tmp_path):
    path = _make(tmp_path)
    (tmp_path / "img" / "P3_mask.nii.gz").unlink()
    with pytest.raises(ManifestError, match=r"line 5.*'mask'.*file not found.*P3_mask"):
        load_manifest(path)
    assert len(load_manifest(path, check_files=False)) == 4


def test_case_insensitive_values_normalised(tmp_path):
    path = _edit(_make(tmp_path), cells={(0, "sex"): "f", (0, "cancer_type"): "Lung", (0, "split"): "TEST"})
    df = load_manifest(path)
    assert (df.loc[0, "sex"], df.loc[0, "cancer_type"], df.loc[0, "split"]) == ("F", "lung", "test")


def test_empty_manual_seconds_allowed(tmp_path):
    path = _edit(_make(tmp_path), cells={(0, "manual_seconds"): ""})
    df = load_manifest(path)
    assert np.isnan(df.loc[0, "manual_seconds"])


def test_write_round_trip_relative_paths(tmp_path):
    path = _make(tmp_path)
    df = load_manifest(path)
    out = tmp_path / "copy.csv"
    write_manifest(df, out)
    raw = pd.read_csv(out, dtype=str)
    assert raw.loc[0, "image"] == "img/P0_t1c.nii.gz"
    again = load_manifest(out)
    pd.testing.assert_frame_equal(again.drop(columns=[]), df, check_like=False)


def test_unparseable_and_absent(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="missing required column"):
        validate_manifest(pd.DataFrame({"patient_id": ["a"]}))


def test_brain_truth_resolved_and_kept_when_copied_elsewhere(tmp_path):
    """``brain_truth`` is a path column: a study manifest written into a run folder still finds it
    (the default study failed in its cohort notebook when only image/mask/brain_mask were resolved)."""
    path = _make(tmp_path)
    truth = tmp_path / "img" / "P0_brain.nii.gz"
    truth.write_bytes(b"x")
    _edit(path, cells={(0, "brain_truth"): "img/P0_brain.nii.gz", (1, "brain_truth"): ""})
    df = load_manifest(path)
    assert Path(df.loc[0, "brain_truth"]) == truth.resolve()
    assert df.loc[1, "brain_truth"] == ""
    run = tmp_path / "runs" / "r" / "01_cohort"
    run.mkdir(parents=True)
    again = load_manifest(write_manifest(df, run / "study_manifest.csv"))
    assert Path(again.loc[0, "brain_truth"]) == truth.resolve()
