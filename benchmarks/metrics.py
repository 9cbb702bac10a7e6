"""Benchmark: voxel metrics and DeLong on a 300^3 volume, against the scikit-learn route.

Usage: python benchmarks/metrics.py [--size 300] [--lesions 6] [--no-sklearn] [--no-baseline] [--boot-patients 50]

Builds a volume with a few spherical lesions and a noisy float32 probability map, then prints wall
seconds for: bmstudy.evaluation.case_metrics vs the scikit-learn route (precision/recall/f1/jaccard/
MCC/confusion matrix/roc_auc_score on the flattened arrays, timed once), lesion_table,
score_histogram, DeLong unpaired on two such volumes (array form, the same test written literally as
Sun & Xu with scipy's rankdata as a baseline, and the histogram form) and the patient-level
cluster bootstrap (``--boot-patients`` per group x 65536 bins x 2000 resamples). The largest absolute
difference between the two routes' metrics is printed too.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def make_volume(size: int, n_lesions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    truth = np.zeros(shape, dtype=bool)
    for _ in range(n_lesions):
        r = rng.uniform(2, size / 15)
        c = rng.uniform(r + 1, size - r - 1, 3)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, size)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        ax = np.ogrid[tuple(sl)]
        d2 = sum((g - ci) ** 2 for g, ci in zip(ax, c))
        truth[sl] |= d2 <= r * r
    prob = rng.random(shape, dtype=np.float32)
    prob *= 0.55
    prob[truth] += 0.4
    return prob, truth


def _t(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--lesions", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-sklearn", action="store_true", help="skip the (slow) scikit-learn route")
    ap.add_argument("--no-baseline", action="store_true", help="skip the rankdata-based DeLong baseline")
    ap.add_argument("--boot-patients", type=int, default=50)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()

    from bmstudy import evaluation as M
    from bmstudy import statistics as S

    prob, truth = make_volume(args.size, args.lesions, args.seed)
    n = prob.size
    print(f"volume {prob.shape} = {n / 1e6:.1f} M voxels, lesion voxels {int(truth.sum())}")

    ours, t_ours = _t(M.case_metrics, prob, truth)
    print(f"case_metrics (8 metrics incl. exact AUC): {t_ours:.2f} s")

    if not args.no_sklearn:
        from sklearn import metrics as skm

        def sk_route(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
            yt = t.ravel()
            yp = p.ravel() >= 0.5
            tn, fp, fn, tp = skm.confusion_matrix(yt, yp, labels=[False, True]).ravel()
            f1 = skm.f1_score(yt, yp)
            return {"precision": skm.precision_score(yt, yp), "recall": skm.recall_score(yt, yp), "f1": f1,
                    "iou": skm.jaccard_score(yt, yp), "dice": f1, "specificity": tn / (tn + fp),
                    "mcc": skm.matthews_corrcoef(yt, yp), "auc": skm.roc_auc_score(yt, p.ravel())}

        ref, t_sk = _t(sk_route, prob, truth)
        err = max(abs(ours[k] - ref[k]) for k in ours)
        print(f"scikit-learn route (timed once):          {t_sk:.2f} s  -> speed-up x{t_sk / t_ours:.1f}; "
              f"max |difference| {err:.2e}")

    spacing = (1.0, 1.0, 1.0)
    _, t_les = _t(M.lesion_table, prob >= 0.5, truth, spacing)
    print(f"lesion_table (26-conn labelling of both masks): {t_les:.2f} s")
    (pos_a, neg_a), t_hist = _t(M.score_histogram, prob, truth)
    print(f"score_histogram (65536 bins): {t_hist:.2f} s")

    prob_b, truth_b = make_volume(args.size, args.lesions, args.seed + 1)
    res, t_dl = _t(S.delong_unpaired, truth, prob, truth_b, prob_b)
    print(f"DeLong unpaired, arrays (2 x {n / 1e6:.1f} M voxels): {t_dl:.2f} s  z={res.z:.3f} p={res.p_value:.3g}")
    if not args.no_baseline:
        from scipy.stats import rankdata

        def sun_xu_rankdata(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
            """Literal Sun & Xu (2014) with three scipy midrank calls (the common 'fast DeLong' code)."""
            y, s = y.ravel(), s.ravel()
            pos, neg = s[y], s[~y]
            m, n = pos.size, neg.size
            tz = rankdata(np.concatenate([pos, neg]))
            v10 = (tz[:m] - rankdata(pos)) / n
            v01 = 1.0 - (tz[m:] - rankdata(neg)) / m
            return float(v10.mean()), float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)

        def baseline():
            (a1, v1), (a2, v2) = sun_xu_rankdata(truth, prob), sun_xu_rankdata(truth_b, prob_b)
            return (a1 - a2) / np.sqrt(v1 + v2)

        z_base, t_base = _t(baseline)
        print(f"DeLong unpaired, Sun & Xu with scipy rankdata (baseline): {t_base:.2f} s  z={z_base:.3f}  "
              f"-> speed-up x{t_base / t_dl:.1f}")
    pos_b, neg_b = M.score_histogram(prob_b, truth_b)
    del prob_b, truth_b
    res_h, t_dlh = _t(S.delong_unpaired_hist, pos_a, neg_a, pos_b, neg_b)
    print(f"DeLong unpaired, histograms: {t_dlh * 1e3:.1f} ms  z={res_h.z:.3f} (quantised scores; "
          f"x{t_dl / t_dlh:.0f} faster than the array form)")

    rng = np.random.default_rng(1)
    k = args.boot_patients

    def fake(p, q):  # per-patient histograms: thinned copies of the volume's histograms
        return [(rng.binomial(p, 0.02), rng.binomial(q, 0.02)) for _ in range(k)]

    ha, hb = fake(pos_a, neg_a), fake(pos_b, neg_b)
    boot, t_boot = _t(S.cluster_bootstrap_auc_diff, ha, hb, n_boot=args.n_boot, seed=0)
    print(f"cluster bootstrap ({k}+{k} patients x 65536 bins x {args.n_boot} resamples): {t_boot:.2f} s  "
          f"diff={boot['diff']:.4f} CI=({boot['ci_low']:.4f}, {boot['ci_high']:.4f})")


if __name__ == "__main__":
    main()
