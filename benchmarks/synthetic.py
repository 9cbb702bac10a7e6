"""Benchmark: wall time and disk for generating a synthetic cohort (default: profile 'default').

Usage: python benchmarks/synthetic.py [--profile default] [--jobs 2] [--out DIR] [--keep]
Prints seconds (cold run, then the skip-everything rerun), per-case seconds and MB on disk.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from bmstudy.plan import synth_params
from bmstudy.synthetic import generate_cohort


def _mb(folder: Path, pattern: str = "**/*") -> float:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output")
    args = ap.parse_args()
    prof = synth_params(args.profile)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bmstudy_synth_bench_"))
    try:
        t0 = time.perf_counter()
        manifest = generate_cohort(out, args.profile, args.seed, n_jobs=args.jobs, force=True, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        generate_cohort(out, args.profile, args.seed, n_jobs=args.jobs, progress=False)
        warm = time.perf_counter() - t0
        status = pd.read_csv(out / "synth_status.csv")
        n = prof.n_internal + prof.n_external
        per_case = pd.read_csv(manifest)
        print(f"profile={args.profile} cases={n} ({prof.n_internal} internal + {prof.n_external} external) "
              f"jobs={args.jobs}")
        print(f"internal grid {prof.shape('internal')} @ {prof.sites['internal'].spacing} mm; "
              f"external grid {prof.shape('external')} @ {prof.sites['external'].spacing} mm")
        print(f"generate (cold): {cold:.1f} s  ({cold / n:.2f} s/case wall, {cold * args.jobs / n:.2f} core-s/case)")
        print(f"rerun (all skipped: {int((status['status'] == 'skipped').sum())}/{n}): {warm:.1f} s")
        print(f"disk: {_mb(out):.1f} MB total; images {_mb(out, 'images/*'):.1f} MB, masks "
              f"{_mb(out, 'masks/*'):.1f} MB, brain {_mb(out, 'brain/*'):.1f} MB")
        print(f"lesions: {int(per_case['n_lesions'].sum())} total, median {per_case['n_lesions'].median():.0f}/case")
        print(f"output: {out}")
    finally:
        if not args.out and not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
