"""A tiny fake preprocessed cohort in the ``bmstudy.preprocessing.cohort`` output format (for data/train tests)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

PARAMS = {"spacing_mm": 0.833, "skull_strip": "none", "normalize": "zscore"}


def make_case(shape=(40, 44, 36), lesions=((20, 22, 18, 5.0),), seed=0):
    """Smooth noisy 'brain' z-scored inside an ellipsoid, bright spherical lesions; returns image, mask, brain."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = (np.array(shape) - 1) / 2
    brain = (((grid - centre) / (np.array(shape) * 0.45)) ** 2).sum(-1) <= 1
    mask = np.zeros(shape, np.uint8)
    for x, y, z, r in lesions:
        mask |= (((grid - np.array([x, y, z])) ** 2).sum(-1) <= r * r).astype(np.uint8)
    image = rng.normal(0, 0.3, shape).astype(np.float32) + 3.0 * mask
    image[~brain] = 0
    vals = image[brain]
    image[brain] = (vals - vals.mean()) / vals.std()
    mask[~brain] = 0
    return image.astype(np.float32), mask, brain.astype(np.uint8)


def write_cohort(root: Path, n: int = 3, shape=(40, 44, 36), extra_failed: bool = True) -> pd.DataFrame:
    """Write ``n`` ok train cases (+1 failed, +1 test case) and return a manifest-like DataFrame."""
    root = Path(root)
    rows, report = [], []
    for i in range(n + 1):
        pid = f"P{i:03d}"
        split = "train" if i < n else "test"
        lesions = ((12 + 2 * i, 14, 16, 4.0), (28, 30, 20, 1.5))
        image, mask, brain = make_case(shape, lesions, seed=i)
        d = root / pid
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "image.npy", image)
        np.save(d / "mask.npy", mask)
        np.save(d / "brain.npy", brain)
        (d / "meta.json").write_text(json.dumps({"patient_id": pid, "params": PARAMS}), encoding="utf-8")
        rows.append({"patient_id": pid, "split": split})
        report.append({"patient_id": pid, "status": "ok", "reason": ""})
    if extra_failed:
        rows.append({"patient_id": "PBAD", "split": "train"})
        report.append({"patient_id": "PBAD", "status": "failed", "reason": "unreadable"})
    pd.DataFrame(report).to_csv(root / "preprocess_report.csv", index=False)
    return pd.DataFrame(rows)
