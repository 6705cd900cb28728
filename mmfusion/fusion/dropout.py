"""Modality dropout: train fusion models to cope with missing modalities."""

import keras
from keras import ops

__all__ = ["ModalityDropout"]


@keras.saving.register_keras_serializable(package="mmfusion")
class ModalityDropout(keras.layers.Layer):
    """Drops whole modalities at random during training (ModDrop; Neverova,
    Wolf, Taylor, Nebout, 2015) by producing the `presence` mask that fusion
    layers consume.

    In training, each present modality of each example is dropped with
    probability `rate` (one rate, or one per modality); an example whose
    modalities would all be dropped keeps one of its present modalities,
    chosen uniformly at random, so no example loses every modality (the
    effective drop rate is therefore a little below `rate`). At inference the
    incoming mask (or all ones) is returned unchanged. The layer has no
    weights; it does not touch the modality tensors themselves.

    Args:
        rate: float in [0, 1), or a list with one rate per modality.
        seed: optional int seed of the layer's `keras.random.SeedGenerator`.
        modalities: optional list of modality names giving the order of dict
            inputs (else sorted keys), as for fusion layers.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: list or dict of modality tensors `(batch, ...)`; only their
            number and batch size are used.
        presence: optional incoming `(batch, N)` 0/1 mask; the result is the
            product of it with the sampled mask (absent stays absent).
        training: Python bool; dropping happens only when True.

    Returns:
        `(batch, N)` float presence mask.

    Example:

    >>> import numpy as np
    >>> drop = ModalityDropout(rate=0.5, seed=1)
    >>> mask = drop([np.ones((6, 3)), np.ones((6, 5))], training=True)
    >>> tuple(mask.shape), bool(np.all(np.asarray(mask).sum(axis=1) >= 1))
    ((6, 2), True)
    """

    def __init__(self, rate=0.5, seed=None, modalities=None, **kwargs):
        super().__init__(**kwargs)
        rates = rate if isinstance(rate, (list, tuple)) else [rate]
        if not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"ModalityDropout: every rate must be in [0, 1); received {rate}.")
        self.rate = list(rate) if isinstance(rate, (list, tuple)) else rate
        self.seed = seed
        self.modalities = modalities
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _ordered(self, inputs):
        if isinstance(inputs, dict):
            return [inputs[k] for k in (self.modalities or sorted(inputs))]
        return list(inputs)

    def call(self, inputs, presence=None, training=None):
        inputs = self._ordered(inputs)
        n = len(inputs)
        if isinstance(self.rate, list) and len(self.rate) != n:
            raise ValueError(
                f"ModalityDropout layer '{self.name}' has {len(self.rate)} rates "
                f"{self.rate} but received {n} modalities."
            )
        if presence is None:
            presence = ops.ones((ops.shape(inputs[0])[0], n), self.compute_dtype)
        presence = ops.cast(presence, self.compute_dtype)
        if not training:
            return presence
        # Sampled in float32 whatever the policy (float16 would round the rates).
        present = ops.cast(presence, "float32")
        rate = ops.convert_to_tensor(self.rate, "float32")
        noise = keras.random.uniform(ops.shape(present), seed=self.seed_generator)
        kept = ops.where(noise >= rate, present, ops.zeros_like(present))
        # Rows that lost everything keep one present modality, drawn at random.
        pick = keras.random.uniform(ops.shape(present), seed=self.seed_generator) * present
        rescue = ops.one_hot(ops.argmax(pick, axis=1), n, dtype="float32") * present
        emptied = ops.sum(kept, axis=1, keepdims=True) == 0
        return ops.cast(ops.where(emptied, rescue, kept), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed, modalities=self.modalities)
        return config
