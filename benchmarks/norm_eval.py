"""Whole-volume validation of one trained model under different BatchNorm statistics (issue 11's cause).

A model trained with BatchNorm on batches of 1-2 mostly lesion-centred patches has no single right
set of eval-mode statistics. This script takes a training folder (``bmstudy train`` or
``benchmarks/train_seeds.py``; ``--which last`` reads ``checkpoint/last.keras``, e.g. after killing a
run at an early epoch) and predicts its held-out validation cases with the validation code of
:mod:`bmstudy.training.validation` (same window, stride, brain restriction and threshold as the run)
under each of these statistics:

- ``saved``: the running statistics stored in the file (the EMA of training batches, or the precise-BN
  estimate when the run used ``precise_bn_patches``);
- ``precise_head``: re-estimated on ``--bn-patches`` random head patches of the training cases (what
  ``precise_bn_patches`` does);
- ``precise_train``: re-estimated on patches drawn as training draws them (the run's lesion fraction,
  head background, no augmentation);
- ``window_stats``: no running statistics at all: each window normalised by its own batch statistics
  (``training=True`` with dropout off), i.e. what the network saw during training.

Per mode and case it reports Dice, predicted and true volume (mL) and false-positive components.
Writes ``OUT/norm_eval.json`` and prints it. GroupNorm/InstanceNorm models get ``saved`` only.

    python benchmarks/norm_eval.py --model-dir runs/diag/seed1/model --preprocessed runs/diag/preprocessed \\
        --which last
    python benchmarks/norm_eval.py ... --window 64 --stride 32   # GroupNorm: window size vs training patch
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--preprocessed", required=True, help="the folder the run was trained from")
    p.add_argument("--which", choices=("best", "last"), default="last")
    p.add_argument("--bn-patches", type=int, default=16)
    p.add_argument("--modes", nargs="+", default=["saved", "precise_head", "precise_train", "window_stats"])
    p.add_argument("--window", type=int, default=None, help="sliding window (default: the run's validation window)")
    p.add_argument("--stride", type=int, default=None, help="window stride (default: the run's validation stride)")
    p.add_argument("--out", default=None, help="default: MODEL_DIR/norm_eval")
    return p.parse_args()


def _rows(predict_fn: Any, cases: list[Any], patch: int, stride: int) -> list[dict[str, Any]]:
    """Per-case Dice, lesion detection, FP components (as ``validate_cases``) and volumes (mL)."""
    import numpy as np

    from bmstudy.evaluation.lesions import lesion_table
    from bmstudy.evaluation.voxel import confusion_counts, metrics_from_counts
    from bmstudy.training.validation import predict_volume

    out = []
    for case in cases:
        pred = predict_volume(case, predict_fn, patch, stride) >= 0.5
        truth = np.asarray(case.mask) > 0
        table = lesion_table(pred, truth, case.spacing)
        true_rows = table[table["origin"] == "truth"]
        big = true_rows[true_rows["size_bin"] == ">10 mm"]
        ml = float(np.prod(case.spacing)) / 1000.0
        out.append({"patient_id": case.patient_id, "dice": float(metrics_from_counts(*confusion_counts(pred, truth))["dice"]),
                    "lesion_sensitivity": float(true_rows["matched"].mean()) if len(true_rows) else 1.0,
                    "lesion_sensitivity_gt10": float(big["matched"].mean()) if len(big) else float("nan"),
                    "n_true": len(true_rows), "n_detected": int(true_rows["matched"].sum()),
                    "n_fp": int((~table.loc[table["origin"] == "pred", "matched"]).sum()),
                    "pred_ml": round(float(pred.sum()) * ml, 2), "true_ml": round(float(truth.sum()) * ml, 2)})
    return out


def main() -> int:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    args = _parse()
    import numpy as np

    from bmstudy.plan import TrainConfig
    from bmstudy.training.model import load_trained
    from bmstudy.training.norm import _all_layers, norm_layers, recalibrate_batchnorm
    from bmstudy.training.sampling import PatchSampler, load_cases
    from bmstudy.training.validation import load_validation_cases, summarise
    from bmstudy.utils import atomic_write_json

    model_dir, pre = Path(args.model_dir), Path(args.preprocessed)
    record = json.loads((model_dir / "train_config.json").read_text(encoding="utf-8"))
    cfg = TrainConfig.from_dict(record["config"])
    cases = load_validation_cases(pre, record["val_cases"])
    patch = int(args.window or cfg.val_window or cfg.inference_patch)
    stride = min(int(args.stride or cfg.val_stride or cfg.inference_stride), patch)
    train_cases = load_cases(pre, record["train_cases"])

    def batches(lesion_fraction: float) -> list[Any]:
        s = PatchSampler(train_cases, cfg.patch_size, lesion_fraction, None, seed=cfg.seed + 2_000_003,
                         center_jitter=cfg.center_jitter, background="head")
        images, _ = s.arrays(args.bn_patches)
        return [images[i:i + cfg.batch_size] for i in range(0, len(images), cfg.batch_size)]

    result: dict[str, Any] = {"model_dir": str(model_dir), "which": args.which, "norm": cfg.norm,
                              "window": patch, "stride": stride, "bn_patches": args.bn_patches, "modes": {}}
    modes = args.modes if cfg.norm == "batch" else ["saved"]
    for mode in modes:
        model, _ = load_trained(model_dir, args.which)  # fresh statistics for every mode
        drops = [l for l in _all_layers(model) if hasattr(l, "rate") and "dropout" in type(l).__name__.lower()]
        if mode == "precise_head":
            recalibrate_batchnorm(model, batches(0.0))
        elif mode == "precise_train":
            recalibrate_batchnorm(model, batches(cfg.lesion_fraction))
        if mode == "window_stats":
            for d in drops:
                d.rate = 0.0

            def predict_fn(b: Any, m: Any = model) -> Any:
                return np.asarray(m(b, training=True), dtype=np.float32)
        else:
            def predict_fn(b: Any, m: Any = model) -> Any:
                return np.asarray(m.predict_on_batch(b), dtype=np.float32)
        t0 = time.perf_counter()
        rows = _rows(predict_fn, cases, patch, stride)
        import pandas as pd

        bn = norm_layers(model, "batch")
        result["modes"][mode] = {"summary": summarise(pd.DataFrame(rows)), "cases": rows,
                                 "first_bn_moving_var_mean": float(np.mean(bn[0].moving_variance)) if bn else None,
                                 "seconds": round(time.perf_counter() - t0, 1)}
        print(mode, json.dumps(result["modes"][mode]["summary"]), flush=True)
    out = Path(args.out) if args.out else model_dir / "norm_eval"
    atomic_write_json(out / "norm_eval.json", result)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
