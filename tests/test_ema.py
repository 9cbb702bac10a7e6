"""The weight EMA (bmstudy.training.ema): exact averages, exact swaps, and what sees which weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bmstudy.plan import TrainConfig
from fake_preprocessed import write_cohort


def _dense(use_ema: bool, momentum: float = 0.9):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.1, use_ema=use_ema, ema_momentum=momentum), loss="mse")
    return model


def _steps(model, n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    history = []
    for _ in range(n):
        model.train_on_batch(rng.random((4, 3)), rng.random((4, 2)))
        history.append([w.copy() for w in model.get_weights()])
    return history


def test_averaged_weights_are_the_exponential_average_and_the_raw_weights_come_back_exactly():
    from bmstudy.training.ema import averaged_weights, moving_averages

    model = _dense(True, momentum=0.9)
    assert moving_averages(model) is None  # not built before the first step
    history = _steps(model, 8)
    expected = [h.copy() for h in history[0]]  # the first step sets the average to the weights
    for weights in history[1:]:
        expected = [0.9 * e + 0.1 * w for e, w in zip(expected, weights)]
    raw = [w.copy() for w in model.get_weights()]
    with averaged_weights(model) as swapped:
        inside = [w.copy() for w in model.get_weights()]
    assert swapped
    for got, want, r in zip(inside, expected, raw):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.abs(got - r).max() > 1e-3  # the average is not the last step
    for after, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(after, r)  # bit-exact, unlike an add/subtract swap
    with pytest.raises(RuntimeError, match="inside"):
        with averaged_weights(model):
            raise RuntimeError("inside")
    for after, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(after, r)  # restored on errors too


def test_without_ema_nothing_is_swapped():
    from bmstudy.training.ema import averaged_weights, swap_averages

    model = _dense(False)
    _steps(model, 2)
    before = model.get_weights()
    assert swap_averages(model) is False
    with averaged_weights(model) as swapped:
        assert swapped is False
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_fit_validation_data_is_evaluated_with_the_averaged_weights():
    import keras

    from bmstudy.training.ema import averaged_weights, ema_evaluation_class

    model = _dense(True)
    _steps(model, 5)
    with averaged_weights(model):
        averaged = [w.copy() for w in model.get_weights()]
    raw = [w.copy() for w in model.get_weights()]
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

    rng = np.random.default_rng(2)
    model.evaluate(rng.random((4, 3)), rng.random((4, 2)), verbose=0,
                   callbacks=[ema_evaluation_class()(), Probe()])
    for got, want in zip(seen[0], averaged):
        np.testing.assert_array_equal(got, want)
    for after, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(after, r)


def test_ema_momentum_is_validated():
    assert TrainConfig.from_profile("paper").ema_momentum is None  # the paper: no averaging
    assert TrainConfig.from_profile("tiny", ema_momentum=0.99).ema_momentum == 0.99
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="ema_momentum"):
            TrainConfig.from_profile("tiny", ema_momentum=bad)
    # BatchNorm's running statistics belong to the raw weights: the average needs precise BN
    with pytest.raises(ValueError, match="precise_bn_patches"):
        TrainConfig.from_profile("paper", ema_momentum=0.99)
    assert TrainConfig.from_profile("paper", ema_momentum=0.99, precise_bn_patches=8).norm == "batch"
    assert TrainConfig.from_profile("cpu", norm="instance").ema_momentum == 0.99


@pytest.mark.slow
def test_ema_training_exports_the_average_and_resumes_exactly(tmp_path):
    """A killed EMA run resumes to the very weights and averages of an uninterrupted one (dropout masks
    included: the checkpoint keeps the seed-generator states), and model_best.keras holds the averaged
    weights of its epoch."""
    import keras

    from bmstudy.training import train
    from bmstudy.training.model import custom_objects

    data = tmp_path / "pre"
    manifest = write_cohort(data, n=3)
    cfg = TrainConfig.from_profile("tiny", epochs=2, steps_per_epoch=2, backbone="resnet18", ema_momentum=0.5,
                                   learning_rate=1e-3)

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated kill after epoch 1")

    class BestAverages(keras.callbacks.Callback):  # the averages at the end of every epoch
        def __init__(self, store):
            super().__init__()
            self.store = store

        def on_epoch_end(self, epoch, logs=None):
            opt = self.model.optimizer
            self.store[epoch] = [np.array(v.numpy()) for v in opt._model_variables_moving_average]

    averages: dict[int, list[np.ndarray]] = {}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(data, manifest, whole, cfg, extra_callbacks=[BestAverages(averages)])
    with pytest.raises(KeyboardInterrupt):
        train(data, manifest, killed, cfg, extra_callbacks=[Crash()])
    train(data, manifest, killed, cfg)

    def load(run):
        return keras.models.load_model(run / "checkpoint" / "last.keras", custom_objects=custom_objects(), compile=True)

    a, b = load(whole), load(killed)
    assert a.optimizer.use_ema and int(a.optimizer.iterations.numpy()) == 4
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.optimizer.variables, b.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    state = json.loads((whole / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert cfg.decoder_dropout > 0 and len(state["seed_states"]) > 0
    best = keras.models.load_model(whole / "model_best.keras", custom_objects=custom_objects(), compile=False)
    want = averages[state["best_epoch"]]
    got = [v.numpy() for v in best.trainable_variables]
    assert len(got) == len(want)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    assert max(np.abs(x - y).max() for x, y in zip(got, [v.numpy() for v in a.trainable_variables])) > 0


def test_best_model_without_an_inference_factory_holds_the_average_and_no_optimizer(tmp_path):
    import keras

    from bmstudy.training.checkpoint import BEST_MODEL, epoch_checkpoint_class
    from bmstudy.training.ema import averaged_weights

    model = _dense(True)
    _steps(model, 5)
    with averaged_weights(model):
        averaged = [w.copy() for w in model.get_weights()]
    raw = [w.copy() for w in model.get_weights()]
    callback = epoch_checkpoint_class()(tmp_path, "loss", mode="min")
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0})
    best = keras.models.load_model(tmp_path / BEST_MODEL)
    assert getattr(best, "optimizer", None) is None  # an inference model: no optimizer, so no swapped averages saved
    for got, want in zip(best.get_weights(), averaged):
        np.testing.assert_array_equal(got, want)
    for after, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(after, r)  # training goes on from the raw weights
