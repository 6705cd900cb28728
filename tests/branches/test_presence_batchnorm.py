"""BatchNorm statistics that exclude absent rows: the leak test (changing
only absent rows' placeholder images leaves present rows' training outputs
unchanged) and the statistics against NumPy."""

import keras
import numpy as np

from mmfusion.branches import audio_cnn, image_cnn
from mmfusion.branches.common import PresenceBatchNormalization


def batch(placeholder_seed):
    rng = np.random.default_rng(0)
    x = rng.random((8, 8, 8, 1)).astype("float32")
    presence = np.array([1, 0, 1, 1, 0, 1, 0, 1], "float32")[:, None]
    fill = np.random.default_rng(placeholder_seed).normal(5, 3, x.shape).astype("float32")
    x[presence[:, 0] == 0] = 0 if placeholder_seed is None else fill[presence[:, 0] == 0]
    return x, presence


def training_vectors(branch, placeholder_seed, with_presence):
    x, presence = batch(placeholder_seed)
    feeds = {"image": x, "image_presence": presence} if with_presence else x
    return keras.ops.convert_to_numpy(branch(feeds, training=True)["vector"]), presence[:, 0] == 1


def test_absent_placeholders_do_not_change_present_rows_in_training():
    keras.utils.set_random_seed(0)
    branch = image_cnn((8, 8, 1), filters=(4, 8), presence=True)
    zeros, present = training_vectors(branch, None, True)
    noise, _ = training_vectors(branch, 1, True)
    np.testing.assert_allclose(noise[present], zeros[present], rtol=1e-5, atol=1e-5)
    assert np.abs(noise[~present] - zeros[~present]).max() > 0.1  # absent rows do differ

    keras.utils.set_random_seed(0)
    embedded = image_cnn((8, 8, 1), filters=(4, 8), embedding_dim=5, normalize_embedding=True,
                         presence=True)
    zeros, _ = training_vectors(embedded, None, True)
    noise, _ = training_vectors(embedded, 1, True)
    np.testing.assert_allclose(noise[present], zeros[present], rtol=1e-5, atol=1e-5)

    keras.utils.set_random_seed(0)
    plain = image_cnn((8, 8, 1), filters=(4, 8))
    zeros, _ = training_vectors(plain, None, False)
    noise, _ = training_vectors(plain, 1, False)
    assert np.abs(noise[present] - zeros[present]).max() > 0.05  # the leak without presence


def test_audio_branch_excludes_absent_rows_too():
    keras.utils.set_random_seed(0)
    branch = audio_cnn(800, frame_step=100, num_mel_bins=8, filters=(4,), presence=True)
    rng = np.random.default_rng(0)
    waves = rng.normal(size=(6, 800)).astype("float32")
    presence = np.array([1, 0, 1, 1, 0, 1], "float32")[:, None]
    other = waves.copy()
    other[presence[:, 0] == 0] = rng.normal(0, 10, (2, 800))
    out = [keras.ops.convert_to_numpy(branch({"audio": w, "audio_presence": presence},
                                             training=True)["vector"]) for w in (waves, other)]
    keep = presence[:, 0] == 1
    np.testing.assert_allclose(out[0][keep], out[1][keep], rtol=1e-4, atol=1e-4)


def test_statistics_are_over_present_rows_only():
    x = np.random.default_rng(3).normal(size=(6, 3, 3, 2)).astype("float32")
    presence = np.array([1, 1, 0, 1, 0, 0], "float32")
    bn = PresenceBatchNormalization(momentum=0.0, epsilon=1e-3)
    y = keras.ops.convert_to_numpy(bn(x, presence=presence, training=True))
    kept = x[presence == 1]
    mean, var = kept.mean(axis=(0, 1, 2)), kept.var(axis=(0, 1, 2))
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
    bn(x, presence=np.zeros(6, "float32"), training=True)  # no present row: unchanged
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)


def test_presence_branch_reloads_identically(tmp_path):
    keras.utils.set_random_seed(0)
    branch = image_cnn((8, 8, 1), filters=(4,), presence=True)
    x, presence = batch(1)
    feeds = {"image": x, "image_presence": presence}
    branch(feeds, training=True)
    branch.save(tmp_path / "b.keras")
    reloaded = keras.saving.load_model(tmp_path / "b.keras")
    for training in (False, True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(reloaded(feeds, training=training)["vector"]),
            keras.ops.convert_to_numpy(branch(feeds, training=training)["vector"]))
