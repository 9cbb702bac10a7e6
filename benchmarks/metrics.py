"""Benchmark: voxel metrics, surface and lesion-wise metrics on a 300^3 volume; MONAI and scikit-learn.

Usage: python benchmarks/metrics.py [--size 300] [--lesions 10] [--repeat 3] [--no-sklearn] [--no-monai]
                                    [--stats] [--no-baseline] [--boot-patients 50]

Builds a volume with ``--lesions`` spherical lesions and a noisy float32 probability map, then times
(best of ``--repeat``): bmstudy.evaluation.case_metrics (the paper's 8 voxel metrics incl. the exact
AUC), MONAI's 7 count metrics on the same arrays (``get_confusion_matrix`` +
``compute_confusion_matrix_metric`` for precision, sensitivity, F1, threat score (IoU), specificity,
MCC, plus ``DiceMetric``), the two exact AUC routes (``voxel.auc_score``, ``auc.auc_score_fast``), the
surface metrics (HD95 + NSD), the BraTS-METS lesion-wise scores and the FROC candidates; the
scikit-learn route once, for the values (max |difference| printed). ``--stats`` adds the DeLong and
cluster-bootstrap timings. Prints one JSON object at the end.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def make_volume(size: int, n_lesions: int, seed: int, clean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Spherical lesions and a noisy float32 map; ``clean``: background < 0.05 except 3 FP blobs (0.7)."""
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
    if clean:  # a realistic map: background below 0.05 (under the FROC candidate threshold) but 3 FP blobs
        prob[~truth] *= 0.05 / 0.55
        for _ in range(3):
            c = rng.integers(10, size - 10, 3)
            prob[c[0] - 2:c[0] + 2, c[1] - 2:c[1] + 2, c[2] - 2:c[2] + 2] = 0.7
    return prob, truth


def _t(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def _best(repeat: int, fn, *a, **k):
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        out, t = _t(fn, *a, **k)
        best = min(best, t)
    return out, best


def monai_route(prob: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MONAI's 7 count metrics of ``prob >= 0.5`` (tensors shaped (batch, channel, *spatial))."""
    import torch
    from monai.metrics import DiceMetric, compute_confusion_matrix_metric, get_confusion_matrix

    yp = torch.from_numpy(prob >= 0.5)[None, None].float()
    yt = torch.from_numpy(truth)[None, None].float()
    cm = get_confusion_matrix(yp, yt, include_background=True)
    names = {"precision": "precision", "recall": "sensitivity", "f1": "f1 score", "iou": "threat score",
             "specificity": "specificity", "mcc": "matthews correlation coefficient"}
    out = {k: float(compute_confusion_matrix_metric(v, cm).reshape(-1)[0]) for k, v in names.items()}
    dm = DiceMetric(include_background=True, reduction="none")
    out["dice"] = float(dm(yp, yt).reshape(-1)[0])
    return out


def sk_route(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    yt = t.ravel()
    yp = p.ravel() >= 0.5
    tn, fp, fn, tp = skm.confusion_matrix(yt, yp, labels=[False, True]).ravel()
    f1 = skm.f1_score(yt, yp)
    return {"precision": skm.precision_score(yt, yp), "recall": skm.recall_score(yt, yp), "f1": f1,
            "iou": skm.jaccard_score(yt, yp), "dice": f1, "specificity": tn / (tn + fp),
            "mcc": skm.matthews_corrcoef(yt, yp), "auc": skm.roc_auc_score(yt, p.ravel())}


def voxel_and_surface(args: argparse.Namespace, prob: np.ndarray, truth: np.ndarray) -> dict:
    """Timings and agreement of the voxel, AUC, surface and lesion-wise metrics (one JSON-ready dict)."""
    from bmstudy import evaluation as M
    from bmstudy.evaluation.auc import auc_score_fast
    from bmstudy.evaluation.voxel import auc_score

    r: dict = {"voxels": int(prob.size), "lesion_voxels": int(truth.sum()), "lesions": args.lesions}
    ours, r["case_metrics_s"] = _best(args.repeat, M.case_metrics, prob, truth)
    a1, r["auc_score_s"] = _best(args.repeat, auc_score, prob, truth)
    a2, r["auc_score_fast_s"] = _best(args.repeat, auc_score_fast, prob, truth)
    r["auc_routes_abs_diff"] = abs(a1 - a2)
    if not args.no_monai:
        try:
            import monai

            mon, r["monai_7_s"] = _best(args.repeat, monai_route, prob, truth)
            r["monai_version"] = monai.__version__
            r["speedup_8_vs_monai_7"] = r["monai_7_s"] / r["case_metrics_s"]
            r["monai_max_abs_diff"] = max(abs(ours[k] - mon[k]) for k in mon)
        except ImportError as exc:
            r["monai"] = f"skipped: {exc}"
    if not args.no_sklearn:
        ref, r["sklearn_s"] = _t(sk_route, prob, truth)
        r["sklearn_max_abs_diff"] = max(abs(ours[k] - ref[k]) for k in ours)
    # surface and lesion-wise metrics on a realistic map (the noisy one has ~9 % speckle voxels >= 0.5 and
    # ~80 % >= the FROC candidate threshold 0.1: one component spanning the volume)
    prob, truth = make_volume(args.size, args.lesions, args.seed, clean=True)
    pred, sp = prob >= 0.5, (1.0, 1.0, 1.0)
    r["clean_map_pred_voxels"] = int(pred.sum())
    _, r["surface_metrics_s"] = _best(args.repeat, M.surface_metrics, pred, truth, sp, 1.0, empty_distance=374.0)
    _, r["brats_lesion_metrics_s"] = _best(args.repeat, M.brats_lesion_metrics, pred, truth, sp)
    _, r["froc_lesion_scores_s"] = _best(1, M.lesion_scores, prob, truth, sp, 0.1)
    _, r["lesion_table_s"] = _best(1, M.lesion_table, pred, truth, sp)
    return r


def main() -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--lesions", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-sklearn", action="store_true", help="skip the (slow) scikit-learn route")
    ap.add_argument("--no-monai", action="store_true", help="skip MONAI")
    ap.add_argument("--stats", action="store_true", help="also time DeLong and the cluster bootstrap")
    ap.add_argument("--no-baseline", action="store_true", help="skip the rankdata-based DeLong baseline")
    ap.add_argument("--boot-patients", type=int, default=50)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()

    prob, truth = make_volume(args.size, args.lesions, args.seed)
    result = {"size": args.size, **voxel_and_surface(args, prob, truth)}
    if args.stats:
        stats_timings(args, prob, truth)
    print(json.dumps(result, indent=1))


def stats_timings(args: argparse.Namespace, prob: np.ndarray, truth: np.ndarray) -> None:
    """DeLong (arrays, literal Sun & Xu baseline, histograms) and the cluster bootstrap, printed."""
    from bmstudy import evaluation as M
    from bmstudy import statistics as S

    n = prob.size
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
