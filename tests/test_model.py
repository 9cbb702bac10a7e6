"""3D U-Net builder, loss and loading (bmstudy.training.model)."""
from __future__ import annotations

import numpy as np
import pytest

from bmstudy.training import build_model, check_patch_size, dice_bce_numpy, load_trained


def test_patch_size_validation():
    assert check_patch_size(64) == (64, 64, 64)
    assert check_patch_size((32, 64, 96)) == (32, 64, 96)
    for bad in (48, (32, 32), (32, 32, 0), (64, 64, 65)):
        with pytest.raises(ValueError, match="multiples of 32"):
            check_patch_size(bad)


def test_missing_weights_file_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_model(32, encoder_weights=tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="download"):
        build_model(32, encoder_weights="imagenet")
    with pytest.raises(ValueError, match="decoder_dropout"):
        build_model(32, decoder_dropout=1.0)


def test_load_trained_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_config.json"):
        load_trained(tmp_path)


@pytest.mark.slow
def test_model_at_cpu_profile_size_shape_range_and_decoder_dropout():
    from bmstudy.training import decoder_dropout_layers

    model = build_model(64, decoder_dropout=0.3)
    assert model.input_shape == (None, 64, 64, 64, 1)
    assert model.output_shape == (None, 64, 64, 64, 1)
    drops = decoder_dropout_layers(model)
    assert sorted(drops) == [0, 1, 2, 3, 4]  # one in EVERY decoder block
    assert all(type(d).__name__ == "SpatialDropout3D" and d.rate == pytest.approx(0.3) for d in drops.values())
    for stage, d in drops.items():  # each dropout closes its block: its input is that block's last ReLU
        assert d.input is model.get_layer(f"decoder_stage{stage}b_relu").output
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 64, 1)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (1, 64, 64, 64, 1) and np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    np.testing.assert_allclose(np.asarray(model(x, training=False)), y)  # inference is deterministic
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=True)))


@pytest.mark.slow
def test_encoder_weights_loaded_from_local_h5(tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    src = build_model(32, decoder_dropout=0.5)
    encoder = src.get_layer("encoder")
    # a stand-in in the same legacy-h5 layout as resnet34_inp_channel_3_tch_0_top_False.h5
    path = tmp_path / "resnet34_inp_channel_3_tch_0_top_False.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, encoder)
    dst = build_model(32, encoder_weights=path)
    got = dst.get_layer("encoder").get_weights()
    ref = encoder.get_weights()
    assert len(got) == len(ref) > 100
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    # the first conv takes 3 channels (input repeated), decoder weights are NOT taken from the file
    assert dst.get_layer("encoder").get_layer("conv0").kernel.shape[-2] == 3
    assert not np.array_equal(dst.get_layer("final_conv").get_weights()[0], src.get_layer("final_conv").get_weights()[0])
    bad = tmp_path / "garbage.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="garbage.h5"):
        build_model(32, encoder_weights=bad)


@pytest.mark.slow
def test_loss_equals_numpy_reference():
    from bmstudy.training import make_loss

    rng = np.random.default_rng(0)
    loss = make_loss()
    cases = [
        ((rng.random((2, 4, 4, 4, 1)) > 0.7).astype(np.float32), rng.random((2, 4, 4, 4, 1)).astype(np.float32)),
        (np.zeros((1, 4, 4, 4, 1), np.float32), rng.random((1, 4, 4, 4, 1)).astype(np.float32)),  # empty truth
        (np.ones((1, 2, 2, 2, 1), np.float32), np.ones((1, 2, 2, 2, 1), np.float32)),  # perfect -> ~0
    ]
    for t, p in cases:
        assert float(loss(t, p)) == pytest.approx(dice_bce_numpy(t, p), rel=1e-5, abs=1e-6)
    # hand-computed: t=[1,0], p=[0.5,0.5] -> dice = 1/1.5, bce = ln 2
    t = np.array([1, 0], np.float32).reshape(1, 2, 1, 1, 1)
    p = np.full_like(t, 0.5)
    expected = 0.5 * (1 - (2 * 0.5 + 1e-5) / (1 + 1 + 1e-5)) + 0.5 * np.log(2)
    assert float(loss(t, p)) == pytest.approx(expected, rel=1e-5)
    assert float(make_loss(1.0, 0.0)(t, p)) == pytest.approx(1 - (1 + 1e-5) / (2 + 1e-5), rel=1e-5)


def test_load_trained_names_the_missing_or_broken_file(tmp_path):
    (tmp_path / "train_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="model_best.keras"):
        load_trained(tmp_path)
    with pytest.raises(FileNotFoundError, match="last.keras"):
        load_trained(tmp_path, which="last")
    with pytest.raises(ValueError, match="'best' or 'last'"):
        load_trained(tmp_path, which="first")
    (tmp_path / "model_best.keras").write_bytes(b"")
    (tmp_path / "train_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_trained(tmp_path)


def test_bad_builder_arguments_fail_before_building():
    with pytest.raises(ValueError, match="dropout_type"):
        build_model(32, dropout_type="gaussian")
    with pytest.raises(ValueError, match="5 entries"):
        build_model(32, decoder_filters=(64, 32))
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model(48)


def test_group_and_instance_norm_replace_every_batchnorm_and_precise_bn_averages():
    """norm='instance'/'group' leave no BatchNorm (no running statistics); precise BN = mean batch statistics."""
    from bmstudy.training.model import build_model, norm_layers, recalibrate_batchnorm

    inst = build_model(None, None, 0.0, norm="instance")
    assert norm_layers(inst, "batch") == [] and len(norm_layers(inst, "group")) == 35 + 10
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(inst(x, training=True)), np.asarray(inst(x, training=False)), atol=1e-5)
    grp = build_model(None, None, 0.0, norm="group")
    assert {l.groups for l in norm_layers(grp, "group")} <= {1, 16}
    bn = build_model(None, None, 0.5)
    layers = norm_layers(bn, "batch")
    first = next(l for l in layers if l.name == "bn_data")  # normalises the (repeated) input image itself
    batches = [x[:1] * 1.0, x[1:] * 3.0 + 2.0]
    means = [float(b.mean()) for b in batches]
    assert recalibrate_batchnorm(bn, batches) == len(layers)
    np.testing.assert_allclose(np.asarray(first.moving_mean), [np.mean(means)] * 3, rtol=1e-4, atol=1e-5)
    variances = [float(b.var()) for b in batches]  # the mean of the batch variances, not the momentum blend
    np.testing.assert_allclose(np.asarray(first.moving_variance), [np.mean(variances)] * 3, rtol=1e-3)
    assert first.momentum == pytest.approx(0.99)  # restored


def test_groupnorm_model_round_trips_through_a_keras_file(tmp_path):
    """The cpu profile's GroupNorm model reloads (``custom_objects``) and predicts what it predicted before saving."""
    import keras

    from bmstudy.training.model import build_model, custom_objects, norm_layers

    model = build_model(None, None, 0.1, norm="group")
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 32, 1)).astype(np.float32)
    before = np.asarray(model.predict_on_batch(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", custom_objects=custom_objects(), compile=False)
    assert norm_layers(loaded, "batch") == [] and len(norm_layers(loaded, "group")) == len(norm_layers(model, "group"))
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), before, atol=1e-6)


def test_output_prior_sets_the_last_bias_to_its_logit():
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 32, 1)).astype(np.float32)
    plain = build_model(32, norm="group")
    prior = build_model(32, norm="group", output_prior=0.01)
    assert np.asarray(plain.get_layer("final_conv").bias).tolist() == [0.0]
    np.testing.assert_allclose(np.asarray(prior.get_layer("final_conv").bias), [np.log(0.01 / 0.99)], rtol=1e-6)
    assert 0.15 < float(np.mean(plain(x, training=False))) < 0.85  # untrained: around 0.5 (0.31-0.59 seen)
    assert float(np.mean(prior(x, training=False))) < 0.1       # untrained: about the prior
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="output_prior"):
            build_model(32, output_prior=bad)
