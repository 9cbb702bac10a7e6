"""Benchmark: wall time, seconds per case and disk for generating a synthetic cohort (default profile 'default').

Usage: python benchmarks/synthetic.py [--profile default] [--jobs 2] [--n-internal N] [--n-external N]
                                      [--out DIR] [--keep]
Prints one JSON object: the cold run, the skip-everything rerun, per-case render seconds by site (from
the cold run's ``synth_status.csv``), the grids, MB on disk and an estimate for the full profile cohort at ``--jobs``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
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
    ap.add_argument("--n-internal", type=int, default=None, help="render fewer internal cases (timing sample)")
    ap.add_argument("--n-external", type=int, default=None, help="render fewer external cases (timing sample)")
    ap.add_argument("--out", default=None, help="output folder (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output")
    args = ap.parse_args()
    full = synth_params(args.profile)
    prof = synth_params(args.profile, n_internal=args.n_internal, n_external=args.n_external)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bmstudy_synth_bench_"))
    try:
        t0 = time.perf_counter()
        manifest = generate_cohort(out, prof, args.seed, n_jobs=args.jobs, force=True, progress=False)
        cold = time.perf_counter() - t0
        shutil.copy(out / "synth_status.csv", out / "synth_status_cold.csv")
        t0 = time.perf_counter()
        generate_cohort(out, prof, args.seed, n_jobs=args.jobs, progress=False)
        warm = time.perf_counter() - t0
        status = pd.read_csv(out / "synth_status.csv")
        df = pd.read_csv(manifest)
        cold_status = pd.read_csv(out / "synth_status_cold.csv")
        secs = dict(zip(cold_status["patient_id"], cold_status["seconds"]))
        per_site = {s: float(np.mean([secs[p] for p in df.loc[df.site == s, "patient_id"]]))
                    for s in ("internal", "external") if (df.site == s).any()}
        est = (full.n_internal * per_site.get("internal", 0) + full.n_external * per_site.get("external", 0)) / args.jobs
        print(json.dumps({
            "profile": args.profile, "jobs": args.jobs, "cases": len(df),
            "grids": {s: {"shape": prof.shape(s), "spacing": prof.sites[s].spacing} for s in ("internal", "external")},
            "cold_s": round(cold, 1), "rerun_s": round(warm, 2),
            "rerun_skipped": int((status["status"] == "skipped").sum()),
            "render_s_per_case": {k: round(v, 1) for k, v in per_site.items()},
            "estimate_full_cohort_s": round(est, 0), "full_cohort": [full.n_internal, full.n_external],
            "disk_mb": round(_mb(out), 1), "mb_per_case": round(_mb(out) / len(df), 1),
            "lesions": int(df["n_lesions"].sum()), "output": str(out),
        }, indent=1))
    finally:
        if not args.out and not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
