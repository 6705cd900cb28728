import keras
import numpy as np
import pytest
import tensorflow as tf

from mmfusion.fusion import AutoFusion, GANFusion
from tests.layer_checks import (
    numpy_dense,
    random_inputs,
)

SIZES = (6, 10)
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], "float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _autoencode_numpy(autoencoder, z):
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    hidden, latent = autoencoder.fuse_in
    decode_hidden, reconstruct = autoencoder.fuse_out
    code = numpy_dense(latent, numpy_dense(hidden, z, np.tanh), relu)
    return code, numpy_dense(reconstruct, numpy_dense(decode_hidden, code, relu))


@pytest.mark.parametrize("presence", [None, PRESENCE])
def test_autofusion_output_and_reconstruction_loss_match_numpy(presence):
    xs = random_inputs(SIZES)
    layer = AutoFusion(units=4, reconstruction_weight=0.5)
    out = layer(xs, presence=presence)
    mask = np.ones((4, 16)) if presence is None else np.repeat(presence, SIZES, axis=1)
    z = np.concatenate(xs, axis=1) * mask
    code, reconstruction = _autoencode_numpy(layer.autoencoder, z)
    np.testing.assert_allclose(_np(out), code, rtol=1e-5, atol=1e-6)
    expected = 0.5 * ((reconstruction - z) ** 2 * mask).sum() / mask.sum()
    assert len(layer.losses) == 1
    np.testing.assert_allclose(_np(layer.losses[0]), expected, rtol=1e-5)


def test_autofusion_reconstruction_is_trained_by_fit():
    rng = np.random.default_rng(0)  # 16 features spanned by 3 factors
    z = rng.normal(size=(64, 3)) @ rng.normal(size=(3, 16))
    xs = [z[:, :6].astype("float32"), z[:, 6:].astype("float32")]
    keras.utils.set_random_seed(0)
    tensors = [keras.Input(shape=(d,)) for d in SIZES]
    model = keras.Model(tensors, AutoFusion(units=4)(tensors))
    model.compile(optimizer=keras.optimizers.Adam(0.01))  # the added loss only
    # 200 full-batch steps: a 4-unit latent reconstructs the rank-3 data
    # almost exactly (0.3% of the initial loss or less over seeds 0-3).
    history = model.fit(xs, epochs=200, batch_size=64, verbose=0).history["loss"]
    assert history[-1] < 0.02 * history[0]


def test_autofusion_reconstruction_trains_the_autoencoder_only():
    """The added loss's gradient reaches the autoencoder (equal to that of the
    reconstruction error computed here) but not the layer's inputs; the
    output's gradient reaches the inputs."""
    xs = [tf.Variable(x) for x in random_inputs(SIZES, batch=8)]
    keras.utils.set_random_seed(0)
    layer = AutoFusion(units=4)
    layer(xs)
    weights = layer.autoencoder.trainable_weights
    with tf.GradientTape(persistent=True) as tape:
        output = tf.reduce_sum(layer(xs))
        added = tf.add_n(layer.losses)
        z = tf.concat(xs, axis=1)
        latent = layer.autoencoder.fuse_in[1](layer.autoencoder.fuse_in[0](z))
        reconstruction = layer.autoencoder.fuse_out[1](layer.autoencoder.fuse_out[0](latent))
        error = tf.reduce_mean(tf.square(reconstruction - z))
    np.testing.assert_allclose(_np(added), _np(error), rtol=1e-6)
    for got, expected in zip(tape.gradient(added, weights), tape.gradient(error, weights)):
        np.testing.assert_allclose(_np(got), _np(expected), rtol=1e-4, atol=1e-7)
    for grad in tape.gradient(added, xs):
        assert grad is None or not np.any(_np(grad))
    assert all(np.any(_np(g)) for g in tape.gradient(output, xs))


def _mean_softplus(logits):
    return tf.reduce_mean(tf.math.softplus(logits))


def test_each_player_is_trained_by_its_own_loss_only():
    """The summed added losses give: the discriminator the gradient of its
    cross-entropy plus the R1 penalty γ/2 ||∂D(z_tr)/∂z_tr||² (its slope
    taken here by automatic differentiation, in the layer in closed form),
    the generator λ times that of −log D(G(x_t)) (the non-saturating
    generator loss), the AutoFusion that of its reconstruction, and the
    layer's inputs none."""
    xs = [tf.Variable(x) for x in random_inputs(SIZES, batch=8)]
    layer = GANFusion(units=8, target="modality_1", adversarial_weight=2.5)
    layer(xs)
    generator, discriminator, autoencoder = (
        [w for sub in subs for w in sub.trainable_weights]
        for subs in (layer.generators[0], layer.discriminators[0], [layer.autoencoders[0]]))

    def discriminate(z):
        hidden, logit = layer.discriminators[0]
        return logit(hidden(z))[:, 0]

    with tf.GradientTape(persistent=True) as tape:
        layer(xs)
        total = tf.add_n(layer.losses)
        z_g = layer.generators[0][1](layer.generators[0][0](xs[1]))
        z_tr, reconstruction = layer.autoencoders[0](xs[0])
        real = tf.stop_gradient(z_tr)
        with tf.GradientTape() as inner:
            inner.watch(real)
            real_logits = discriminate(real)
        slope = inner.gradient(real_logits, real)
        penalty = 0.5 * layer.gradient_penalty * tf.reduce_mean(tf.reduce_sum(slope ** 2, -1))
        d_loss = _mean_softplus(-real_logits) + _mean_softplus(discriminate(z_g)) + penalty
        g_loss = _mean_softplus(-discriminate(z_g))
    pairs = [(discriminator, d_loss, 1.0), (generator, g_loss, 2.5),
             (autoencoder, reconstruction, 1.0)]
    for weights, own, scale in pairs:
        for got, expected in zip(tape.gradient(total, weights), tape.gradient(own, weights)):
            np.testing.assert_allclose(_np(got), scale * _np(expected), rtol=1e-4, atol=1e-7)
    for grad in tape.gradient(total, xs):
        assert grad is None or not np.any(_np(grad))


def _adversarial_losses(frozen):
    """Trains a GAN-Fusion on its own losses with the generators or the
    discriminators frozen; returns the per-epoch (discriminator, generator)
    losses. Without the R1 penalty: at γ = 10 it keeps the discriminator
    of these random inputs nearly flat (its loss stays at 1.36)."""
    xs = random_inputs(SIZES, batch=128, seed=3)
    keras.utils.set_random_seed(0)
    tensors = [keras.Input(shape=(d,)) for d in SIZES]
    layer = GANFusion(units=8, gradient_penalty=0.0)
    model = keras.Model(tensors, layer(tensors))
    for sub in sum(getattr(layer, frozen), [layer.output_dense]):  # no task loss here
        sub.trainable = False
    values = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: values.append(
        (float(_np(layer.discriminator_loss)), float(_np(layer.generator_loss)))))
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    model.fit(xs, epochs=15, batch_size=128, verbose=0, callbacks=[record])
    return np.array(values)


def test_discriminator_learns_while_generator_is_frozen():
    losses = _adversarial_losses("generators")
    assert losses[-1, 0] < losses[0, 0] - 0.1  # discriminator loss falls
    assert losses[-1, 1] > losses[0, 1] + 0.1  # it tells the fakes apart better


def test_generator_fools_a_frozen_discriminator():
    losses = _adversarial_losses("discriminators")
    assert losses[-1, 1] < losses[0, 1] - 0.1  # generator loss falls
    assert losses[-1, 0] > losses[0, 0] + 0.1  # the frozen discriminator is fooled


def test_gan_fusion_target_selection():
    xs = random_inputs(SIZES)
    by_name = GANFusion(units=8, target="visual", modalities=["visual", "textual"])
    by_name(xs)
    assert by_name.targets == [0] and len(by_name.discriminators) == 1
    with pytest.raises(ValueError, match="GANFusion.*target.*'audio'"):
        GANFusion(units=8, target="audio")(xs)


@pytest.mark.slow
def test_gan_fusion_learns_av_digits_end_to_end(data_dir):
    """Image CNN + audio CNN branches trained end to end through GAN-Fusion
    (paper defaults, units=64, Adam 2e-3) on real handwriting x spoken digits.
    When the added losses reached the branches, the branches shrank their
    outputs to a constant and accuracy stayed at chance (0.10 after 3 and
    after 12 epochs); now it learns (0.63 validation accuracy after 6
    epochs, seed 0; validation accuracy is noisy in the first epochs)."""
    import mmfusion.tasks as tasks
    from mmfusion.compose import build_fusion_model

    task = tasks.get("av_digits")
    data = task.data(data_dir=data_dir, seed=0)
    keras.utils.set_random_seed(0)
    model = build_fusion_model(task.branches(data), "gan_fusion", num_outputs=10, units=64)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*data.splits["train"], epochs=6, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(*data.splits["validation"], verbose=0)
    assert accuracy > 0.4  # chance: 0.1
