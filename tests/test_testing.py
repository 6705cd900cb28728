"""`mmfusion.testing` passes a correct third-party layer and catches each
contract violation: every check fails on a layer broken in that one way."""

import keras
import numpy as np
import pytest
from keras import ops

from mmfusion.fusion import (
    FusionLayer,
    SequenceFusionLayer,
    constructor_config,
    dense,
    masked_mean,
    renormalize,
)
from mmfusion.testing import CHECKS, run_fusion_layer_test

register = keras.saving.register_keras_serializable(package="mmfusion_tests")


def _mean_over_present(vectors, presence):
    """Mean of `(batch, n, units)` over the present modalities (zeros if none)."""
    n = vectors.shape[1]
    weights = ops.ones_like(vectors[..., 0]) / n if presence is None else renormalize(
        presence, presence)
    weights = ops.expand_dims(weights, -1)
    vectors = ops.where(weights > 0, vectors, ops.zeros_like(vectors))
    return ops.sum(vectors * weights, axis=1)


class _Projections:
    """One Dense projection per modality to `units`."""

    def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        self.projections = [dense(self.units, f"projection_{i}", self, (None, s[-1]))
                            for i, s in enumerate(shapes)]

    def get_config(self):
        return constructor_config(self, super().get_config(), ("units", "kernel_initializer"))


@register
class ProjectedMean(_Projections, FusionLayer):
    """Projects each modality and averages over the present ones."""

    def project(self, inputs):
        return ops.stack([p(x) for p, x in zip(self.projections, inputs)], axis=1)

    def fuse(self, inputs, presence, training=None):
        return _mean_over_present(self.project(inputs), presence), {}


@register
class ProjectedSequenceMean(_Projections, SequenceFusionLayer):
    """Each sequence's mean over its valid steps, projected, then averaged."""

    def fuse(self, inputs, presence, training=None, element_mask=None):
        masks = self.timestep_masks(inputs, presence, element_mask)
        pooled = [masked_mean(p(x), m) for p, x, m in zip(self.projections, inputs, masks)]
        return _mean_over_present(ops.stack(pooled, axis=1), presence), {}


# ------------------------------------------------ one contract violation each
class ForgetsUnits(ProjectedMean):
    def get_config(self):
        config = super().get_config()
        del config["units"]
        return config


@register
class UnsavedState(ProjectedMean):
    def build_fusion(self, shapes):
        super().build_fusion(shapes)
        self.scale = float(np.random.default_rng().uniform(1, 2))  # neither weight nor config

    def fuse(self, inputs, presence, training=None):
        out, weights = super().fuse(inputs, presence)
        return out * self.scale, weights


@register
class IgnoresPresence(ProjectedMean):
    def fuse(self, inputs, presence, training=None):
        return ops.mean(self.project(inputs), axis=1), {}


@register
class MasksByMultiplying(ProjectedMean):
    def fuse(self, inputs, presence, training=None):
        if presence is not None:
            inputs = [x * presence[:, i:i + 1] for i, x in enumerate(inputs)]
        return super().fuse(inputs, None)


@register
class ScalesByBatchMaximum(ProjectedMean):
    def fuse(self, inputs, presence, training=None):
        out, weights = super().fuse(inputs, presence)
        return out / ops.maximum(ops.max(ops.abs(out)), 1.0), weights


@register
class SkipsValidation(ProjectedMean):
    def call(self, inputs, presence=None, training=None):
        return self.fuse(list(inputs), presence)[0]


@register
class Float32Sublayers(ProjectedMean):
    def build_fusion(self, shapes):
        self.projections = []
        for s in shapes:
            projection = keras.layers.Dense(
                self.units, kernel_initializer=keras.initializers.GlorotUniform())
            projection.build((None, s[-1]))
            self.projections.append(projection)


@register
class SharedInitializer(ProjectedMean):
    def build_fusion(self, shapes):
        super().build_fusion(shapes)
        initializer = keras.initializers.GlorotUniform()
        self.mix = [self.add_weight(name=f"mix_{i}", shape=(self.units, self.units),
                                    initializer=initializer) for i in range(2)]

    def fuse(self, inputs, presence, training=None):
        out, weights = super().fuse(inputs, presence)
        return out @ self.mix[0] @ self.mix[1], weights


@register
class IgnoresPadding(ProjectedSequenceMean):
    def fuse(self, inputs, presence, training=None, element_mask=None):
        # Keras masks are ignored: only presence masks the timesteps.
        return super().fuse(inputs, presence, element_mask=None)

    def fuse_arguments(self, inputs, mask=None, element_mask=None):
        return {"element_mask": element_mask}


@register
class UnseededInitialization(ProjectedMean):
    def build_fusion(self, shapes):
        super().build_fusion(shapes)
        self.offset = self.add_weight(name="offset", shape=(self.units,),
                                      initializer=keras.initializers.Constant(
                                          np.random.default_rng().normal(size=self.units)))

    def fuse(self, inputs, presence, training=None):
        out, weights = super().fuse(inputs, presence)
        return out + self.offset, weights


@register
class UnusedWeight(ProjectedMean):
    def build_fusion(self, shapes):
        super().build_fusion(shapes)
        self.unused = self.add_kernel("unused", (self.units,))


BROKEN = {
    "config": (ForgetsUnits, "lacks constructor arguments \\['units'\\]"),
    "save_load": (UnsavedState, "reloaded .keras model predicts differently"),
    "presence": (IgnoresPresence, "marked absent but changing its input changes the output"),
    "placeholders": (MasksByMultiplying, "nan in absent rows changes the output"),
    "empty_batch": (ScalesByBatchMaximum, "batch of size 0"),
    "bad_inputs": (SkipsValidation, "instead of ValueError|accepted silently|does not name"),
    "mixed_precision": (Float32Sublayers, "under float64 these sublayers compute in another dtype"),
    "distinct_weights": (SharedInitializer, "mix_0 and .*mix_1 start identical"),
    "keras_mask": (IgnoresPadding, "changing the padding embedding changes the output"),
    "determinism": (UnseededInitialization, "offset differs between two seeded builds"),
    "gradients": (UnusedWeight, "zero gradient for .*unused"),
}


def test_every_check_has_a_broken_layer():
    assert sorted(BROKEN) == sorted(CHECKS)


def test_a_correct_layer_passes_every_check():
    assert run_fusion_layer_test(ProjectedMean, {"units": 3}, sizes=(2, 4, 3)) == [
        name for name in CHECKS if name != "keras_mask"]
    assert run_fusion_layer_test(ProjectedSequenceMean, {"units": 3}, sizes=(2, 4),
                                 skip=["mixed_precision", "save_load"]) == [
        name for name in CHECKS if name not in ("mixed_precision", "save_load")]


@pytest.mark.parametrize("check", sorted(BROKEN))
def test_each_check_catches_its_violation(check):
    cls, message = BROKEN[check]
    with pytest.raises(AssertionError, match=f"(?s){cls.__name__} failed 1 check\\(s\\): "
                                             f"\\[{check}\\].*({message})"):
        run_fusion_layer_test(cls, {"units": 3}, sizes=(2, 4), checks=[check])


def test_unknown_check_names_are_rejected():
    with pytest.raises(ValueError, match="Unknown checks \\['gradient'\\]"):
        run_fusion_layer_test(ProjectedMean, {"units": 3}, skip=["gradient"])
