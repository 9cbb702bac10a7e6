"""Benchmark: evaluate_cohort per-case cost on clinical-size volumes (prints seconds per stage).

Usage: python benchmarks/evaluate.py [--shape 240 240 155] [--cases 3] [--jobs 1]
Writes synthetic truth masks and probability maps to a temporary folder, then times one
evaluate_cohort call and the stages of one case (reading, case_metrics, lesion analysis, histogram,
BraTS lesion-wise scores, surface distances, FROC candidates).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    from bmstudy import evaluation as M
    from bmstudy.evaluation import evaluate_cohort

    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "preds").mkdir()
        rows = []
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        for i in range(args.cases):
            truth = np.zeros(shape, np.uint8)
            for _ in range(5):
                c = rng.integers(20, np.array(shape) - 20)
                r = rng.uniform(2, 12)
                truth[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = 1
            prob = np.clip(truth * 0.7 + rng.uniform(0, 0.45, shape), 0, 1).astype(np.float32)
            nib.save(nib.Nifti1Image(truth, np.eye(4)), str(root / f"c{i}_mask.nii.gz"))
            nib.save(nib.Nifti1Image(prob, np.eye(4)), str(root / "preds" / f"c{i}_prob.nii.gz"))
            rows.append({"patient_id": f"c{i}", "split": "test", "site": "internal", "age": 60.0, "sex": "F",
                         "cancer_type": "lung", "mask": str(root / f"c{i}_mask.nii.gz"), "manual_seconds": 100.0})
        t0 = time.perf_counter()
        evaluate_cohort(pd.DataFrame(rows), root / "preds", root / "eval", progress=False, n_jobs=args.jobs)
        total = time.perf_counter() - t0
        print(f"evaluate_cohort: {args.cases} case(s) of {shape} ({np.prod(shape) / 1e6:.1f} M voxels) "
              f"in {total:.2f} s = {total / args.cases:.2f} s/case (n_jobs={args.jobs})")
        stages = {
            "read truth+prob (nibabel, gz)": lambda: (np.asanyarray(nib.load(str(root / "c0_mask.nii.gz")).dataobj),
                                                       np.asanyarray(nib.load(str(root / "preds" / "c0_prob.nii.gz")).dataobj)),
        }
        truth, prob = stages["read truth+prob (nibabel, gz)"]()
        pred = prob >= 0.5
        stages.update({
            "case_metrics": lambda: M.case_metrics(prob, truth),
            "lesion_table": lambda: M.lesion_table(pred, truth, (1, 1, 1)),
            "lesion_metrics": lambda: M.lesion_metrics(pred, truth, (1, 1, 1)),
            "score_histogram": lambda: M.score_histogram(prob, truth),
            "brats_lesion_metrics": lambda: M.brats_lesion_metrics(pred, truth, (1, 1, 1)),
            "surface_metrics (hd95, nsd)": lambda: M.surface_metrics(pred, truth, (1, 1, 1), 1.0, empty_distance=374.0),
            "froc lesion_scores (prob >= 0.1)": lambda: M.lesion_scores(prob, truth, (1, 1, 1), 0.1),
        })
        for name, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            print(f"  {name:32s} {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
