import keras
import numpy as np
import pytest

from mmfusion.fusion import ModalityDropout

BATCH = 20000


def _masks(layer, n=2, presence=None, training=True):
    inputs = [np.zeros((BATCH if presence is None else len(presence), 1), "float32")] * n
    return keras.ops.convert_to_numpy(layer(inputs, presence=presence, training=training))


def test_inference_returns_incoming_mask_or_ones():
    layer = ModalityDropout(rate=0.9, seed=0)
    presence = np.array([[1, 0], [0, 1], [1, 1]], "float32")
    np.testing.assert_array_equal(_masks(layer, presence=presence, training=False), presence)
    np.testing.assert_array_equal(_masks(layer, training=False), np.ones((BATCH, 2)))


def test_drop_rate_and_never_all_dropped():
    masks = _masks(ModalityDropout(rate=0.5, seed=0))
    assert masks.min(axis=1).min() == 0 and masks.sum(axis=1).min() == 1
    # Dropped alone (r(1 − r)) or in a rescued pair that kept the other one (r² / 2).
    np.testing.assert_allclose(1 - masks.mean(axis=0), [0.375, 0.375], atol=0.015)
    np.testing.assert_allclose((masks.sum(axis=1) == 2).mean(), 0.25, atol=0.015)


def test_per_modality_rates():
    masks = _masks(ModalityDropout(rate=[0.0, 0.6, 0.3], seed=1), n=3)
    np.testing.assert_allclose(1 - masks.mean(axis=0), [0.0, 0.6, 0.3], atol=0.015)


def test_incoming_absences_are_kept():
    presence = np.tile(np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], "float32"), (3000, 1))
    masks = _masks(ModalityDropout(rate=0.7, seed=2), n=3, presence=presence)
    assert np.all(masks <= presence)
    np.testing.assert_array_equal(masks[1::3], presence[1::3])  # the only modality stays
    np.testing.assert_array_equal(masks[2::3], 0)
    assert masks[0::3].sum(axis=1).min() == 1
    # Kept (1 − r), or rescued from a fully dropped pair (r² / 2).
    np.testing.assert_allclose(masks[0::3, [0, 2]].mean(axis=0), [0.545, 0.545], atol=0.03)


def test_seeded_layers_repeat_and_calls_differ():
    first, second = ModalityDropout(rate=0.5, seed=3), ModalityDropout(rate=0.5, seed=3)
    a, b = _masks(first), _masks(second)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_masks(first), a)


def test_dict_inputs_follow_modalities_order():
    layer = ModalityDropout(rate=[0.0, 0.9], seed=4, modalities=["text", "image"])
    inputs = {"image": np.zeros((BATCH, 1)), "text": np.zeros((BATCH, 1))}
    masks = keras.ops.convert_to_numpy(layer(inputs, training=True))
    assert masks[:, 0].min() == 1 and masks[:, 1].mean() < 0.2


def test_in_a_model_drops_only_while_fitting(tmp_path):
    x = keras.Input(shape=(3,))
    presence = ModalityDropout(rate=0.5, seed=5)([x, x])
    model = keras.Model(x, presence)
    np.testing.assert_array_equal(model.predict(np.ones((8, 3)), verbose=0), np.ones((8, 2)))
    model.save(tmp_path / "drop.keras")
    reloaded = keras.saving.load_model(tmp_path / "drop.keras")
    assert reloaded.layers[-1].get_config()["rate"] == 0.5
    assert reloaded.layers[-1].get_config()["seed"] == 5


def test_bad_rates_are_rejected():
    with pytest.raises(ValueError, match="rate must be in \\[0, 1\\)"):
        ModalityDropout(rate=1.0)
    with pytest.raises(ValueError, match="ModalityDropout.*2 rates.*3 modalities"):
        _masks(ModalityDropout(rate=[0.1, 0.2]), n=3)


def test_warmup_grows_the_rate_linearly_then_holds_it():
    """Per-modality drop fraction of call k is rate · min(k / S, 1); the
    expected fractions (dropped alone, or in a rescued pair) come from the
    effective rate r: r(1 − r) + r²/2."""
    layer = ModalityDropout(rate=[0.0, 0.6], seed=5, warmup_steps=4)
    dropped = [1 - _masks(layer)[:, 1].mean() for _ in range(6)]
    # With one modality never dropped, no row is emptied: the fraction is the rate.
    np.testing.assert_allclose(dropped, [0.0, 0.15, 0.3, 0.45, 0.6, 0.6], atol=0.015)
    assert float(keras.ops.convert_to_numpy(layer.step)) == 4.0  # capped
    _masks(layer, training=False)  # inference does not advance the schedule
    assert float(keras.ops.convert_to_numpy(layer.step)) == 4.0


def test_warmup_step_is_saved_and_validated(tmp_path):
    inputs = [keras.Input((1,)), keras.Input((1,))]
    model = keras.Model(inputs, ModalityDropout(0.5, seed=6, warmup_steps=10)(inputs))
    model.compile(loss="mse")
    x = [np.zeros((64, 1), "float32")] * 2
    model.fit(x, np.ones((64, 2), "float32"), batch_size=16, epochs=1, verbose=0)  # 4 steps
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path).layers[-1]
    assert reloaded.warmup_steps == 10
    assert float(keras.ops.convert_to_numpy(reloaded.step)) == 4.0
    plain = ModalityDropout(0.5)
    _masks(plain)
    assert not plain.weights  # no warm-up, no weights
    with pytest.raises(ValueError, match="warmup_steps"):
        ModalityDropout(0.5, warmup_steps=-1)
