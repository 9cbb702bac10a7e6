"""Benchmark: seconds and peak memory per case for preprocessing a 256^3 1 mm volume.

Each configuration runs in a fresh subprocess (``preprocess_case`` incl. reading, alignment check,
resampling to 0.833 mm, Z-score and writing the .npy outputs) and reports wall seconds and the
process's peak resident memory (``VmHWM``; ``ru_maxrss`` where /proc is absent) plus the peak after
imports, so the figures are per case, not per cohort.

    python benchmarks/preprocess.py                  # synthetic 256^3 phantom
    python benchmarks/preprocess.py --image T1c.nii.gz --brain brainmask.nii.gz
        # a real scan zero-padded/cropped to 256^3 (needed for a meaningful deepbet run)

Configurations: ``resample+zscore`` (provided brain mask), ``crop+resample+zscore`` (crop_to_brain),
``bspline`` (cubic B-spline image interpolation), and ``deepbet`` (offline stripper) when installed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

CONFIGS = {
    "resample+zscore": dict(skull_strip="mask"),
    "crop+resample+zscore": dict(skull_strip="mask", crop_to_brain=True),
    "bspline": dict(skull_strip="mask", interpolation="bspline"),
    "deepbet+resample+zscore": dict(skull_strip="deepbet", threads=2),
}


def _fit(data: np.ndarray, shape=(256, 256, 256), fill: float = 0.0) -> np.ndarray:
    out = np.full(shape, fill, dtype=np.float32)
    src, dst = [], []
    for n, m in zip(data.shape, shape):
        if n <= m:
            a = (m - n) // 2
            src.append(slice(0, n)), dst.append(slice(a, a + n))
        else:
            a = (n - m) // 2
            src.append(slice(a, a + m)), dst.append(slice(0, m))
    out[tuple(dst)] = data[tuple(src)]
    return out


def make_inputs(folder: Path, image: str | None, brain: str | None, seed: int = 0) -> dict[str, str]:
    """Write image / lesion mask / brain mask NIfTIs of 256^3 at 1 mm (RAS affine)."""
    shape = (256, 256, 256)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -128.0
    if image:
        src = nib.as_closest_canonical(nib.load(image)).get_fdata(dtype=np.float32)
        img = _fit(src, shape, float(src.min()))
        br = _fit(nib.as_closest_canonical(nib.load(brain)).get_fdata(dtype=np.float32), shape) > 0 if brain else None
    else:
        rng = np.random.default_rng(seed)
        g = np.meshgrid(*[np.arange(n, dtype=np.float32) - n / 2 for n in shape], indexing="ij")
        r = np.sqrt((g[0] / 70) ** 2 + (g[1] / 85) ** 2 + (g[2] / 65) ** 2)
        br = r < 1.0
        img = np.where(br, 400 + 40 * np.sin(g[0] / 7) * np.cos(g[1] / 9), np.where(r < 1.12, 900.0, 10.0))
        img = (img + rng.normal(0, 15, shape)).astype(np.float32)
        del g, r
    if br is None:
        br = img > np.percentile(img, 60)
    lesion = np.zeros(shape, np.uint8)
    idx = np.argwhere(br)
    c = idx[len(idx) // 3]
    lesion[c[0] - 6:c[0] + 6, c[1] - 6:c[1] + 6, c[2] - 6:c[2] + 6] = 1
    lesion &= br.astype(np.uint8)
    paths = {k: str(folder / f"{k}.nii.gz") for k in ("image", "mask", "brain_mask")}
    nib.save(nib.Nifti1Image(img, affine), paths["image"])
    nib.save(nib.Nifti1Image(lesion, affine), paths["mask"])
    nib.save(nib.Nifti1Image(br.astype(np.uint8), affine), paths["brain_mask"])
    return paths


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: reset at exec, unlike ru_maxrss which a forked child inherits)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(config: str, inputs_json: str, out_dir: str) -> None:
    from bmstudy.preprocessing import PreprocessParams, preprocess_case

    if CONFIGS[config]["skull_strip"] == "deepbet":
        import torch  # noqa: F401  (count the library import in the baseline, not in the case)
    rss0 = peak_rss_mb()
    row = {"patient_id": "bench", "site": "bench", "split": "", **json.loads(inputs_json)}
    if CONFIGS[config]["skull_strip"] != "mask":
        row.pop("brain_mask")
    t0 = time.perf_counter()
    rep = preprocess_case(row, out_dir, PreprocessParams(**CONFIGS[config]), force=True)
    secs = time.perf_counter() - t0
    meta_path = Path(out_dir) / "bench" / "meta.json"
    strip_s = json.loads(meta_path.read_text(encoding="utf-8"))["skull_strip"]["seconds"] if meta_path.exists() else float("nan")
    print(json.dumps({"config": config, "status": rep["status"], "reason": rep.get("reason", ""), "seconds": secs,
                      "strip_seconds": strip_s, "peak_rss_mb": peak_rss_mb(),
                      "rss_after_imports_mb": rss0, "output_shape": rep.get("output_shape", "")}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="optional real scan to pad/crop to 256^3")
    ap.add_argument("--brain", help="its brain mask (optional)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    from bmstudy.preprocessing.skullstrip import deepbet_available

    with tempfile.TemporaryDirectory(prefix="bmstudy_bench_") as tmp:
        inputs = make_inputs(Path(tmp), args.image, args.brain)
        print(f"input: 256^3 at 1 mm ({'from ' + args.image if args.image else 'synthetic phantom'}); "
              f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        print(f"{'config':26s} {'status':8s} {'seconds':>8s} {'strip_s':>8s} {'peak_MB':>8s} {'base_MB':>8s}  output")
        for config in args.configs:
            if config.startswith("deepbet") and not deepbet_available():
                print(f"{config:26s} skipped: deepbet not installed (pip install torch==2.13.0 deepbet==1.0.2)")
                continue
            proc = subprocess.run([sys.executable, __file__, "--worker", config, json.dumps(inputs), str(Path(tmp) / "out")],
                                  capture_output=True, text=True, encoding="utf-8")
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                print(f"{config:26s} ERROR rc={proc.returncode}: {proc.stderr[-500:]}")
                continue
            r = json.loads(lines[-1])
            print(f"{config:26s} {r['status']:8s} {r['seconds']:8.1f} {r['strip_seconds']:8.1f} {r['peak_rss_mb']:8.0f} "
                  f"{r['rss_after_imports_mb']:8.0f}  {r['output_shape']} {r['reason'][:80]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
