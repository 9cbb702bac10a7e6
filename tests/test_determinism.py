"""Run-to-run determinism of training (bmstudy.training.determinism).

Inter-op threads can only be set before TensorFlow's runtime starts, so every check runs in a fresh
subprocess. The slow test trains the tiny model twice with one seed (whole-volume validation and
precise BatchNorm on, as the tiny profile has them) and compares the logs byte for byte: without the
single inter-op thread, three such runs on the 2-core machine gave three different logs (from epoch 2).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_distribute import _cohort, _env

_PROBE = """
import json, sys
import tensorflow as tf
from bmstudy.training.determinism import configure_determinism
if sys.argv[2] == "late":
    tf.constant(1.0) + 1.0  # starts the runtime with TensorFlow's default inter-op pool
print("RESULT " + json.dumps(configure_determinism(sys.argv[1] == "on", sys.argv[3])))
"""


def _probe(mode: str, when: str, strategy: str = "default") -> tuple[dict, str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, mode, when, strategy], env=_env(), capture_output=True,
                       text=True, encoding="utf-8", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[7:]), r.stderr


def test_deterministic_run_gets_one_inter_op_thread():
    rec, _ = _probe("on", "early")
    assert rec == {"op_determinism": True, "inter_op_threads": 1, "deterministic": True}


def test_too_late_is_recorded_as_not_deterministic_with_a_warning():
    rec, err = _probe("on", "late")
    assert rec["op_determinism"] is True and rec["deterministic"] is False and rec["inter_op_threads"] != 1
    assert "already initialised" in err and "TF_NUM_INTEROP_THREADS=1" in err


def test_off_and_multi_replica_strategies_keep_the_default_pool():
    off, _ = _probe("off", "early")
    assert off == {"op_determinism": False, "inter_op_threads": 0, "deterministic": False}
    mirrored, _ = _probe("on", "early", "mirrored")
    assert mirrored == {"op_determinism": True, "inter_op_threads": 0, "deterministic": False}


@pytest.mark.slow
def test_two_runs_with_one_seed_write_identical_training_logs(tmp_path):
    _cohort(tmp_path)
    logs = []
    for name in ("a", "b"):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "bmstudy.training.distribute_cli", "--preprocessed", str(tmp_path / "pre"),
               "--manifest", str(tmp_path / "manifest.csv"), "--out", str(out), "--profile", "tiny",
               "--epochs", "3", "--steps-per-epoch", "3", "--seed", "3",
               "--set", "backbone=resnet18"]  # op determinism does not depend on the encoder; ~1/3 faster
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, encoding="utf-8", timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        rec = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
        assert rec["determinism"] == {"op_determinism": True, "inter_op_threads": 1, "deterministic": True}
        logs.append((out / "training_log.csv").read_bytes())
    assert b"val_case_dice" in logs[0] and len(logs[0].splitlines()) == 4  # header + 3 epochs, validated
    assert logs[0] == logs[1]
