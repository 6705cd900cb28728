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
    incoming mask (or all ones) is returned unchanged. It does not touch the
    modality tensors themselves.

    Warm-up (a curriculum): with `warmup_steps=S`, the rate grows linearly
    from 0 to `rate` over the first S training calls (one per training
    step in `fit`), so the model first learns from complete examples and
    then to cope with missing modalities. The layer counts its training
    calls in a non-trainable variable `step` (saved with the model, so a
    resumed training continues the schedule); without warm-up it has no
    weights.

    Args:
        rate: float in [0, 1), or a list with one rate per modality.
        seed: optional int seed of the layer's `keras.random.SeedGenerator`.
        modalities: optional list of modality names giving the order of dict
            inputs (else sorted keys), as for fusion layers.
        warmup_steps: number of training calls over which the rate grows
            from 0 to `rate` (0: the full rate from the first step).
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

    def __init__(self, rate=0.5, seed=None, modalities=None, warmup_steps=0, **kwargs):
        super().__init__(**kwargs)
        rates = rate if isinstance(rate, (list, tuple)) else [rate]
        if not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"ModalityDropout: every rate must be in [0, 1); received {rate}.")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError("ModalityDropout: warmup_steps must be an int >= 0; "
                             f"received {warmup_steps!r}.")
        self.rate = list(rate) if isinstance(rate, (list, tuple)) else rate
        self.seed = seed
        self.modalities = modalities
        self.warmup_steps = warmup_steps
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        # Training calls so far, capped at warmup_steps (exact in float32).
        self.step = self.add_weight(name="step", shape=(), initializer="zeros",
                                    trainable=False) if self.warmup_steps else None

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
        if self.step is not None:
            step = ops.cast(self.step, "float32")
            rate = rate * ops.minimum(step / self.warmup_steps, 1.0)
            self.step.assign(ops.minimum(step + 1.0, float(self.warmup_steps)))
        noise = keras.random.uniform(ops.shape(present), seed=self.seed_generator)
        kept = ops.where(noise >= rate, present, ops.zeros_like(present))
        # Rows that lost everything keep one present modality, drawn at random.
        pick = keras.random.uniform(ops.shape(present), seed=self.seed_generator) * present
        rescue = ops.one_hot(ops.argmax(pick, axis=1), n, dtype="float32") * present
        emptied = ops.sum(kept, axis=1, keepdims=True) == 0
        return ops.cast(ops.where(emptied, rescue, kept), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed, modalities=self.modalities,
                      warmup_steps=self.warmup_steps)
        return config
