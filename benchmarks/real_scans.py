"""Benchmark: a trained model on real contrast-enhanced T1 scans, run through ``bmstudy predict`` as a user would.

Usage: python benchmarks/real_scans.py [--model runs/default/03_training] [--real-dir ../shared/data/real]
                                       [--out DIR] [--min-ml 0.1] [--cases N] [--predict-args '--tta'] [--keep]

For every case under ``--real-dir`` (BraTS 2015 T1c ``T1c_subtrMeanDivStd.nii.gz`` with ``OTMultiClass.nii.gz``
labels, label 4 = enhancing tumour, and ``brainmask.nii.gz``; see ../shared/data/README.md) it runs
``bmstudy predict -i IMAGE -o OUT/<case> -m MODEL --brain-mask BRAINMASK`` in a subprocess and reports per
case: enhancing tumour detected (any overlap with label 4), Dice vs label 4, predicted volume, predicted
26-connected components >= ``--min-ml`` mL that do not touch label 4 (``fp_components``) or any tumour
label (``fp_outside_tumour``), and whether the output mask's grid (shape + affine) equals the input's.
Prints one JSON object (``cases``, ``summary``); exits 2 when the model or the real data are missing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGE, LABELS, BRAIN = "T1c_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz", "brainmask.nii.gz"


def find_cases(real_dir: Path) -> list[Path]:
    """Case folders holding the image, the labels and the brain mask."""
    return sorted(p.parent for p in real_dir.rglob(IMAGE) if (p.parent / LABELS).is_file() and (p.parent / BRAIN).is_file())


def predict_case(case: Path, model: Path, out: Path, extra: list[str]) -> tuple[Path, float, str]:
    """Run ``bmstudy predict`` on one case; return (mask path, seconds, log tail)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bmstudy.cli", "predict", "-i", str(case / IMAGE), "-o", str(out), "-m", str(model),
           "--brain-mask", str(case / BRAIN), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace")
    secs = time.perf_counter() - t0
    tail = (proc.stdout + proc.stderr)[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name}: bmstudy predict exited {proc.returncode}: {tail}")
    masks = [p for p in out.glob("*.nii.gz") if not p.name.endswith("_prob.nii.gz")]
    if len(masks) != 1:
        raise RuntimeError(f"{case.name}: expected one mask in {out}, found {[p.name for p in masks]}")
    return masks[0], secs, tail


def score_case(case: Path, pred_path: Path, min_ml: float) -> dict:
    """Detection, Dice, false-positive components and grid check of one prediction."""
    import nibabel as nib
    from scipy import ndimage

    src, lab_img, pred_img = nib.load(case / IMAGE), nib.load(case / LABELS), nib.load(pred_path)
    labels = np.asarray(lab_img.dataobj)
    pred = np.asarray(pred_img.dataobj) > 0
    grid_ok = pred.shape == src.shape[:3] and np.allclose(pred_img.affine, src.affine, atol=1e-4)
    ref = labels == 4
    tumour = labels > 0
    vox_ml = float(np.prod(src.header.get_zooms()[:3])) / 1000.0
    comp, n = ndimage.label(pred, structure=np.ones((3, 3, 3), bool)) if grid_ok else (None, 0)
    fp = fp_out = 0
    for k in range(1, n + 1):
        c = comp == k
        if c.sum() * vox_ml < min_ml:
            continue
        fp += not (c & ref).any()
        fp_out += not (c & tumour).any()
    inter = int((pred & ref).sum()) if grid_ok else 0
    denom = int(pred.sum() + ref.sum())
    return {"case": case.name, "detected": bool(inter > 0), "dice": round(2 * inter / denom, 4) if denom else 1.0,
            "pred_ml": round(float(pred.sum()) * vox_ml, 2), "ref_ml": round(float(ref.sum()) * vox_ml, 2),
            "n_components": int(n), "fp_components": int(fp), "fp_outside_tumour": int(fp_out),
            "grid_equal": bool(grid_ok)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/default/03_training", help="training output folder")
    ap.add_argument("--real-dir", default=None, help="real scans (default: ../shared/data/real beside the repository)")
    ap.add_argument("--out", default=None, help="prediction folder (default: a temporary folder, removed)")
    ap.add_argument("--min-ml", type=float, default=0.1, help="smallest false-positive component counted (mL)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary predictions")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases (a quick end-to-end check)")
    ap.add_argument("--predict-args", default="", help="extra 'bmstudy predict' options, e.g. '--tta'")
    args = ap.parse_args()
    from bmstudy.synthetic.preview import default_real_dir

    model, real = Path(args.model), Path(args.real_dir) if args.real_dir else default_real_dir()
    if not (model / "model_best.keras").is_file():
        print(json.dumps({"error": f"no trained model at {model} (model_best.keras)"}))
        return 2
    cases = find_cases(real) if real.is_dir() else []
    if not cases:
        print(json.dumps({"error": f"no real scans under {real}"}))
        return 2
    cases = cases[: args.cases] if args.cases else cases
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bmstudy_real_"))
    rows = []
    try:
        for case in cases:
            try:
                mask, secs, _ = predict_case(case, model, out / case.name, args.predict_args.split())
            except RuntimeError as exc:  # a failed prediction is reported, the other cases still run
                rows.append({"case": case.name, "detected": False, "dice": 0.0, "fp_components": -1,
                             "grid_equal": False, "error": str(exc)[-500:]})
                continue
            rows.append({**score_case(case, mask, args.min_ml), "predict_s": round(secs, 1), "error": ""})
    finally:
        if not args.out and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    summary = {"n_cases": len(rows), "detected": sum(r["detected"] for r in rows),
               "median_dice": float(np.median([r["dice"] for r in rows])),
               "max_fp_components": max(r["fp_components"] for r in rows),
               "failed": sum(bool(r["error"]) for r in rows),
               "target_met": (sum(r["detected"] for r in rows) >= 5 and not any(r["error"] for r in rows)
                              and max(r["fp_components"] for r in rows) <= 2),
               "all_grids_equal": all(r["grid_equal"] for r in rows), "model": str(model)}
    print(json.dumps({"cases": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
