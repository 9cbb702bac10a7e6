"""GPU check: train step, peak memory, whole-case inference at several batch sizes, mirrored strategy -> JSON.

    python benchmarks/gpu_check.py --json gpu_check.json          # full check (one GPU: ~6 min, budget 450 s)
    python benchmarks/gpu_check.py --quick --json quick.json      # reduced sizes, runs on a CPU (CI / no GPU)
    python benchmarks/gpu_check.py --sections paper_smoke         # the paper profile's real training loop only

Sections (each in a fresh subprocess, so peak memory and the mixed-precision policy are per section;
a section that fails or does not fit the time budget is reported with ``error`` / ``skipped``):

- ``train_fp32`` / ``train_mixed``: seconds per training step at 128^3, batch 4 (the paper's setting;
  ``--quick``: 32^3, batch 2), float32 and ``mixed_float16`` (mixed: GPU only), with peak device memory
  (``benchmarks/train_step.py``'s measurement).
- ``inference``: one 0.833 mm brain (216 x 256 x 216 voxels = 27 windows of 128^3 at stride 64;
  ``--quick``: 96^3, 8 windows of 64^3) through ``sliding_window_predict`` at batch 1, 4 and 8
  (float32; plus ``mixed_float16`` at batch 8 on a GPU), seconds per case (whole call and the
  network's share), peak device memory. Uses ``bmstudy.inference.network.make_predict_fn``'s batched
  ``tf.function`` when it has one, else ``predict_on_batch``.
- ``mirrored``: ``tf.distribute.MirroredStrategy`` on all visible GPUs (no GPU: two logical CPU devices
  via ``BMSTUDY_CPU_DEVICES=2``), per-replica batch as above: seconds per step, samples per second.
- ``paper_smoke``: ``bmstudy.training.train`` with the ``paper`` profile (128^3; batch 4 on a GPU, 2 on
  a CPU; ``--quick``: 32^3) for 3 steps on a fake cohort: runs, peak RSS and device memory.

Random weights and random data: times and memory, not accuracy.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTIONS = ("train_fp32", "train_mixed", "inference", "mirrored", "paper_smoke")


def _sizes(quick: bool) -> dict[str, Any]:
    """Patch, batch, steps, inference volume/window/stride of the full or the quick check."""
    if quick:
        return dict(patch=32, batch=2, steps=2, volume=(96, 96, 96), window=64, stride=32, smoke_patch=32)
    return dict(patch=128, batch=4, steps=5, volume=(216, 256, 216), window=128, stride=64, smoke_patch=128)


def _gpus() -> list[Any]:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _device_peak_gib() -> float | None:
    """Peak bytes of TensorFlow's allocator on GPU:0 (None without a GPU)."""
    import tensorflow as tf

    if not _gpus():
        return None
    return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, 2)


def _rss_gib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


# ----------------------------------------------------------------------------- sections (child processes)


def _train(sz: dict[str, Any], mixed: bool) -> dict[str, Any]:
    """One model.fit timing through benchmarks/train_step.py."""
    if mixed and not _gpus():
        return {"skipped": "mixed precision needs a GPU"}
    spec = importlib.util.spec_from_file_location("train_step", HERE / "train_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod._one(sz["patch"], sz["batch"], sz["steps"], mixed)


def _predict_fn(model: Any, batch: int, precision: str) -> Any:
    """The batched predict_fn of bmstudy.inference.network (its newer keyword API when present)."""
    import inspect

    from bmstudy.inference import network

    params = inspect.signature(network.make_predict_fn).parameters
    if "precision" in params:
        return network.make_predict_fn(model, batch_size=batch, precision=precision)
    if precision != "float32":
        raise RuntimeError("this bmstudy.inference.network has no mixed-precision inference")
    return network.make_predict_fn(model)


def _inference(sz: dict[str, Any]) -> dict[str, Any]:
    """Seconds per case of sliding_window_predict at batch 1/4/8 (+ mixed_float16 at 8 on a GPU)."""
    import numpy as np
    import tensorflow as tf

    from bmstudy.inference.network import TimedFn
    from bmstudy.inference.sliding_window import count_windows, sliding_window_predict
    from bmstudy.training import build_model

    model = build_model(None, decoder_dropout=0.5)
    vol = np.random.default_rng(0).normal(size=sz["volume"]).astype(np.float32)
    runs = [(b, "float32") for b in (1, 4, 8)] + ([(8, "mixed_float16")] if _gpus() else [])
    out: dict[str, Any] = {"volume": list(sz["volume"]), "window": sz["window"], "stride": sz["stride"],
                           "windows": count_windows(vol.shape, sz["window"], sz["stride"]), "runs": []}
    for batch, precision in runs:
        row: dict[str, Any] = {"batch": batch, "precision": precision}
        try:
            if _gpus():
                tf.config.experimental.reset_memory_stats("GPU:0")
            fn = TimedFn(_predict_fn(model, batch, precision))
            t0 = time.perf_counter()
            fn(np.zeros((batch, *(sz["window"],) * 3, 1), np.float32))  # graph set-up
            row["warmup_s"] = round(time.perf_counter() - t0, 2)
            fn.seconds = 0.0
            t0 = time.perf_counter()
            prob = sliding_window_predict(vol, fn, sz["window"], sz["stride"], batch_size=batch)
            row.update(s_per_case=round(time.perf_counter() - t0, 2), model_s_per_case=round(fn.seconds, 2),
                       calls=fn.calls, finite=bool(np.isfinite(prob).all()), device_peak_gib=_device_peak_gib())
        except Exception as exc:  # noqa: BLE001 - reported in the JSON
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        out["runs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    out["cpu_peak_rss_gib"] = _rss_gib()
    return out


def _mirrored(sz: dict[str, Any]) -> dict[str, Any]:
    """model.fit steps under the ``mirrored`` strategy of bmstudy.training.distribute."""
    import keras
    import numpy as np
    import tensorflow as tf

    from bmstudy.training import build_model, dice_score, make_loss
    from bmstudy.training.distribute import make_strategy

    strategy, name = make_strategy("mirrored")
    n, p, b = int(strategy.num_replicas_in_sync), sz["patch"], sz["batch"]
    with strategy.scope():
        model = build_model(None, decoder_dropout=0.5)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss(), metrics=[dice_score])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(b * n, p, p, p, 1)).astype(np.float32)
    y = (rng.random((b * n, p, p, p, 1)) < 0.05).astype(np.float32)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(1)
    times: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch_index: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch_index: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.t0)

    model.fit(ds, steps_per_epoch=sz["steps"] + 1, epochs=1, verbose=0, callbacks=[StepTimer()])
    step = float(np.mean(times[1:]))
    return {"strategy": name, "replicas": n, "devices": list(strategy.extended.worker_devices),
            "per_replica_batch": b, "global_batch": b * n, "patch": p, "first_step_s": round(times[0], 1),
            "s_per_step": round(step, 3), "samples_per_s": round(b * n / step, 2),
            "device_peak_gib": _device_peak_gib(), "cpu_peak_rss_gib": _rss_gib()}


def _paper_smoke(sz: dict[str, Any]) -> dict[str, Any]:
    """3 steps of the real training loop with the paper profile on a fake preprocessed cohort."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from fake_preprocessed import write_cohort

    from bmstudy.plan import TrainConfig
    from bmstudy.training import train

    batch = 4 if _gpus() else 2
    p = sz["smoke_patch"]
    cfg = TrainConfig.from_profile("paper", batch_size=batch, steps_per_epoch=3, epochs=1,
                                   patch_size=(p, p, p), val_patches_per_case=1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_cohort(Path(tmp) / "pre", n=3, shape=(160, 176, 144))
        t0 = time.perf_counter()
        out = train(Path(tmp) / "pre", manifest, Path(tmp) / "run", cfg)
        rec = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    return {"profile": "paper", "patch": p, "batch": batch, "steps": 3, "seconds": round(time.perf_counter() - t0, 1),
            "status": rec.get("status"), "global_batch": rec.get("global_batch"),
            "cpu_peak_rss_gib": _rss_gib(), "device_peak_gib": _device_peak_gib()}


def _child(section: str, quick: bool) -> dict[str, Any]:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import bmstudy  # noqa: F401  (oneDNN switch before TensorFlow)

    sz = _sizes(quick)
    if section == "train_fp32":
        return _train(sz, False)
    if section == "train_mixed":
        return _train(sz, True)
    if section == "inference":
        return _inference(sz)
    if section == "mirrored":
        return _mirrored(sz)
    return _paper_smoke(sz)


# ----------------------------------------------------------------------------- parent


def _environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        env["gpus"] = [ln.strip() for ln in smi.stdout.splitlines() if ln.strip()] if smi.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        env["gpus"] = []
    return env


def _run_section(section: str, quick: bool, timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    if section == "mirrored":
        env.setdefault("BMSTUDY_CPU_DEVICES", "2")  # used only when no GPU is visible
    cmd = [sys.executable, __file__, "--_child", section] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - t0, 1)}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    res = json.loads(line[7:]) if proc.returncode == 0 and line else {"error": (proc.stderr or "")[-1500:]}
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes (CPU: a few minutes)")
    p.add_argument("--json", default=None, help="write the results here (also printed)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--budget-s", type=float, default=450.0, help="total seconds; later sections are skipped")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(_child(args._child, args.quick)), flush=True)
        return 0
    t_start = time.perf_counter()
    report: dict[str, Any] = {"quick": args.quick, "sizes": _sizes(args.quick), "environment": _environment()}
    for section in args.sections:
        left = args.budget_s - (time.perf_counter() - t_start)
        if left < 30:
            report[section] = {"skipped": f"time budget {args.budget_s:.0f} s spent"}
        else:
            report[section] = _run_section(section, args.quick, left)
        print(section, json.dumps(report[section]), flush=True)
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
