"""The base class's input handling: presence values, input dtypes, fresh initializers."""

import keras
import numpy as np
import pytest

from mmfusion import fusion
from mmfusion.fusion.base import fresh_initializer


def two_modalities(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 5)).astype("float32")]


@pytest.mark.parametrize("odd, same_as", [(-1.0, 0.0), (2.0, 1.0), (0.3, 0.0), (0.7, 1.0)])
def test_presence_values_are_thresholded_at_one_half(odd, same_as):
    keras.utils.set_random_seed(0)
    layer = fusion.get("gmu", units=3)
    x = two_modalities()
    reference = np.array([[1, same_as], [same_as, 1], [1, 1]], "float32")
    given = np.array([[1, odd], [odd, 1], [1, 1]], "float32")
    np.testing.assert_array_equal(layer(x, presence=given), layer(x, presence=reference))


def test_presence_as_bool_or_nested_list():
    layer = fusion.get("weighted_sum", units=3)
    x = two_modalities()
    expected = layer(x, presence=np.array([[1, 0], [0, 1], [1, 1]], "float32"))
    as_bool = np.array([[True, False], [False, True], [True, True]])
    np.testing.assert_array_equal(layer(x, presence=as_bool), expected)
    np.testing.assert_array_equal(layer(x, presence=[[1, 0], [0, 1], [1, 1]]), expected)


def test_integer_inputs_are_cast_and_strings_rejected():
    layer = fusion.get("concat")
    ints = [np.arange(6).reshape(3, 2), np.ones((3, 1), "int64")]
    out = layer(ints)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(out, np.concatenate([ints[0], ints[1]], axis=1))
    with pytest.raises(ValueError, match="Concatenate.*'modality_1'.*strings"):
        fusion.get("concat")([np.ones((2, 2), "float32"), np.array([["a"], ["b"]])])


def test_fresh_initializers_differ_and_seeded_ones_are_reproducible():
    unseeded = keras.initializers.GlorotUniform()
    a, b = (fresh_initializer(unseeded, name)((6, 6)) for name in ("a", "b"))
    assert not np.array_equal(a, b)
    seeded = keras.initializers.GlorotUniform(seed=7)
    first = [fresh_initializer(seeded, name)((6, 6)) for name in ("a", "b")]
    again = [fresh_initializer(seeded, name)((6, 6)) for name in ("a", "b")]
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
