"""Seconds per training step and peak memory of the 3D U-Net (ResNet-34) at given patch sizes.

Each (patch, batch) runs in a fresh subprocess so peak memory is per configuration:
CPU peak = the process's max RSS; GPU peak = TensorFlow's peak allocator bytes on GPU:0.

    python benchmarks/train_step.py                         # 64^3 (cpu profile batch) and 128^3 batch 1
    python benchmarks/train_step.py --patch 128 --batch 4 --mixed-precision   # on a GPU
    python benchmarks/train_step.py --patch 32 --batch 1 --deterministic both   # cost of determinism
    python benchmarks/train_step.py --patch 64 --norm batch instance            # normalisation variants
    python benchmarks/train_step.py --patch 64 --batch 2 --norm group --bf16-cpu # bfloat16 on an AVX512-BF16 CPU
    python benchmarks/train_step.py --pipeline                                   # sampler+augmentation s/sample

Prints one line per configuration and a final table. Random data with sphere 'lesions'; the first
step (graph tracing, 25-90 s on CPU) is timed separately from the steady-state mean.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _one(patch: int, batch: int, steps: int, mixed: bool, deterministic: bool = False, norm: str = "batch",
         bf16: bool = False) -> dict:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import resource

    import numpy as np

    import bmstudy  # noqa: F401  (sets the oneDNN switch before TF)
    import keras
    import tensorflow as tf

    from bmstudy.training import build_model, dice_score, make_loss

    gpus = tf.config.list_physical_devices("GPU")
    keras.utils.set_random_seed(0)
    if deterministic:  # as training does: op determinism + one inter-op thread (before the runtime starts)
        from bmstudy.training.determinism import configure_determinism

        configure_determinism(True, "default")
    if mixed and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if bf16:  # CPUs with AVX512-BF16/AMX: oneDNN runs bfloat16 convolutions natively
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    t0 = time.perf_counter()
    model = build_model(None, decoder_dropout=0.5, norm=norm)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, 0.9, 0.999, 1e-7), loss=make_loss(), metrics=[dice_score])
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, patch, patch, patch, 1)).astype(np.float32)
    g = np.stack(np.meshgrid(*[np.arange(patch)] * 3, indexing="ij"), -1)
    y = (((g - patch / 2) ** 2).sum(-1) < (patch / 6) ** 2).astype(np.float32)[None, ..., None].repeat(batch, 0)
    # model.fit over a tf.data pipeline, as bmstudy.training.loop does: Keras 3's train_on_batch with numpy
    # arrays takes a ~3x slower path on CPU (measured 14.5 vs 4.6 s/step at 64^3 batch 2)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(1)
    times: list[float] = []
    losses: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch_index, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch_index, logs=None):
            times.append(time.perf_counter() - self.t0)
            losses.append(float((logs or {}).get("loss", float("nan"))))

    model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[StepTimer()])
    first_s, times, loss = times[0], times[1:], losses[-1]
    out = {
        "device": "GPU" if gpus else "CPU", "patch": patch, "batch": batch, "mixed_precision": "mixed_bfloat16" if bf16 else bool(mixed and gpus),
        "deterministic": bool(deterministic), "norm": norm,
        "build_s": round(build_s, 1), "first_step_s": round(first_s, 1),
        "s_per_step": round(float(np.mean(times)), 3), "s_per_step_min": round(float(np.min(times)), 3),
        "steps": steps, "cpu_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "final_loss": loss,
    }
    if gpus:
        out["gpu_peak_gib"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, 2)
        out["gpu"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
    out["threads"] = os.cpu_count()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patch", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch per patch size (default: cpu profile batch for 64, 1 for 128 on CPU, paper batch 4 on GPU)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after the first (tracing) step")
    p.add_argument("--mixed-precision", action="store_true", help="also run with mixed_float16 (GPU only)")
    p.add_argument("--bf16-cpu", action="store_true", help="also run with mixed_bfloat16 (CPUs with AVX512-BF16/AMX)")
    p.add_argument("--deterministic", choices=("off", "on", "both"), default="off",
                   help="op determinism + one inter-op thread, as deterministic training; 'both' runs each configuration twice")
    p.add_argument("--norm", nargs="+", default=["batch"], choices=("batch", "group", "instance"))
    p.add_argument("--pipeline", action="store_true",
                   help="only time the input pipeline: PatchSampler.sample with and without augmentation")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(_one(*json.loads(args._child))), flush=True)
        return 0
    if args.pipeline:
        print(json.dumps(_pipeline(args.patch, args.steps)))
        return 0

    from bmstudy.training import TrainConfig

    cpu_batch = TrainConfig.from_profile("cpu").batch_size
    paper_batch = TrainConfig.from_profile("paper").batch_size
    has_gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" and _gpu_present()
    batches = args.batch or [cpu_batch if s <= 64 else (paper_batch if has_gpu else 1) for s in args.patch]
    if len(batches) == 1:
        batches = batches * len(args.patch)
    dets = {"off": [False], "on": [True], "both": [False, True]}[args.deterministic]
    runs = [(s, b, False, d, n, False) for s, b in zip(args.patch, batches) for d in dets for n in args.norm]
    if args.mixed_precision:
        runs += [(s, b, True, d, n, False) for s, b in zip(args.patch, batches) for d in dets for n in args.norm]
    if args.bf16_cpu:
        runs += [(s, b, False, d, n, True) for s, b in zip(args.patch, batches) for d in dets for n in args.norm]
    results = []
    for s, b, mp, det, norm, bf16 in runs:
        cmd = [sys.executable, __file__, "--_child", json.dumps([s, b, args.steps, mp, det, norm, bf16])]
        proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            res = {"patch": s, "batch": b, "mixed_precision": "mixed_bfloat16" if bf16 else mp, "deterministic": det, "norm": norm,
                   "error": (proc.stderr or "")[-500:]}
        else:
            res = json.loads(line[7:])
        results.append(res)
        print(json.dumps(res), flush=True)
    print("\npatch batch mixed  det  norm      s/step  first_step_s  cpu_peak_GiB  gpu_peak_GiB")
    for r in results:
        print(f"{r['patch']:>5} {r['batch']:>5} {str(r.get('mixed_precision')):>5} {str(r.get('deterministic')):>5}"
              f" {r.get('norm', ''):>8}  {r.get('s_per_step', 'ERR'):>6}"
              f"  {r.get('first_step_s', ''):>12}  {r.get('cpu_peak_rss_gib', ''):>12}  {r.get('gpu_peak_gib', '-'):>12}")
    if args.json:
        from bmstudy.utils import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


def _pipeline(patches: list[int], n: int) -> list[dict]:
    """Seconds per training sample (crop + augmentation, data in memory) of the cpu profile's sampler."""
    import numpy as np

    from bmstudy.plan import AugmentParams, TrainConfig
    from bmstudy.training.sampling import Case, PatchSampler, head_box, lesion_components

    rng = np.random.default_rng(0)
    shape = (96, 112, 96)
    g = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1)
    head = (((g - np.array(shape) / 2) / (np.array(shape) * 0.45)) ** 2).sum(-1) <= 1
    mask = (((g - (40, 50, 48)) ** 2).sum(-1) <= 36).astype(np.uint8)
    image = (rng.normal(size=shape) * head + 2 * mask).astype(np.float32)
    case = Case("M", image, mask, lesion_components(mask), head.astype(np.uint8), head_box(head))
    cpu = TrainConfig.from_profile("cpu")
    out = []
    for patch in patches:
        for label, aug in (("augment", AugmentParams.from_dict(cpu.augment)), ("no_augment", None)):
            sampler = PatchSampler([case], (patch,) * 3, cpu.lesion_fraction, aug, background="head")
            t0 = time.perf_counter()
            for i in range(max(n, 1) * 4):
                sampler.sample(i)
            out.append({"patch": patch, "mode": label,
                        "s_per_sample": round((time.perf_counter() - t0) / (max(n, 1) * 4), 4)})
    return out


def _gpu_present() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
