"""Training strategies on tf.distribute (bmstudy.training.distribute) and their use by the training loop.

The slow tests train the tiny model in subprocesses (a strategy must be made before TensorFlow is
first used in a process): ``mirrored`` on two logical CPU devices (``BMSTUDY_CPU_DEVICES=2``) against
the single-device run with the same global batch, and two local ``multi_worker`` processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bmstudy.plan import TrainConfig
from bmstudy.training import distribute as D
from fake_preprocessed import write_cohort

#: TrainConfig overrides of the subprocess runs: tiny profile, 2 steps, patch-loss validation only.
_SMALL = ["--profile", "tiny", "--steps-per-epoch", "2", "--set", "val_every=0", "--set", "monitor=val_loss",
          "--set", "precise_bn_patches=0", "--set", "decoder_dropout=0", "--set", "val_patches_per_case=2",
          # the distribution mechanics do not depend on the encoder; ResNet-18 builds its graph ~1/3 faster
          "--set", "backbone=resnet18"]

#: Tolerance of the mirrored-vs-single-device loss comparison (absolute, on a Dice+BCE loss ~0.9):
#: BatchNorm statistics are per replica (1 patch each instead of 2 together), so the runs are not
#: bit-identical; the first steps' losses agree to this.
LOSS_TOLERANCE = 0.05


def _cohort(root: Path) -> Path:
    """A fake preprocessed cohort and a full data manifest (image/mask = the case files); the manifest path."""
    df = write_cohort(root / "pre", n=3)
    df = df[df.patient_id != "PBAD"].assign(site="A", age=60, sex="F", cancer_type="lung", manual_seconds=100)
    df["image"] = [f"pre/{p}/image.npy" for p in df.patient_id]
    df["mask"] = [f"pre/{p}/mask.npy" for p in df.patient_id]
    df.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _train_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bmstudy.training.distribute_cli", "--preprocessed", str(root / "pre"),
            "--manifest", str(root / "manifest.csv"), "--out", str(out), *_SMALL, *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", D.CPU_DEVICES_ENV)}
    # the assertions read the training log lines: INFO even where CI sets BMSTUDY_LOGLEVEL=WARNING
    return {**env, "BMSTUDY_LOGLEVEL": "INFO", **extra}


# ----------------------------------------------------------------------------- fast


def test_strategy_field_is_validated():
    assert TrainConfig.from_profile("paper").strategy == "auto"
    assert TrainConfig.from_profile("tiny", strategy="multi_worker").strategy == "multi_worker"
    with pytest.raises(ValueError, match="strategy must be"):
        TrainConfig.from_profile("tiny", strategy="horovod")
    with pytest.raises(ValueError, match="unknown strategy"):
        D.make_strategy("horovod")


def test_chief_tf_config_and_ports():
    assert D.is_chief(None, None, ())
    assert D.is_chief("worker", 0, ("worker",)) and not D.is_chief("worker", 1, ("worker",))
    assert D.is_chief("chief", 0, ("chief", "worker")) and not D.is_chief("worker", 0, ("chief", "worker"))
    cfg = json.loads(D.tf_config(["localhost:1", "localhost:2"], 1))
    assert cfg == {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError, match="outside"):
        D.tf_config(["a:1"], 1)
    ports = D.free_ports(2)
    assert len(set(ports)) == 2 and all(p > 0 for p in ports)


def _dist(replicas: int, batch: int, chief: bool = True) -> D.Distribution:
    return D.Distribution(strategy=None, name="mirrored", requested="mirrored", replicas=replicas,
                          per_replica_batch=batch, workers=1 if chief else 2, task_type=None if chief else "worker",
                          task_id=None if chief else 1, chief=chief, devices=("/cpu:0", "/cpu:1"))


def test_global_batch_is_per_replica_batch_times_replicas():
    cfg = TrainConfig.from_profile("tiny", batch_size=3, val_patches_per_case=3)
    dist = _dist(2, 3)
    assert dist.global_batch == 6
    g = D.global_config(cfg, dist)
    assert g.batch_size == 6 and g.val_patches_per_case == 4 and cfg.batch_size == 3
    assert D.global_config(cfg, _dist(1, 3)) is cfg
    rec = dist.record()
    assert rec["global_batch"] == 6 and rec["distribution"]["replicas"] == 2
    assert json.loads(json.dumps(rec)) == rec  # JSON-ready (no strategy object)
    assert "global batch 6" in dist.describe()


def test_resume_refuses_another_global_batch(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"global_batch": 2}), encoding="utf-8")
    D.check_resume(tmp_path, {"epoch": 1}, _dist(2, 1))
    D.check_resume(tmp_path, None, _dist(4, 1))  # new run: nothing to check
    with pytest.raises(ValueError, match="global batch 2"):
        D.check_resume(tmp_path, {"epoch": 1}, _dist(4, 1))


def test_non_chief_writes_into_a_temporary_copy(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text("{}", encoding="utf-8")
    (out / "training_log.csv").write_text("epoch\n0\n", encoding="utf-8")
    with D.writable_dir(_dist(2, 1), out) as d:
        assert d == out
    with D.writable_dir(_dist(2, 1, chief=False), out) as d:
        assert d != out and (d / "checkpoint" / "state.json").is_file()
        with open(d / "training_log.csv", "a", encoding="utf-8") as f:  # appended like CSVLogger
            f.write("1\n")
        (d / "checkpoint" / "state.json.tmp").write_text('{"epoch": 2}', encoding="utf-8")
        os.replace(d / "checkpoint" / "state.json.tmp", d / "checkpoint" / "state.json")  # atomic writers
        tmp = d
    assert not tmp.exists()
    assert (out / "training_log.csv").read_text(encoding="utf-8") == "epoch\n0\n"
    assert (out / "checkpoint" / "state.json").read_text(encoding="utf-8") == "{}"


def test_cpu_device_split_and_auto(tmp_path):
    code = ("from bmstudy.training.distribute import make_strategy; import sys; "
            "s, n = make_strategy(sys.argv[1]); print('RESULT', n, s.num_replicas_in_sync)")
    r = subprocess.run([sys.executable, "-c", code, "mirrored"], env=_env(BMSTUDY_CPU_DEVICES="2"),
                       capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert "RESULT mirrored 2" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", code, "auto"], env=_env(), capture_output=True, text=True,
                       encoding="utf-8", timeout=300)
    assert "RESULT default 1" in r.stdout, r.stderr[-2000:]  # no GPU: auto = default
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(D.CPU_DEVICES_ENV, "two")
        with pytest.raises(ValueError, match="BMSTUDY_CPU_DEVICES"):
            D.configure_cpu_devices()


# ----------------------------------------------------------------------------- slow


def _log(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "training_log.csv")


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_matches_single_device(tmp_path):
    _cohort(tmp_path)
    single, mirrored = tmp_path / "single", tmp_path / "mirrored"
    r1 = subprocess.run(_train_cmd(tmp_path, single, "--strategy", "default", "--batch-size", "2"), env=_env(),
                        capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run(_train_cmd(tmp_path, mirrored, "--strategy", "mirrored", "--batch-size", "1"),
                        env=_env(BMSTUDY_CPU_DEVICES="2"), capture_output=True, text=True, encoding="utf-8",
                        timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 replica(s) x per-replica batch 1 = global batch 2" in r2.stderr
    rec = json.loads((mirrored / "train_config.json").read_text(encoding="utf-8"))
    assert rec["global_batch"] == 2 and rec["distribution"]["name"] == "mirrored"
    assert rec["distribution"]["replicas"] == 2 and rec["config"]["batch_size"] == 1
    assert json.loads((single / "train_config.json").read_text(encoding="utf-8"))["global_batch"] == 2
    a, b = _log(single), _log(mirrored)
    assert abs(a["loss"].iloc[0] - b["loss"].iloc[0]) < LOSS_TOLERANCE, (a, b)
    state = json.loads((mirrored / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["iterations"] == 2 and (mirrored / "model_best.keras").is_file()


def _two_workers(tmp_path: Path, outs: tuple[Path, Path], *extra: str) -> list[subprocess.CompletedProcess]:
    hosts = [f"localhost:{p}" for p in D.free_ports(2)]
    procs = [subprocess.Popen(_train_cmd(tmp_path, out, "--strategy", "multi_worker", *extra),
                              env=_env(TF_CONFIG=D.tf_config(hosts, i)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, encoding="utf-8")
             for i, out in enumerate(outs)]
    results = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return results


@pytest.mark.slow
def test_two_local_multi_worker_processes_only_chief_writes(tmp_path):
    _cohort(tmp_path)
    chief, worker = tmp_path / "chief_run", tmp_path / "worker_run"
    res = _two_workers(tmp_path, (chief, worker))
    for r in res:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "is not the chief" in res[1].stderr
    assert (chief / "model_best.keras").is_file() and (chief / "checkpoint" / "last.keras").is_file()
    assert list(worker.iterdir()) == []  # the worker wrote into a deleted temp folder only
    rec = json.loads((chief / "train_config.json").read_text(encoding="utf-8"))
    assert rec["distribution"]["workers"] == 2 and rec["distribution"]["replicas"] == 2
    assert rec["global_batch"] == 2 and rec["status"] == "complete"
    # resuming where only the chief sees the checkpoint (folder not shared) stops both, not a hang
    res = _two_workers(tmp_path, (chief, worker), "--epochs", "2")
    for r in res:
        assert r.returncode != 0 and "different epochs" in r.stderr, r.stderr[-3000:]
