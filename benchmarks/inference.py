"""Benchmark of bmstudy.inference (sliding_window + predictor): per-case time for a brain-sized 0.833 mm volume.

Two measurements, printed as a table:

1. Stitching overhead (pure numpy): ``sliding_window_predict`` on a brain-sized volume with a
   trivial predict_fn (returns a preallocated array), so the time is window extraction,
   accumulation and normalisation only. Peak extra memory from tracemalloc (numpy allocations).
2. The per-case pipeline (:func:`bmstudy.inference.predict_case`) with the same trivial network on a
   synthetic 1 mm LPS NIfTI: preprocess / sliding window / postprocess seconds (no TensorFlow).
3. Network time per window: the study's 3D U-Net (ResNet-34, ``bmstudy.training.model.build_model``,
   random weights, inference mode) on ``--model-windows`` windows of ``--patch``^3, after a
   warm-up call (graph setup reported separately). Per-case model time is extrapolated as
   ``n_windows x seconds/window`` unless ``--full`` predicts the whole volume.

The overhead ratio (stitching / model time) is the figure to compare with the < 5 % target; the
per-case total is compared with the paper's 66-69 s per case (an RTX 4090).

    python benchmarks/inference.py                      # default: 200x240x200, patch 128, stride 64
    python benchmarks/inference.py --model-windows 0    # numpy stitching only (no TensorFlow)
    python benchmarks/inference.py --full               # whole volume through the network (slow on CPU)
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import time
import tracemalloc

import numpy as np

from bmstudy.inference.sliding_window import sliding_window_predict, window_starts


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def stitching(shape, patch, stride, batch_size, blend, tta, repeats):
    vol = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out_cache: dict[int, np.ndarray] = {}

    def trivial(batch):  # negligible cost: a preallocated constant
        n = batch.shape[0]
        if n not in out_cache:
            out_cache[n] = np.full(batch.shape, 0.25, np.float32)
        return out_cache[n]

    sliding_window_predict(vol, trivial, patch, stride, batch_size=batch_size, blend=blend, tta_flip=tta)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sliding_window_predict(vol, trivial, patch, stride, batch_size=batch_size, blend=blend, tta_flip=tta)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    sliding_window_predict(vol, trivial, patch, stride, batch_size=batch_size, blend=blend, tta_flip=tta)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return float(np.median(times)), peak / 2**20, vol.nbytes / 2**20


def pipeline(shape, patch, stride, batch_size):
    """predict_case on a synthetic NIfTI whose 0.833 mm grid has ``shape``, with a trivial network.

    The input is written at 1 mm (LPS, like DICOM-derived files) so preprocessing really resamples
    and reorients; the probability map is resampled back and both NIfTI files are written (gzip).
    """
    import tempfile
    from pathlib import Path

    import nibabel as nib

    from bmstudy.inference import predict_case

    in_shape = tuple(int(round(n * 0.833)) for n in shape)
    idx = np.indices(in_shape, dtype=np.float32)
    c = [(n - 1) / 2 for n in in_shape]
    brain = sum(((idx[i] - c[i]) / (0.48 * in_shape[i])) ** 2 for i in range(3)) <= 1.0
    img = np.where(brain, 100.0, 0.0).astype(np.float32)
    img += np.random.default_rng(0).normal(0, 5, size=in_shape).astype(np.float32) * brain
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.nii.gz"
        nib.save(nib.Nifti1Image(img, aff), str(path))
        cfg = {"preprocessing": {"skull_strip": "none"}, "inference_patch": patch, "inference_stride": stride}
        row = predict_case(path, lambda b: (b > 2.0).astype(np.float32), cfg, Path(tmp) / "out", "case",
                           batch_size=batch_size)
    row["input_shape_1mm"] = in_shape
    return row


#: Network call variants (``--variants``): the wrapper before issue 13 and the tf.function options.
VARIANTS = {
    "predict_on_batch": dict(compiled=False),  # before issue 13: keras predict_on_batch per call
    "tf.function": dict(),  # the default now: one tf.function with a fixed input signature
    "xla": dict(jit_compile=True),
    "mixed_bfloat16": dict(precision="mixed_bfloat16"),
    "mixed_float16": dict(precision="mixed_float16"),  # GPU only (no CPU half MaxPool3D kernel)
}
_MODEL = {}


def network(patch, batch_size, n_windows_measure, full_shape=None, stride=None, variant="tf.function"):
    from bmstudy.inference import make_predict_fn
    from bmstudy.training.model import build_model

    t0 = time.perf_counter()
    if "model" not in _MODEL:
        _MODEL["model"] = build_model(None, decoder_dropout=0.5)
    model = _MODEL["model"]
    build_s = time.perf_counter() - t0
    fn = make_predict_fn(model, batch_size=batch_size, **VARIANTS[variant])
    x = np.random.default_rng(1).normal(size=(batch_size, patch, patch, patch, 1)).astype(np.float32)
    t0 = time.perf_counter()
    fn(x)
    warm_s = time.perf_counter() - t0
    res = {"variant": variant, "build_s": build_s, "warmup_s": warm_s}
    if full_shape is not None:
        vol = np.random.default_rng(2).normal(size=full_shape).astype(np.float32)
        calls = {"s": 0.0}

        def timed(b):
            t = time.perf_counter()
            out = fn(b)
            calls["s"] += time.perf_counter() - t
            return out

        t0 = time.perf_counter()
        sliding_window_predict(vol, timed, patch, stride, batch_size=batch_size, progress=True)
        res["full_case_s"] = time.perf_counter() - t0
        res["full_network_s"] = calls["s"]
        n = math.prod(len(window_starts(max(s, patch), patch, stride)) for s in full_shape)
        res["s_per_window"] = calls["s"] / n
    else:
        n_calls = max(1, math.ceil(n_windows_measure / batch_size))
        t0 = time.perf_counter()
        for _ in range(n_calls):
            fn(x)
        res["s_per_window"] = (time.perf_counter() - t0) / (n_calls * batch_size)
    res["peak_rss_gib"] = _rss_gib()
    return res


def compare_variants(patch, batch_size, n_rounds, variants):
    """Interleaved timing of network call variants: each warmed up, then ``n_rounds`` round-robin calls.

    Interleaving keeps a shared, loaded machine's drift out of the comparison; s/window is the median.
    """
    from bmstudy.inference import make_predict_fn
    from bmstudy.training.model import build_model

    t0 = time.perf_counter()
    model = _MODEL.setdefault("model", build_model(None, decoder_dropout=0.5))
    build_s = time.perf_counter() - t0
    x = np.random.default_rng(1).normal(size=(batch_size, patch, patch, patch, 1)).astype(np.float32)
    fns, res = {}, {}
    for v in variants:
        try:
            fn = make_predict_fn(model, batch_size=batch_size, **VARIANTS[v])
            t0 = time.perf_counter()
            fn(x)
            res[v] = {"variant": v, "build_s": build_s, "warmup_s": time.perf_counter() - t0, "times": []}
            fns[v] = fn
        except Exception as exc:  # e.g. mixed_float16 on CPU: no half-precision kernels
            print(f"network [{v}]: not run: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    for _ in range(max(1, n_rounds)):
        for v, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            res[v]["times"].append((time.perf_counter() - t0) / batch_size)
    for r in res.values():
        r["s_per_window"] = float(np.median(r["times"]))
        r["peak_rss_gib"] = _rss_gib()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[200, 240, 200],
                    help="volume at 0.833 mm (default 200 240 200 ~ a cropped brain, 167x200x167 mm)")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model-windows", type=int, default=2,
                    help="round-robin rounds of one batch per variant through the network (0: skip TF)")
    ap.add_argument("--full", action="store_true", help="predict the whole volume with the network")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--variants", nargs="+", default=["predict_on_batch", "tf.function"], choices=list(VARIANTS),
                    help="network call variants timed side by side (default: before/after issue 13)")
    args = ap.parse_args()
    shape = tuple(args.shape)
    n_windows = math.prod(len(window_starts(max(s, args.patch), args.patch, args.stride)) for s in shape)
    print(f"volume {shape} float32 ({np.prod(shape) * 4 / 2**20:.0f} MiB), patch {args.patch}^3, "
          f"stride {args.stride}: {n_windows} windows, batch {args.batch_size}")
    figures: dict = {"shape": shape, "patch": args.patch, "stride": args.stride, "n_windows": n_windows,
                     "batch_size": args.batch_size, "stitching": {}}
    print(f"{'stitching (trivial predict_fn)':34s} {'median s':>9s} {'ms/window':>10s} {'peak extra MiB':>15s}")
    for blend, tta in (("mean", False), ("gaussian", False), ("mean", True)):
        sec, peak, vol_mib = stitching(shape, args.patch, args.stride, args.batch_size, blend, tta, args.repeats)
        label = f"blend={blend}{' +tta' if tta else ''}"
        figures["stitching"][label] = {"seconds": sec, "peak_mib": peak}
        print(f"{label:34s} {sec:9.3f} {1000 * sec / n_windows:10.1f} {peak:15.0f}")
    print(f"(input volume itself: {vol_mib:.0f} MiB; the accumulator is one volume-sized float32 array)")
    row = pipeline(shape, args.patch, args.stride, args.batch_size)
    figures["pipeline"] = {k: row[k] for k in ("preprocess_s", "model_s", "network_s", "postprocess_s", "total_s",
                                                 "model_shape", "input_shape")}
    print(f"predict_case, trivial network, 1 mm LPS input {row['input_shape']} -> 0.833 mm {row['model_shape']}: "
          f"preprocess {row['preprocess_s']:.2f} s, sliding window {row['model_s']:.2f} s, "
          f"postprocess (resample back + 2 NIfTI writes) {row['postprocess_s']:.2f} s, total {row['total_s']:.2f} s")
    if args.model_windows > 0 or args.full:
        if args.full:
            figures["variants"] = {v: network(args.patch, args.batch_size, 0, shape, args.stride, v) for v in args.variants}
        else:
            figures["variants"] = compare_variants(args.patch, args.batch_size, args.model_windows, args.variants)
        for variant, net in figures["variants"].items():
            print(f"network [{variant}]: warm-up {net['warmup_s']:.1f} s, {net['s_per_window']:.2f} s/window "
                  f"(median of {len(net.get('times', [])) or 'whole volume'}), per case ({n_windows} windows) "
                  f"{net['s_per_window'] * n_windows:.1f} s")
        if not figures["variants"]:
            return
        net = figures["variants"][args.variants[-1] if args.variants[-1] in figures["variants"] else next(iter(figures["variants"]))]
        figures["network"] = net
        model_case = net["s_per_window"] * n_windows
        stitch = figures["stitching"]["blend=mean"]["seconds"]
        print(f"network: build {net['build_s']:.1f} s, warm-up {net['warmup_s']:.1f} s, "
              f"{net['s_per_window']:.2f} s/window ({'measured on the whole volume' if args.full else f'{args.model_windows} window(s) measured'})")
        if args.full:
            print(f"whole volume: {net['full_case_s']:.1f} s wall, of which network {net['full_network_s']:.1f} s "
                  f"-> stitching overhead {100 * (net['full_case_s'] - net['full_network_s']) / net['full_network_s']:.2f} %")
        print(f"per case model time ({n_windows} windows): {model_case:.1f} s"
              f"{'' if args.full else ' (extrapolated)'}; stitching {stitch:.2f} s = {100 * stitch / model_case:.2f} % of it "
              f"(target < 5 %); paper: 66-69 s per case on an RTX 4090")
        print(f"peak RSS {net['peak_rss_gib']:.2f} GiB (TensorFlow + model + one batch)")
        case_total = row["preprocess_s"] + row["postprocess_s"] + stitch + model_case
        print(f"=> per case total ~ {case_total:.1f} s = preprocess {row['preprocess_s']:.1f} + network "
              f"{model_case:.1f} + stitching {stitch:.2f} + postprocess {row['postprocess_s']:.1f}")
        figures["case_total_s"] = case_total
        figures["model_case_s"] = model_case
        figures["overhead_pct"] = 100 * stitch / model_case
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
