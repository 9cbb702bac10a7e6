"""Train the ``cpu`` profile with several seeds, one after another, and report how repeatable the model is.

For each seed: train (``bmstudy.training.train``) on the manifest's ``train`` split, predict the
``test`` and ``external`` splits with the best model (``bmstudy.inference.predict_cohort``), evaluate
(``bmstudy.evaluation.evaluate_cohort``), and report the median internal-test Dice, the median
external Dice, the lesion-wise sensitivity for lesions > 10 mm (test split, pooled), the epoch kept,
the lowest whole-volume validation Dice after epoch 3, and wall times. The summary adds the spread
(max - min) of each across seeds and checks the issue-11 targets. Prints JSON (also written to
``OUT/train_seeds.json``; each seed's row as soon as it is done to ``OUT/seedN/result.json``). A killed
run resumes: training continues from its checkpoint, preprocessing and prediction skip finished cases.

    python benchmarks/train_seeds.py                          # default cohort, seeds 0 1 2 (~22-50 min/seed on 2 cores)
    python benchmarks/train_seeds.py --seeds 2 --stop-after 6 --param hard_negative_fraction=0.5
                                     # the first 6 epochs of the schedule: the early validation trajectory only
    python benchmarks/train_seeds.py --manifest /tmp/tiny/data_manifest.csv --epochs 1 --steps 2 \\
        --param val_window=64 --param val_stride=64 --inference-patch 64   # end-to-end smoke run

The default cohort is ``data_manifest.csv`` at the repository root; its files are generated with
``bmstudy synth --out data/synthetic --profile default --seed 0`` (done here when missing).
Preprocessing is shared by all seeds (cached in ``OUT/preprocessed``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default=str(ROOT / "data_manifest.csv"))
    p.add_argument("--out", default=str(ROOT / "runs" / "train_seeds"))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per epoch")
    p.add_argument("--inference-patch", type=int, default=None, help="sliding window for test/external")
    p.add_argument("--param", action="append", default=[], help="TrainConfig override FIELD=JSON (repeatable)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop each seed after this many epochs of the full schedule and report only its "
                        "validation trajectory (no prediction or evaluation): a quick look at early training")
    p.add_argument("--inference-precision", default=None,
                   help="precision of the test/external predictions (default: the profile's plan; float32 as before 2026-12-04)")
    return p.parse_args()


def _ensure_cohort(manifest: Path) -> None:
    """Generate the default cohort's files when the root manifest's images are missing."""
    import pandas as pd

    first = pd.read_csv(manifest).iloc[0]
    if (manifest.parent / str(first["image"])).exists() or Path(str(first["image"])).exists():
        return
    if manifest.resolve() != (ROOT / "data_manifest.csv").resolve():
        raise FileNotFoundError(f"{manifest}: image {first['image']} not found")
    subprocess.run([sys.executable, "-m", "bmstudy", "synth", "--out", str(ROOT / "data" / "synthetic"),
                    "--profile", "default", "--seed", "0"], check=True, cwd=ROOT)


def _config(args: argparse.Namespace, seed: int) -> Any:
    from bmstudy.plan import TrainConfig, parse_override

    overrides: dict[str, Any] = {"seed": seed}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.steps is not None:
        overrides["steps_per_epoch"] = args.steps
    if args.inference_patch is not None:
        overrides["inference_patch"] = args.inference_patch
        overrides["inference_stride"] = args.inference_patch // 2
    for text in args.param:
        key, value = parse_override(text)
        overrides[key.removeprefix("train.")] = value
    return TrainConfig.from_profile(args.profile, **overrides)


def _seed_result(model_dir: Path, eval_dir: Path, seconds: dict[str, float]) -> dict[str, Any]:
    """The per-seed figures from the training folder and the evaluation's metrics/lesions tables."""
    import numpy as np
    import pandas as pd

    from bmstudy.evaluation import load_results

    metrics, lesions = load_results(eval_dir)
    ok = metrics[metrics["error"] == ""]
    state = json.loads((model_dir / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    rec = json.loads((model_dir / "train_config.json").read_text(encoding="utf-8"))
    log = pd.read_csv(model_dir / "training_log.csv")
    big = lesions[(lesions.get("origin") == "truth") & (lesions.get("size_bin") == ">10 mm")
                  & (lesions["split"] == "test")] if len(lesions) else lesions
    after3 = log.loc[log["epoch"] >= 3, "val_case_dice"].dropna() if "val_case_dice" in log else pd.Series([], dtype=float)
    return {
        "median_test_dice": float(ok.loc[ok["split"] == "test", "dice"].median()),
        "median_external_dice": float(ok.loc[ok["split"] == "external", "dice"].median()),
        "lesion_sensitivity_gt10_test": float(big["matched"].mean()) if len(big) else float("nan"),
        "n_lesions_gt10_test": int(len(big)),
        "epoch_kept": (int(state["best_epoch"]) + 1) if state.get("best_epoch") is not None else None,
        "best_" + str(state.get("monitor")): state.get("best"),
        "min_val_case_dice_after_epoch3": float(after3.min()) if len(after3) else float("nan"),
        "deterministic": (rec.get("determinism") or {}).get("deterministic"),
        "training_log_md5": hashlib.md5((model_dir / "training_log.csv").read_bytes()).hexdigest(),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "val_case_dice_per_epoch": [None if not np.isfinite(v) else round(float(v), 4)
                                    for v in log.get("val_case_dice", pd.Series([], dtype=float))],
    }


def _run_seed(args: argparse.Namespace, manifest_df: Any, pre_dir: Path, out: Path, seed: int) -> dict[str, Any]:
    from bmstudy.evaluation import evaluate_cohort
    from bmstudy.inference import predict_cohort
    from bmstudy.training import train

    seed_dir = out / f"seed{seed}"
    cfg = _config(args, seed)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    if args.stop_after is not None:
        return _early_look(pre_dir, manifest_df, seed_dir / "model", cfg, args.stop_after, seed, t0)
    model_dir = train(pre_dir, manifest_df, seed_dir / "model", cfg, resume=True)
    times["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    predict_cohort(manifest_df, model_dir, seed_dir / "predictions", splits=("test", "external"), progress=False,
                   precision=args.inference_precision)
    times["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_cohort(manifest_df, seed_dir / "predictions", seed_dir / "evaluation", progress=False, n_jobs=args.jobs)
    times["evaluate"] = time.perf_counter() - t0
    row = {"seed": seed, **_seed_result(Path(model_dir), seed_dir / "evaluation", times)}
    from bmstudy.utils import atomic_write_json

    atomic_write_json(seed_dir / "result.json", row)  # kept if a later seed is killed
    print(json.dumps(row, default=str), flush=True)
    return row


class _Stop(Exception):
    """Raised by the early-look callback after the last wanted epoch."""


def _early_look(pre_dir: Path, manifest_df: Any, model_dir: Path, cfg: Any, epochs: int, seed: int,
                t0: float) -> dict[str, Any]:
    """Train ``epochs`` epochs of ``cfg``'s schedule (checkpointed, so a later full run resumes) and
    return the whole-volume validation trajectory."""
    import keras
    import pandas as pd

    from bmstudy.training import train

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch + 1 >= epochs:
                raise _Stop

    try:
        train(pre_dir, manifest_df, model_dir, cfg, resume=True, extra_callbacks=[StopAfter()])
    except _Stop:
        pass
    log = pd.read_csv(model_dir / "training_log.csv")
    keys = ("val_case_dice", "val_case_dice_median", "val_global_dice", "val_fp_per_case")
    rows = log.dropna(subset=["val_case_dice"])
    row = {"seed": seed, "stopped_after_epoch": epochs, "seconds": {"train": round(time.perf_counter() - t0, 1)},
           "validation": {int(e) + 1: {k: round(float(r[k]), 4) for k in keys if k in r}
                          for e, r in zip(rows["epoch"], rows.to_dict("records"))}}
    print(json.dumps(row), flush=True)
    return row


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for key in ("median_test_dice", "median_external_dice", "lesion_sensitivity_gt10_test", "epoch_kept"):
        vals = np.array([r[key] for r in rows if r[key] is not None], dtype=float)
        out[key] = {"min": float(np.nanmin(vals)), "max": float(np.nanmax(vals)),
                    "spread": float(np.nanmax(vals) - np.nanmin(vals)), "mean": float(np.nanmean(vals))}
    out["targets"] = {
        "test_dice_ge_0.75_every_seed": all(r["median_test_dice"] >= 0.75 for r in rows),
        "sens_gt10_ge_0.9_every_seed": all(r["lesion_sensitivity_gt10_test"] >= 0.9 for r in rows),
        "test_dice_spread_le_0.05": out["median_test_dice"]["spread"] <= 0.05,
        "no_val_case_dice_below_0.3_after_epoch3": all(not r["min_val_case_dice_after_epoch3"] < 0.3 for r in rows),
    }
    return out


def main() -> int:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    args = _parse()
    from bmstudy.io import load_manifest
    from bmstudy.plan import PROFILES, resolve_plan
    from bmstudy.preprocessing import preprocess_cohort

    manifest = Path(args.manifest)
    _ensure_cohort(manifest)
    manifest_df = load_manifest(manifest)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = args.profile if args.profile in PROFILES else "cpu"
    # the study's inference precision for this profile (cpu: 'auto', bfloat16 on CPUs that have it)
    args.inference_precision = args.inference_precision or resolve_plan(profile).inference.precision
    t0 = time.perf_counter()
    preprocess_cohort(manifest_df, out / "preprocessed", resolve_plan(profile).preprocess, n_jobs=args.jobs,
                      qc=False, progress=False)
    pre_s = time.perf_counter() - t0
    rows = [_run_seed(args, manifest_df, out / "preprocessed", out, s) for s in args.seeds]
    if args.stop_after is not None:
        print(json.dumps({"per_seed": rows}, indent=2))
        return 0
    result = {"profile": args.profile, "manifest": str(manifest), "seeds": args.seeds,
              "overrides": {"epochs": args.epochs, "steps": args.steps, "inference_patch": args.inference_patch,
                            "param": args.param},
              "preprocess_seconds": round(pre_s, 1), "per_seed": rows, "summary": _summary(rows)}
    text = json.dumps(result, indent=2, default=str)
    (out / "train_seeds.json").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
