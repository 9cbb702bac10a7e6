"""Training profiles, case selection and the resumable training loop (bmstudy.training.loop)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bmstudy.training import TrainConfig, lesion_volumes, select_training_cases, split_validation
from fake_preprocessed import PARAMS, write_cohort


def test_profiles_follow_the_paper_and_budget():
    paper = TrainConfig.from_profile("paper")
    assert paper.patch_size == (128, 128, 128) and paper.batch_size == 4
    assert (paper.learning_rate, paper.beta_1, paper.beta_2, paper.epsilon) == (1e-4, 0.9, 0.999, 1e-7)
    assert (paper.dice_weight, paper.bce_weight, paper.decoder_dropout) == (0.5, 0.5, 0.5)
    assert (paper.inference_patch, paper.inference_stride) == (128, 64)
    cpu = TrainConfig.from_profile("cpu")
    assert cpu.patch_size == (64, 64, 64) and cpu.inference_patch == 128 and cpu.inference_stride == 64
    # the 2-core budget is in patches (~0.5 s per 64^3 patch in bfloat16): 16 x 50 steps of the paper's
    # batch 4, ~26 min of training, keeps make study well under 45 min
    assert cpu.batch_size == 4 and 100 <= cpu.steps_per_epoch * cpu.epochs * cpu.batch_size <= 3200
    # a weight EMA at the cpu profile (seed spread 0.059 -> 0.034 with it, see the deviations page)
    assert cpu.ema_momentum == 0.99 and paper.ema_momentum is None
    # half the background patches on bright non-lesion voxels (early over-segmentation, issue 11)
    assert cpu.hard_negative_fraction == 0.5 and paper.hard_negative_fraction == 0.0
    # issue 11: foreground oversampling (2/3 at the cpu profile: 1/3 learned nothing in 300-600 steps),
    # the rest in the head, whole-volume model selection, poly LR
    assert cpu.lesion_fraction == pytest.approx(2 / 3) and cpu.background_sampling == "head"
    assert cpu.monitor == "val_case_dice" and cpu.val_every >= 1 and cpu.lr_schedule == "poly"
    assert cpu.deterministic
    # per-sample GroupNorm at the cpu profile: BatchNorm on batches of 2 failed in eval mode (seed 1)
    assert (cpu.norm, cpu.precise_bn_patches) == ("group", 0)
    # the paper profile keeps BatchNorm, constant Adam 1e-4 and patch-loss selection
    assert (paper.norm, paper.lr_schedule, paper.monitor, paper.precise_bn_patches) == ("batch", "constant", "val_loss", 0)
    with pytest.raises(ValueError, match="norm"):
        TrainConfig.from_profile("cpu", norm="layer")
    tiny = TrainConfig.from_profile("tiny", epochs=3)
    assert tiny.patch_size == (32, 32, 32) and tiny.epochs == 3
    assert TrainConfig.from_dict(json.loads(json.dumps(cpu.to_dict()))) == cpu
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_profile("cpu", learning_rat=1)
    with pytest.raises(ValueError, match="unknown training profile"):
        TrainConfig.from_profile("gpu")
    with pytest.raises(ValueError, match="multiples of 32"):
        TrainConfig.from_profile("cpu", patch_size=(48, 48, 48))


def test_case_selection_and_validation_split(tmp_path):
    manifest = write_cohort(tmp_path, n=3)
    ids = select_training_cases(tmp_path, manifest)
    assert ids == ["P000", "P001", "P002"]  # 'test' split and failed case excluded
    tr, va = split_validation([f"C{i}" for i in range(20)], 0.15, seed=0)
    assert len(va) == 3 and len(tr) == 17 and not set(tr) & set(va)
    assert split_validation([f"C{i}" for i in range(20)], 0.15, seed=0) == (tr, va)
    assert split_validation(["A", "B"], 0.1, 0) [1] != []  # at least one validation case
    assert split_validation(["A"], 0.5, 0) == (["A"], [])
    with pytest.raises(FileNotFoundError, match="preprocess_report.csv"):
        select_training_cases(tmp_path / "nowhere", manifest)
    with pytest.raises(ValueError, match="no training cases"):
        select_training_cases(tmp_path, pd.DataFrame({"patient_id": ["P003"], "split": ["test"]}))


def test_stratified_validation_split_spans_the_lesion_burden():
    ids = [f"C{i:02d}" for i in range(32)]
    burden = {pid: float(i) ** 2 / 10 for i, pid in enumerate(ids)}  # rank i = id order
    ranks = {pid: i for i, pid in enumerate(ids)}
    starts = set()
    for seed in range(20):
        tr, va = split_validation(ids, 0.15, seed, strata=burden)
        assert len(va) == 5 and len(tr) == 27 and sorted(tr + va) == ids
        assert split_validation(ids, 0.15, seed, strata=burden) == (tr, va)  # deterministic
        r = sorted(ranks[v] for v in va)
        # one case per interval of 32/5 = 6.4 ranks: every seed sees the whole range of burden
        assert all(int(k * 6.4) <= r[k] < int((k + 1) * 6.4) + 1 for k in range(5)), (seed, r)
        starts.add(r[0])
    assert len(starts) >= 4  # the seed moves the start
    # a random draw can miss whole strata (the reason for stratifying): some seed puts no case
    # in the top fifth of the burden
    assert any(max(ranks[v] for v in split_validation(ids, 0.15, s)[1]) < 26 for s in range(20))
    with pytest.raises(ValueError, match="C00"):
        split_validation(ids, 0.15, 0, strata={k: v for k, v in burden.items() if k != "C00"})
    with pytest.raises(ValueError, match="finite"):
        split_validation(ids, 0.15, 0, strata={**burden, "C03": float("nan")})
    assert TrainConfig.from_profile("cpu").val_split == "stratified"
    with pytest.raises(ValueError, match="val_split"):
        TrainConfig.from_profile("cpu", val_split="kfold")


def test_lesion_volumes_count_mask_voxels_times_spacing(tmp_path):
    write_cohort(tmp_path, n=2)
    vols = lesion_volumes(tmp_path, ["P000", "P001"])
    for pid in ("P000", "P001"):
        n = int(np.count_nonzero(np.load(tmp_path / pid / "mask.npy")))
        assert PARAMS["spacing_mm"] == 0.833  # the fake cases' recorded voxel size
        assert vols[pid] == pytest.approx(n * 0.833 ** 3 / 1000.0) and vols[pid] > 0


def test_cli_arguments_map_to_config():
    from bmstudy.cli import build_parser
    from bmstudy.training import config_from_args

    args = build_parser().parse_args(["train", "--preprocessed", "p", "--manifest", "m.csv", "--out", "o",
                                      "--profile", "paper", "--patch-size", "64", "--epochs", "3"])
    cfg = config_from_args(args)
    assert cfg.profile == "paper" and cfg.patch_size == (64, 64, 64) and cfg.epochs == 3 and cfg.batch_size == 4
    assert not args.no_resume
    assert cfg.precision == "float32"  # the profile's
    args = build_parser().parse_args(["train", "--preprocessed", "p", "--manifest", "m.csv", "--out", "o",
                                      "--precision", "mixed_bfloat16"])
    assert config_from_args(args).precision == "mixed_bfloat16"


@pytest.mark.slow
def test_train_kill_and_resume_continues_checkpoint(tmp_path):
    import keras

    from bmstudy.training import load_trained, train

    data = tmp_path / "pre"
    manifest = write_cohort(data, n=3)
    out = tmp_path / "run"
    # ResNet-18: resuming does not depend on the encoder, and its graph builds ~1/3 faster than ResNet-34
    cfg = TrainConfig.from_profile("tiny", epochs=2, steps_per_epoch=2, learning_rate=2e-4, backbone="resnet18")

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated kill after epoch 1")

    with pytest.raises(KeyboardInterrupt):
        train(data, manifest, out, cfg, extra_callbacks=[Crash()])
    state = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 1 and state["iterations"] == 2
    assert state["monitor"] == "val_case_dice" and state["mode"] == "max" and state["best_epoch"] == 0
    assert state["best"] == pytest.approx(state["logs"]["val_case_dice"])  # whole-volume Dice selected the model
    first_best = state["best"]
    best_size = (out / "model_best.keras").stat().st_size
    assert 0 < best_size < 0.5 * (out / "checkpoint" / "last.keras").stat().st_size  # no optimizer state

    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["iterations"] = int(self.model.optimizer.iterations.numpy())
            seen["lr"] = float(self.model.optimizer.learning_rate.numpy())

        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("epochs", []).append(epoch)

    train(data, manifest, out, cfg, extra_callbacks=[Probe()])
    # the poly schedule continues at step 2 of 4: lr = 2e-4 * (1 - 2/4) ** 0.9
    assert seen == {"iterations": 2, "lr": pytest.approx(2e-4 * 0.5 ** 0.9, rel=1e-5), "epochs": [1]}
    state = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 2 and state["iterations"] == 4
    # the best-model record continued: the resumed run only replaces it by a strictly better epoch
    assert state["best"] == pytest.approx(max(first_best, state["logs"]["val_case_dice"]))
    assert state["best_epoch"] == (1 if state["logs"]["val_case_dice"] > first_best else 0)
    log = pd.read_csv(out / "training_log.csv")
    assert log["epoch"].tolist() == [0, 1] and np.isfinite(log["loss"]).all()
    assert np.isfinite(log["val_case_dice"]).all() and "val_lesion_sensitivity" in log and "lr" in log
    assert log["lr"].iloc[1] < log["lr"].iloc[0]  # poly decay
    cases = pd.read_csv(out / "validation_cases.csv")
    assert cases["epoch"].tolist() == [0, 1] and len(set(cases["patient_id"])) == 1
    rec = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert rec["status"] == "complete" and rec["inference_patch"] == 64 and rec["inference_stride"] == 32
    assert rec["determinism"]["op_determinism"] is True and rec["monitor"] == "val_case_dice"
    assert rec["preprocessing"] == PARAMS and rec["val_cases"] and not set(rec["val_cases"]) & set(rec["train_cases"])
    assert any((out / "logs").rglob("*tfevents*"))
    model, config = load_trained(out)
    assert config["patch_size"] == [32, 32, 32]
    y = np.asarray(model(np.zeros((1, 64, 64, 64, 1), np.float32)))  # fully convolutional
    assert y.shape == (1, 64, 64, 64, 1)
    with pytest.raises(ValueError, match="different config"):
        train(data, manifest, out, TrainConfig.from_profile("tiny", epochs=2, learning_rate=1e-3))


def test_resume_state_checks_config_and_log_is_truncated(tmp_path):
    from bmstudy.training import checkpoint
    from bmstudy.utils import atomic_write_json

    cfg = TrainConfig.from_profile("tiny", epochs=2)
    assert checkpoint.resume_state(tmp_path, cfg) is None  # no checkpoint: start afresh
    state = {"epoch": 1, "iterations": 2, "monitor": "val_loss", "best": 0.7, "logs": {"loss": 0.8}}
    atomic_write_json(tmp_path / "checkpoint" / "state.json", state)
    assert checkpoint.resume_state(tmp_path, cfg) == state  # no train_config.json: nothing to compare
    atomic_write_json(tmp_path / "train_config.json", {"config": cfg.to_dict(), "status": "running"})
    assert checkpoint.resume_state(tmp_path, TrainConfig.from_profile("tiny", epochs=5)) == state  # epochs may rise
    with pytest.raises(ValueError, match="different config"):
        checkpoint.resume_state(tmp_path, TrainConfig.from_profile("tiny", epochs=2, learning_rate=1e-3))

    log = tmp_path / "training_log.csv"
    checkpoint.truncate_log(log, 1)  # absent: nothing to do
    assert not log.exists()
    pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.9, 0.8, 0.7]}).to_csv(log, index=False)
    checkpoint.truncate_log(log, 3)
    assert pd.read_csv(log)["epoch"].tolist() == [0, 1, 2]
    checkpoint.truncate_log(log, 1)  # a crash after epoch 2 but before its checkpoint: rows 1, 2 go
    assert pd.read_csv(log).to_dict("list") == {"epoch": [0], "loss": [0.9]}


def test_training_package_exports_api_without_importing_tensorflow():
    import subprocess
    import sys

    code = ("import sys, bmstudy.training as t, bmstudy.plan as p\n"
            "assert all(hasattr(t, n) for n in t.__all__)\n"
            "assert t.TrainConfig is p.TrainConfig and t.AugmentParams is p.AugmentParams\n"
            "assert t.check_patch_size is p.check_patch_size and t.DIVISOR == p.DIVISOR == 32\n"
            "assert t.loop.TrainConfig is p.TrainConfig and t.model.check_patch_size is p.check_patch_size\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'volumentations') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _blob_predict(batch):
    """A deterministic fake network: probability = sigmoid of the intensity (bright lesions -> 1)."""
    return 1.0 / (1.0 + np.exp(-4.0 * (batch - 1.5)))


def test_whole_volume_validation_equals_predicting_the_cases(tmp_path):
    """Validation = the inference sliding window on the preprocessed arrays inside the brain + evaluation."""
    from bmstudy.evaluation.lesions import lesion_metrics
    from bmstudy.evaluation.voxel import case_metrics
    from bmstudy.inference.sliding_window import sliding_window_predict
    from bmstudy.training import validation

    write_cohort(tmp_path, n=3)
    cases = validation.load_validation_cases(tmp_path, ["P000", "P001", "P002"])
    assert cases[0].spacing == (0.833,) * 3 and cases[0].brain is not None
    per_case = validation.validate_cases(_blob_predict, cases, patch=32, stride=16)
    assert per_case["patient_id"].tolist() == ["P000", "P001", "P002"]
    for case, row in zip(cases, per_case.itertuples()):
        prob = sliding_window_predict(np.asarray(case.image), _blob_predict, 32, 16)  # as predict_case does
        prob[np.asarray(case.brain) == 0] = 0.0
        np.testing.assert_array_equal(validation.predict_volume(case, _blob_predict, 32, 16), prob)
        ref = case_metrics(prob, case.mask, threshold=0.5)
        assert row.dice == pytest.approx(ref["dice"], abs=1e-12)
        les = lesion_metrics(prob >= 0.5, case.mask, case.spacing)
        assert row.lesion_sensitivity == pytest.approx(les["lesion_sensitivity"])
        assert (row.n_true, row.n_detected, row.n_fp) == (les["n_true"], les["n_detected"], les["n_fp"])
    assert per_case["dice"].min() > 0.5  # the fake network finds the bright lesions
    summary = validation.summarise(per_case)
    assert set(summary) == set(validation.SUMMARY_KEYS)
    assert summary["val_case_dice"] == pytest.approx(per_case["dice"].mean())
    assert summary["val_case_dice_min"] == pytest.approx(per_case["dice"].min())
    from sklearn.metrics import f1_score  # pooled Dice over all validation voxels = F1 of the concatenation

    preds = np.concatenate([(validation.predict_volume(c, _blob_predict, 32, 16) >= 0.5).ravel() for c in cases])
    truths = np.concatenate([(np.asarray(c.mask) > 0).ravel() for c in cases])
    assert summary["val_global_dice"] == pytest.approx(f1_score(truths, preds), abs=1e-12)
    assert (per_case[["tp", "fp", "fn", "tn"]].sum(axis=1) == [np.asarray(c.mask).size for c in cases]).all()
    empty = validation.summarise(per_case.iloc[:0])
    assert all(np.isnan(v) for v in empty.values())


def test_monitor_mode_and_missing_validation():
    from bmstudy.training import checkpoint, loop

    assert checkpoint.monitor_mode("val_case_dice") == "max" and checkpoint.monitor_mode("val_loss") == "min"
    assert checkpoint.initial_best("max") == -np.inf
    cfg = TrainConfig.from_profile("cpu")
    assert loop.select_monitor(cfg, ["A"]) == "val_case_dice" and loop.select_monitor(cfg, []) == "loss"
    with pytest.raises(ValueError, match="val_every"):
        loop.select_monitor(TrainConfig.from_profile("cpu", val_every=0), ["A"])


def test_training_curves_plot_whole_volume_validation_beside_patch_losses():
    from bmstudy.reporting import figures

    log = pd.DataFrame({"epoch": [0, 1, 2, 3], "loss": [0.9, 0.7, 0.6, 0.5], "val_loss": [1.0, 0.8, 0.9, 0.7],
                        "dice_score": [0.1, 0.3, 0.4, 0.5], "lr": [3e-4, 2e-4, 1e-4, 0.0],
                        "val_case_dice": [np.nan, 0.4, np.nan, 0.6], "val_lesion_sensitivity": [np.nan, 0.5, np.nan, 0.8],
                        "val_fp_per_case": [np.nan, 3.0, np.nan, 1.0]})
    fig = figures.training_curves(log)
    loss_ax, patch_ax, volume_ax = fig.axes
    assert [l.get_label() for l in volume_ax.lines] == ["val_case_dice", "val_lesion_sensitivity"]
    np.testing.assert_array_equal(volume_ax.lines[0].get_xdata(), [2, 4])  # validated epochs only, 1-based
    assert [l.get_label() for l in patch_ax.lines] == ["dice_score"]
    assert "whole-volume" in volume_ax.get_title()


def test_validation_rows_append_without_rewriting_earlier_floats(tmp_path):
    """Each whole-volume validation appends to validation_cases.csv; earlier rows keep their exact text."""
    from bmstudy.training.validation import append_rows

    path = tmp_path / "validation_cases.csv"
    first = pd.DataFrame({"epoch": [2, 2], "patient_id": ["INT017", "007"], "dice": [0.44419633956696836, 0.1 + 0.2]})
    append_rows(path, first)
    text = path.read_text(encoding="utf-8")
    append_rows(path, first.assign(epoch=5))
    again = path.read_text(encoding="utf-8")
    assert again.startswith(text) and len(again.splitlines()) == 5
    table = pd.read_csv(path, dtype={"patient_id": str}, float_precision="round_trip")
    assert table["patient_id"].tolist()[:2] == ["INT017", "007"] and table["dice"].iloc[0] == 0.44419633956696836


def test_finite_weights_guard_names_the_epoch_and_the_variables():
    import keras

    from bmstudy.training.checkpoint import finite_weights_guard_class, nonfinite_weights

    model = keras.Sequential([keras.Input((4, 4, 4, 1)), keras.layers.Conv3D(2, 1, name="c1"),
                              keras.layers.BatchNormalization(name="bn")])
    guard = finite_weights_guard_class()()
    guard.set_model(model)
    guard.on_epoch_end(0)  # finite: nothing happens
    assert nonfinite_weights(model) == []
    var = model.get_layer("bn").moving_variance
    var.assign(np.array([1.0, np.inf], np.float32))
    assert nonfinite_weights(model) == [var.path]
    with pytest.raises(RuntimeError, match=r"diverged in epoch 3: 1 variable\(s\).*moving_variance"):
        guard.on_epoch_end(2)


@pytest.mark.slow
def test_a_diverged_epoch_is_neither_validated_nor_saved(tmp_path):
    import keras

    from bmstudy.training import train

    data = tmp_path / "pre"
    manifest = write_cohort(data, n=3)
    out = tmp_path / "run"
    cfg = TrainConfig.from_profile("tiny", epochs=2, steps_per_epoch=1, backbone="resnet18")

    class Poison(keras.callbacks.Callback):  # the second epoch's update leaves a NaN kernel
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 2:
                w = self.model.get_layer("final_conv").kernel
                w.assign(np.full(w.shape, np.nan, np.float32))

    with pytest.raises(RuntimeError, match=r"diverged in epoch 2: 1 variable\(s\) .*final_conv/kernel"):
        train(data, manifest, out, cfg, extra_callbacks=[Poison()])
    state = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 1 and state["best_epoch"] == 0  # the checkpoint holds the finite epoch
    assert pd.read_csv(out / "validation_cases.csv")["epoch"].tolist() == [0]
    assert (out / "model_best.keras").is_file()


def test_hard_negative_settings_are_validated():
    assert TrainConfig.from_profile("paper").hard_negative_fraction == 0.0  # the paper: no hard negatives
    assert TrainConfig.from_profile("tiny", hard_negative_fraction=0.5).hard_negative_fraction == 0.5
    for bad, match in ((dict(hard_negative_fraction=1.2), "hard_negative_fraction"),
                       (dict(hard_negative_quantile=1.0), "hard_negative_quantile"),
                       (dict(hard_negative_fraction=0.5, background_sampling="volume"), "background_sampling='head'")):
        with pytest.raises(ValueError, match=match):
            TrainConfig.from_profile("tiny", **bad)


def test_seed_generator_states_round_trip_and_mismatches_are_refused():
    import keras

    from bmstudy.training.checkpoint import restore_seed_generator_states, seed_generator_states

    def net():
        return keras.Sequential([keras.Input((8,)), keras.layers.Dropout(0.5), keras.layers.Dense(4),
                                 keras.layers.Dropout(0.5)])

    a = net()
    x = np.ones((2, 8), np.float32)
    a(x, training=True)  # draws a mask: the first generator's counter moves
    states = seed_generator_states(a)
    assert len(states) == 2 and all(len(s) == 2 for s in states)
    b = net()
    assert seed_generator_states(b) != states
    restore_seed_generator_states(b, json.loads(json.dumps(states)))  # through state.json
    assert seed_generator_states(b) == states
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(np.asarray(a(x, training=True)), np.asarray(b(x, training=True)))  # same masks
    with pytest.raises(ValueError, match="1 seed-generator state"):
        restore_seed_generator_states(b, states[:1])
    with pytest.raises(ValueError, match="shape"):
        restore_seed_generator_states(b, [[1, 2, 3], [1, 2]])
