"""bmstudy.precision: which Keras policy a run asks for and gets, and bfloat16 training end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bmstudy.plan import InferenceParams, TrainConfig
from bmstudy.precision import KERAS_POLICIES, PRECISIONS, native_bfloat16, resolve_here, resolve_precision

TESTS = Path(__file__).resolve().parent
_EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n"
_OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


def test_native_bfloat16_reads_the_cpu_flags(tmp_path):
    (tmp_path / "epyc").write_text(_EPYC)
    (tmp_path / "old").write_text(_OLD)
    (tmp_path / "amx").write_text("flags : fpu amx_tile amx_bf16\n")
    assert native_bfloat16(tmp_path / "epyc") and native_bfloat16(tmp_path / "amx")
    assert not native_bfloat16(tmp_path / "old")
    assert not native_bfloat16(tmp_path / "missing")  # unreadable -> no native bfloat16
    (tmp_path / "noflags").write_text("processor\t: 0\nmodel name\t: x\n")
    assert not native_bfloat16(tmp_path / "noflags")


@pytest.mark.parametrize(("requested", "gpu", "native", "expected"), [
    ("auto", False, True, "mixed_bfloat16"),
    ("auto", False, False, "float32"),   # emulated bfloat16 would be slower than float32
    ("auto", True, True, "float32"),     # on a GPU mixed_float16 is an explicit choice
    ("mixed_float16", False, True, "float32"),  # no fast float16 kernels on a CPU
    ("mixed_float16", True, False, "mixed_float16"),
    ("mixed_bfloat16", False, False, "mixed_bfloat16"),  # asked for explicitly: honoured
    ("float32", True, True, "float32"),
])
def test_resolve_precision_table(requested, gpu, native, expected):
    assert resolve_precision(requested, gpu, native) == expected
    assert expected in KERAS_POLICIES


def test_unknown_precisions_are_refused_everywhere():
    for call in (lambda: resolve_precision("bfloat16", False, True), lambda: resolve_here("half"),
                 lambda: TrainConfig.from_profile("tiny", precision="fp16"),
                 lambda: InferenceParams(precision="bf16")):
        with pytest.raises(ValueError, match="precision must be one of"):
            call()
    assert set(PRECISIONS) == set(KERAS_POLICIES) | {"auto"}
    assert TrainConfig.from_profile("paper").precision == "float32"  # the paper's float32 stays
    assert InferenceParams(precision="auto").precision == "auto"
    assert resolve_here("float32") == "float32" and resolve_here("mixed_bfloat16") == "mixed_bfloat16"


_BF16_TRAIN = """
import json, sys
from pathlib import Path
import keras
from bmstudy.plan import TrainConfig
from bmstudy.training import train
from fake_preprocessed import write_cohort
root = Path(sys.argv[1])
manifest = write_cohort(root / "pre", n=3)
cfg = TrainConfig.from_profile("tiny", epochs=1, steps_per_epoch=2, backbone="resnet18", precision="mixed_bfloat16")
before = keras.mixed_precision.global_policy().name
train(root / "pre", manifest, root / "run", cfg)
print("RESULT " + json.dumps([before, keras.mixed_precision.global_policy().name]))
"""


@pytest.mark.slow
def test_bfloat16_training_records_its_policy_and_exports_a_float32_model(tmp_path):
    """In a fresh process, as a study stage trains (bfloat16 training needs its one inter-op thread)."""
    import keras
    import numpy as np

    from bmstudy.training import custom_objects, load_trained

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _BF16_TRAIN, str(tmp_path)], env=env, capture_output=True,
                       text=True, encoding="utf-8", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    before, after = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert after == before  # the global policy is restored after training
    out = tmp_path / "run"
    rec = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert rec["status"] == "complete" and rec["precision"] == "mixed_bfloat16"
    assert rec["config"]["precision"] == "mixed_bfloat16" and rec["determinism"]["inter_op_threads"] == 1
    log = (out / "training_log.csv").read_text(encoding="utf-8")
    assert "val_case_dice" in log
    model, _ = load_trained(out)
    policies = {layer.dtype_policy.name for m in [model, *[x for x in model.layers if isinstance(x, keras.Model)]]
                for layer in m.layers}
    assert policies == {"float32"}, policies  # the exported model is float32: inference picks its own policy
    y = np.asarray(model(np.zeros((1, 32, 32, 32, 1), np.float32)))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    last = keras.models.load_model(out / "checkpoint" / "last.keras", compile=False,
                                   custom_objects=custom_objects())
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in last.layers)  # resume keeps the policy


_POOL_PROBE = """
import json, sys
import tensorflow as tf
from bmstudy.training.determinism import cpu_bfloat16_policy
if sys.argv[1] == "late":
    tf.constant(1.0) + 1.0  # starts the runtime with TensorFlow's default inter-op pool
try:
    print("RESULT " + json.dumps(cpu_bfloat16_policy(sys.argv[2], sys.argv[3])))
except RuntimeError as exc:
    print("RESULT " + json.dumps("error: " + str(exc)))
"""


@pytest.mark.parametrize(("when", "requested", "strategy", "expected"), [
    ("early", "auto", "default", "mixed_bfloat16"),
    ("early", "mixed_bfloat16", "auto", "mixed_bfloat16"),
    ("late", "auto", "default", "float32"),          # the default pool: auto falls back, with a warning
    ("late", "mixed_bfloat16", "default", "error"),  # asked for explicitly: refused, saying what to do
    ("early", "auto", "mirrored", "float32"),        # several replicas need the default pool
])
def test_cpu_bfloat16_training_gets_one_inter_op_thread_or_falls_back(when, requested, strategy, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
    r = subprocess.run([sys.executable, "-c", _POOL_PROBE, when, requested, strategy], env=env, capture_output=True,
                       text=True, encoding="utf-8", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    if expected == "error":
        assert got.startswith("error: ") and "TF_NUM_INTEROP_THREADS=1" in got and "NaN" in got
    else:
        assert got == expected
    if expected == "float32":
        assert "training in float32" in r.stderr


def test_predict_fn_resolves_auto_to_this_machines_policy():
    import keras
    import numpy as np

    from bmstudy.inference.network import make_predict_fn

    model = keras.Sequential([keras.Input((8, 8, 8, 1)), keras.layers.Conv3D(1, 1, activation="sigmoid")])
    fn = make_predict_fn(model, precision="auto")
    assert fn.precision == resolve_here("auto") and fn.precision in KERAS_POLICIES
    out = fn(np.zeros((1, 8, 8, 8, 1), np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 8, 8, 8, 1)
