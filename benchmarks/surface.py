"""Benchmark: surface metrics, BraTS lesion-wise scores and the positives-only AUC on a 300^3 volume.

Usage: python benchmarks/surface.py [--size 300] [--lesions 10] [--seed 0] [--repeat 3]

Builds a volume with ``--lesions`` spherical lesions (radius 2 to size/15 voxels), a prediction made of
the same spheres shifted by one voxel with radii off by one plus three false-positive blobs, and a
noisy float32 probability map (lesion voxels shifted up by 0.4, as benchmarks/metrics.py). Prints one
JSON object: best-of-``--repeat`` wall seconds of bmstudy.evaluation.surface.surface_metrics (HD95 +
NSD at 1 mm + ASSD), hd95, brats_lesion_metrics, auc_score_fast against voxel.auc_score and
scikit-learn's roc_auc_score (timed once), and the values (the AUCs must agree to 1e-12).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _ball(mask: np.ndarray, c: np.ndarray, r: float) -> None:
    lo = np.maximum(np.floor(c - r).astype(int), 0)
    hi = np.minimum(np.ceil(c + r).astype(int) + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    ax = np.ogrid[sl]
    mask[sl] |= sum((g - ci) ** 2 for g, ci in zip(ax, c)) <= r * r


def make_case(size: int, n_lesions: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, pred, prob)`` of one synthetic case."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    truth = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    for _ in range(n_lesions):
        r = rng.uniform(2, size / 15)
        c = rng.uniform(r + 2, size - r - 2, 3)
        _ball(truth, c, r)
        _ball(pred, c + rng.choice([-1.0, 1.0], 3), max(1.0, r + rng.choice([-1.0, 1.0])))
    for _ in range(3):
        _ball(pred, rng.uniform(10, size - 10, 3), rng.uniform(1.5, 4))
    prob = rng.random(shape, dtype=np.float32)
    prob *= 0.55
    prob[truth] += 0.4
    return truth, pred, prob


def _best(fn, repeat: int, *a, **k):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--lesions", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's AUC (slow)")
    args = ap.parse_args()

    from bmstudy.evaluation import auc, brats, surface, voxel

    truth, pred, prob = make_case(args.size, args.lesions, args.seed)
    sp = (1.0, 1.0, 1.0)
    out: dict = {"shape": list(truth.shape), "lesions": args.lesions, "truth_voxels": int(truth.sum()),
                 "pred_voxels": int(pred.sum())}
    sm, out["surface_metrics_s"] = _best(surface.surface_metrics, args.repeat, pred, truth, sp, 1.0)
    _, out["hd95_s"] = _best(surface.hd95, args.repeat, pred, truth, sp)
    out["surface_metrics_anisotropic_s"] = _best(surface.surface_metrics, args.repeat, pred, truth,
                                                 (0.9, 0.9, 1.5), 1.0)[1]
    bm, out["brats_lesion_metrics_s"] = _best(brats.brats_lesion_metrics, args.repeat, pred, truth, sp)
    fast, out["auc_score_fast_s"] = _best(auc.auc_score_fast, args.repeat, prob, truth)
    ref, out["voxel_auc_score_s"] = _best(voxel.auc_score, args.repeat, prob, truth)
    out["values"] = {**{k: round(v, 6) for k, v in sm.items()},
                     **{f"brats_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in bm.items()},
                     "auc_fast": fast, "auc_voxel": ref}
    out["auc_fast_minus_voxel"] = abs(fast - ref)
    if not args.no_sklearn:
        from sklearn.metrics import roc_auc_score
        sk, out["sklearn_roc_auc_s"] = _best(roc_auc_score, 1, truth.ravel(), prob.ravel())
        out["auc_fast_minus_sklearn"] = abs(fast - sk)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
