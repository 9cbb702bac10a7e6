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

Then (``--peers``, on by default) the in-memory core, 256^3 at 1 mm -> 0.833 mm + brain z-score, side by
side with the peers, each in a fresh subprocess: ours (bmstudy's resample_to_shape/resample_mask/zscore),
ours with ``BMSTUDY_RESAMPLE=scipy`` (the scipy path used before issue 13), SimpleITK's
ResampleImageFilter on the very same output grid (+ numpy z-score), and MONAI Spacingd +
NormalizeIntensityd (its own output grid: no voxel-wise difference is reported). Max |difference| of the
z-scored image against ours is printed for the same-grid peers.

    python benchmarks/preprocess.py --configs resample+zscore --peers-json peers.json
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


PEERS = ("bmstudy", "bmstudy-scipy", "simpleitk", "monai")
TARGET_MM = 0.833


def _peer_bmstudy(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    from bmstudy.preprocessing.normalization import zscore
    from bmstudy.preprocessing.resampling import resample_mask, resample_to_shape, resampled_shape

    shape = resampled_shape(img.shape, (1.0, 1.0, 1.0), (TARGET_MM,) * 3)
    return zscore(resample_to_shape(img, shape, 1), resample_mask(brain, shape, "linear"))[0]


def _peer_simpleitk(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    from bmstudy.preprocessing.resampling import resampled_shape

    shape = resampled_shape(img.shape, (1.0, 1.0, 1.0), (TARGET_MM,) * 3)
    f = [n / m for n, m in zip(img.shape, shape)][::-1]

    def resample(a: np.ndarray) -> np.ndarray:
        im = sitk.GetImageFromArray(a)
        return sitk.GetArrayFromImage(sitk.Resample(im, [int(n) for n in shape[::-1]], sitk.Transform(), sitk.sitkLinear,
                                                    [0.5 * x - 0.5 for x in f], f, im.GetDirection(), 0.0, im.GetPixelID()))

    out, br = resample(img), resample(brain.astype(np.float32)) > 0.5
    sel = out[br].astype(np.float64)
    return np.where(br, (out - sel.mean()) / sel.std(), 0.0).astype(np.float32)


def _peer_monai(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose, NormalizeIntensityd, Spacingd

    eye = torch.eye(4, dtype=torch.float64)
    data = {"image": MetaTensor(torch.from_numpy(img * brain)[None], affine=eye),
            "brain": MetaTensor(torch.from_numpy(brain.astype(np.float32))[None], affine=eye)}
    tf = Compose([Spacingd(keys=["image", "brain"], pixdim=(TARGET_MM,) * 3, mode=("bilinear", "nearest")),
                  NormalizeIntensityd(keys="image", nonzero=True)])
    return np.asarray(tf(data)["image"][0])


def peer_worker(peer: str, inputs_json: str, out_npy: str) -> None:
    """Time one peer on the 256^3 input (reading excluded) and save its z-scored image for the comparison."""
    if peer == "bmstudy-scipy":
        os.environ["BMSTUDY_RESAMPLE"] = "scipy"
    if peer == "monai":
        import monai  # noqa: F401  (library import not charged to the case)
    inputs = json.loads(inputs_json)
    img = np.asarray(nib.load(inputs["image"]).dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(inputs["brain_mask"]).dataobj) > 0
    fn = {"bmstudy": _peer_bmstudy, "bmstudy-scipy": _peer_bmstudy, "simpleitk": _peer_simpleitk, "monai": _peer_monai}[peer]
    t0 = time.perf_counter()
    out = fn(img, brain)
    secs = time.perf_counter() - t0
    np.save(out_npy, out)
    print(json.dumps({"peer": peer, "seconds": secs, "shape": list(out.shape), "peak_rss_mb": peak_rss_mb()}))


def run_peers(inputs: dict[str, str], tmp: Path) -> list[dict]:
    """Run every peer in a subprocess; rows with seconds, output shape and max |diff| against ours."""
    import importlib.util

    rows, ours = [], None
    print(f"\npeers: 256^3 1 mm -> {TARGET_MM} mm + brain z-score, in memory (reading excluded)")
    print(f"{'peer':16s} {'seconds':>8s} {'peak_MB':>8s} {'max|diff| vs ours':>18s}  output")
    for peer in PEERS:
        if peer == "monai" and importlib.util.find_spec("monai") is None:
            print(f"{peer:16s} skipped: monai not installed (pip install monai==1.6.1)")
            continue
        out_npy = tmp / f"peer_{peer}.npy"
        proc = subprocess.run([sys.executable, __file__, "--peer-worker", peer, json.dumps(inputs), str(out_npy)],
                              capture_output=True, text=True, encoding="utf-8")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print(f"{peer:16s} ERROR rc={proc.returncode}: {proc.stderr[-500:]}")
            continue
        r = json.loads(lines[-1])
        arr = np.load(out_npy)
        ours = arr if peer == "bmstudy" else ours
        same_grid = ours is not None and arr.shape == ours.shape and peer != "monai"
        r["max_abs_diff"] = float(np.abs(arr - ours).max()) if same_grid else None
        diff = f"{r['max_abs_diff']:.3g}" if same_grid else "n/a (other grid)"
        print(f"{peer:16s} {r['seconds']:8.2f} {r['peak_rss_mb']:8.0f} {diff:>18s}  {tuple(r['shape'])}")
        rows.append(r)
    return rows


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
    ap.add_argument("--no-peers", action="store_true", help="skip the SimpleITK / MONAI side-by-side")
    ap.add_argument("--peers-json", help="also write the peers' figures to this JSON file")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--peer-worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    if args.peer_worker:
        peer_worker(*args.peer_worker)
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
        if not args.no_peers:
            rows = run_peers(inputs, Path(tmp))
            if args.peers_json:
                Path(args.peers_json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
