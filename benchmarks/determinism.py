"""Train one profile several times with one seed, each in a fresh process, and compare the training logs.

Each run is ``python -m bmstudy.training.distribute_cli ... --no-resume`` into ``OUT/runN``; the script
prints JSON with, per run, the md5 of ``training_log.csv``, the ``determinism`` record from
``train_config.json`` and the wall time, and ``identical``: whether all logs are byte for byte equal
(also written to ``OUT/determinism.json``). ``--deterministic off`` trains with
``train.deterministic=false`` for comparison (on the 2-core machine such runs differ from epoch 1-2).

    python benchmarks/determinism.py                                  # tiny profile, 3 runs, 3 epochs x 3 steps
    python benchmarks/determinism.py --profile cpu --runs 2 --epochs 2 --steps 10
    python benchmarks/determinism.py --deterministic off

Without ``--manifest`` a small synthetic cohort is generated in ``OUT/cohort`` (``bmstudy synth
--profile tiny``); without ``--preprocessed`` it is preprocessed into ``OUT/preprocessed`` (once, reused).
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

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "determinism"))
    p.add_argument("--manifest", default=None, help="data manifest with a split column (default: synthesise)")
    p.add_argument("--preprocessed", default=None, help="preprocessed folder for --manifest")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="steps per epoch")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--deterministic", choices=("on", "off"), default="on")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="TrainConfig override")
    return p.parse_args()


def _bmstudy(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bmstudy", *args], check=True, cwd=ROOT)


def _cohort(out: Path, manifest: str | None, preprocessed: str | None) -> tuple[Path, Path]:
    """The manifest and preprocessed folder to train on (generated and preprocessed when not given)."""
    if manifest is None:
        manifest_path = out / "cohort" / "data_manifest.csv"
        if not manifest_path.exists():
            _bmstudy("synth", "--out", str(out / "cohort"), "--profile", "tiny", "--seed", "0")
    else:
        manifest_path = Path(manifest).resolve()
    pre = Path(preprocessed).resolve() if preprocessed else out / "preprocessed"
    if not (pre / "preprocess_report.csv").exists():
        _bmstudy("preprocess", "--manifest", str(manifest_path), "--out", str(pre))
    return manifest_path, pre


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def main() -> int:
    from bmstudy.utils import atomic_write_json

    a = _parse()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest, pre = _cohort(out, a.manifest, a.preprocessed)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    sets = [*a.set, f"deterministic={'true' if a.deterministic == 'on' else 'false'}"]
    runs = []
    for i in range(a.runs):
        run_dir = out / f"run{i}"
        cmd = [sys.executable, "-m", "bmstudy.training.distribute_cli", "--preprocessed", str(pre),
               "--manifest", str(manifest), "--out", str(run_dir), "--profile", a.profile,
               "--epochs", str(a.epochs), "--steps-per-epoch", str(a.steps), "--seed", str(a.seed),
               "--no-resume", *[x for s in sets for x in ("--set", s)]]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        rec = json.loads((run_dir / "train_config.json").read_text(encoding="utf-8"))
        row = {"run": i, "training_log_md5": _md5(run_dir / "training_log.csv"),
               "determinism": rec.get("determinism"), "wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        runs.append(row)
    result = {"profile": a.profile, "seed": a.seed, "epochs": a.epochs, "steps_per_epoch": a.steps,
              "deterministic": a.deterministic, "runs": runs,
              "identical": len({r["training_log_md5"] for r in runs}) == 1}
    atomic_write_json(out / "determinism.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
