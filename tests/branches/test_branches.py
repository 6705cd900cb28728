"""Branches: tap shapes for several configurations, numbers of the audio
front end, masking of the text branch, and that each branch trains."""

import keras
import numpy as np
import pytest

from mmfusion.branches import (audio_cnn, image_cnn, tabular_mlp, tap_shapes, text_lstm,
                               text_vectorizer)
from mmfusion.branches.audio import MIN_POWER
from mmfusion.branches.text import standardize_text


def shapes(branch, x):
    return {k: tuple(v.shape) for k, v in branch(x).items()}


@pytest.mark.parametrize("input_shape, filters, pool, pooling, emb, expected", [
    ((16, 16, 1), (16, 32), 2, "flatten", None,
     {"block_1": (2, 8, 8, 16), "block_2": (2, 4, 4, 32), "vector": (2, 512)}),
    ((8, 8, 3), (4,), 2, "avg", None, {"block_1": (2, 4, 4, 4), "vector": (2, 4)}),
    ((9, 9, 1), (4, 4, 8), 2, "max", 5,
     {"block_1": (2, 5, 5, 4), "block_2": (2, 3, 3, 4), "block_3": (2, 2, 2, 8), "vector": (2, 5)}),
    ((6, 6, 1), (3,), 1, "flatten", None, {"block_1": (2, 6, 6, 3), "vector": (2, 108)}),
])
def test_image_cnn_taps(input_shape, filters, pool, pooling, emb, expected):
    branch = image_cnn(input_shape, filters=filters, pool_size=pool, pooling=pooling,
                       embedding_dim=emb)
    assert shapes(branch, np.zeros((2,) + input_shape, "float32")) == expected
    assert tap_shapes(branch) == {k: (None,) + v[1:] for k, v in expected.items()}
    assert branch.name == "image_branch" and branch.input.name == "image"


@pytest.mark.parametrize("n, step, mels, filters, expected", [
    (6000, 192, 32, (16, 32, 32), {"log_mel": (2, 32, 32, 1), "block_1": (2, 16, 16, 16),
                                   "block_2": (2, 8, 8, 32), "block_3": (2, 4, 4, 32),
                                   "vector": (2, 512)}),
    (1000, 100, 8, (4,), {"log_mel": (2, 8, 11, 1), "block_1": (2, 4, 6, 4), "vector": (2, 96)}),
])
def test_audio_cnn_taps(n, step, mels, filters, expected):
    branch = audio_cnn(n, frame_step=step, num_mel_bins=mels, filters=filters)
    assert shapes(branch, np.zeros((2, n), "float32")) == expected


def test_audio_front_end_is_db_without_nan():
    """Silence sits at the -60 dB floor (no NaN: the dB conversion is not
    followed by another log); a 1 kHz tone peaks in the mel bin around 1 kHz
    and is far above the floor."""
    branch = audio_cnn(2000, num_mel_bins=16, filters=(2,))
    t = np.arange(2000) / 8000.0
    x = np.stack([np.zeros(2000), 0.5 * np.sin(2 * np.pi * 1000 * t)]).astype("float32")
    # At inference the fresh BatchNormalization divides by sqrt(1 + 1e-3).
    db = keras.ops.convert_to_numpy(branch(x)["log_mel"])[..., 0] * np.sqrt(1 + 1e-3)
    assert np.isfinite(db).all()
    np.testing.assert_allclose(db[0], 10 * np.log10(MIN_POWER), atol=1e-3)
    mel = keras.layers.MelSpectrogram(fft_length=256, sampling_rate=8000, num_mel_bins=16)
    edges = mel._hertz_to_mel(np.array([20.0, 4000.0]))
    centers = np.linspace(edges[0], edges[1], 18)[1:-1]
    expected_bin = np.argmin(np.abs(centers - mel._hertz_to_mel(1000.0)))
    profile = db[1][:, 2:-2].mean(axis=1)
    assert abs(int(np.argmax(profile)) - int(expected_bin)) <= 1
    assert profile.max() > 10 * np.log10(MIN_POWER) + 60


@pytest.mark.parametrize("units, bidirectional, expected", [
    ((8,), True, {"embedding": (3, 6, 4), "lstm_1": (3, 6, 16), "vector": (3, 16)}),
    ((8, 5), False, {"embedding": (3, 6, 4), "lstm_1": (3, 6, 8), "lstm_2": (3, 6, 5),
                     "vector": (3, 5)}),
])
def test_text_lstm_taps(units, bidirectional, expected):
    branch = text_lstm(30, sequence_length=6, embedding_dim=4, units=units,
                       bidirectional=bidirectional)
    assert shapes(branch, np.ones((3, 6), "int32")) == expected


def test_text_lstm_masks_padding():
    """Trailing padding does not change the final state: a length-6 model on
    `[5, 3, 0, 0, 0, 0]` equals a length-2 model with the same weights on `[5, 3]`."""
    long = text_lstm(10, sequence_length=6, embedding_dim=4, units=(3,), bidirectional=True)
    short = text_lstm(10, sequence_length=2, embedding_dim=4, units=(3,), bidirectional=True)
    short.set_weights(long.get_weights())
    a = keras.ops.convert_to_numpy(long(np.array([[5, 3, 0, 0, 0, 0]]))["vector"])
    b = keras.ops.convert_to_numpy(short(np.array([[5, 3]]))["vector"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a).max() > 1e-3


def test_text_vectorizer_standardizes_and_pads():
    assert standardize_text(np.array(["Fünf, PLUS zwei!"])).numpy()[0].decode() == "fünf  plus zwei "
    vectorizer = text_vectorizer(["fünf plus zwei", "zwei"], sequence_length=5)
    vocab = vectorizer.get_vocabulary()
    ids = vectorizer(["ZWEI plus FÜNF drei"]).numpy()[0].tolist()
    assert ids == [vocab.index("zwei"), vocab.index("plus"), vocab.index("fünf"), 1, 0]


def test_image_cnn_normalized_embedding_is_batch_normalized_before_its_relu():
    keras.utils.set_random_seed(0)
    branch = image_cnn((8, 8, 1), filters=(4,), embedding_dim=6, normalize_embedding=True)
    x = np.random.default_rng(0).random((10, 8, 8, 1)).astype("float32")
    flat = keras.Model(branch.inputs, branch.get_layer("image_flatten").output)
    h = keras.ops.convert_to_numpy(flat(x, training=True)) @ branch.get_layer(
        "image_embedding").kernel.numpy()
    epsilon = branch.get_layer("image_embedding_bn").epsilon
    expected = np.maximum((h - h.mean(0)) / np.sqrt(h.var(0) + epsilon), 0)  # γ = 1, β = 0
    vector = keras.ops.convert_to_numpy(branch(x, training=True)["vector"])
    np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-4)
    assert branch.get_layer("image_embedding").bias is None


def test_tabular_mlp_computes_relu_layers():
    branch = tabular_mlp(3, units=(4, 2))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    w1, b1, w2, b2 = branch.get_weights()
    hidden = np.maximum(x @ w1 + b1, 0)
    taps = {k: keras.ops.convert_to_numpy(v) for k, v in branch(x).items()}
    np.testing.assert_allclose(taps["dense_1"], hidden, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(taps["vector"], np.maximum(hidden @ w2 + b2, 0), rtol=1e-5, atol=1e-6)


def test_empty_units_and_non_branch_are_errors():
    with pytest.raises(ValueError, match="at least one"):
        tabular_mlp(3, units=())
    with pytest.raises(ValueError, match="at least one"):
        text_lstm(10, units=())
    x = keras.Input((2,))
    with pytest.raises(ValueError, match="not a branch"):
        tap_shapes(keras.Model(x, keras.layers.Dense(1)(x)))


@pytest.mark.parametrize("make, x", [
    (lambda: image_cnn((8, 8, 1), filters=(4, 8)), np.random.default_rng(0).random((16, 8, 8, 1))),
    (lambda: audio_cnn(800, frame_step=100, num_mel_bins=8, filters=(4,)),
     np.random.default_rng(0).normal(size=(16, 800))),
    (lambda: text_lstm(12, sequence_length=5, embedding_dim=4, units=(6,)),
     np.random.default_rng(0).integers(1, 12, size=(16, 5))),
    (lambda: tabular_mlp(4, units=(8, 8)), np.random.default_rng(0).normal(size=(16, 4))),
], ids=["image", "audio", "text", "tabular"])
def test_branch_trains_on_tiny_batch(make, x):
    keras.utils.set_random_seed(0)
    branch = make()
    inputs = keras.Input(branch.input.shape[1:], dtype=branch.input.dtype)
    model = keras.Model(inputs, keras.layers.Dense(2)(branch(inputs)["vector"]))
    model.compile(keras.optimizers.Adam(0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.arange(16) % 2
    losses = model.fit(x, y, epochs=20, batch_size=16, verbose=0).history["loss"]
    assert losses[-1] < 0.75 * losses[0], losses
