"""Shared fixtures. Tests needing ../shared/data skip with a reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BMSTUDY_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_DIR = SHARED_DATA / "real" / "brats2015_deepmedic"
ASAH_CSV = SHARED_DATA / "reference" / "aSAH.csv"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def real_cases() -> list[Path]:
    """Folders of the six real BraTS CE-T1 cases (skip when ../shared/data is absent)."""
    if not REAL_DIR.is_dir():
        pytest.skip(f"real scans not available at {REAL_DIR} (../shared/data is a developer-only resource)")
    cases = sorted(p for p in REAL_DIR.iterdir() if (p / "T1c_subtrMeanDivStd.nii.gz").exists())
    if not cases:
        pytest.skip(f"no real cases under {REAL_DIR}")
    return cases


@pytest.fixture(scope="session")
def asah_csv() -> Path:
    """pROC's aSAH reference data (skip when ../shared/data is absent)."""
    if not ASAH_CSV.is_file():
        pytest.skip(f"pROC reference data not available at {ASAH_CSV}")
    return ASAH_CSV


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A tiny synthetic cohort (profile 'tiny'); returns the manifest path."""
    from bmstudy.synthetic import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    return generate_cohort(out, profile="tiny", seed=0)
