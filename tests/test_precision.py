"""bmstudy.precision: which Keras policy a run asks for and gets, and bfloat16 training end to end."""
from __future__ import annotations

import json

import pytest

from bmstudy.plan import InferenceParams, TrainConfig
from bmstudy.precision import KERAS_POLICIES, PRECISIONS, native_bfloat16, resolve_here, resolve_precision

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


@pytest.mark.slow
def test_bfloat16_training_records_its_policy_and_exports_a_float32_model(tmp_path):
    import keras
    import numpy as np

    from bmstudy.training import custom_objects, load_trained, train
    from fake_preprocessed import write_cohort

    data = tmp_path / "pre"
    manifest = write_cohort(data, n=3)
    out = tmp_path / "run"
    cfg = TrainConfig.from_profile("tiny", epochs=1, steps_per_epoch=2, backbone="resnet18",
                                   precision="mixed_bfloat16")
    before = keras.mixed_precision.global_policy().name
    train(data, manifest, out, cfg)
    assert keras.mixed_precision.global_policy().name == before  # restored after training
    rec = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert rec["status"] == "complete" and rec["precision"] == "mixed_bfloat16"
    assert rec["config"]["precision"] == "mixed_bfloat16"
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


def test_predict_fn_resolves_auto_to_this_machines_policy():
    import keras
    import numpy as np

    from bmstudy.inference.network import make_predict_fn

    model = keras.Sequential([keras.Input((8, 8, 8, 1)), keras.layers.Conv3D(1, 1, activation="sigmoid")])
    fn = make_predict_fn(model, precision="auto")
    assert fn.precision == resolve_here("auto") and fn.precision in KERAS_POLICIES
    out = fn(np.zeros((1, 8, 8, 8, 1), np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 8, 8, 8, 1)
