"""The fusion-layer contract, checked for every registered layer.

Layers that land later are covered automatically: each must work as
`mmfusion.fusion.get(name, units=8)` on two modalities of sizes 6 and 10
(vectors, or sequences of lengths 5 and 7), and N-modal layers on three.
"""

import numpy as np
import pytest

from mmfusion import fusion
from tests.layer_checks import (
    assert_absent_modality_ignored,
    assert_bad_inputs_rejected,
    assert_every_weight_gets_gradient,
    assert_fits_with_jit,
    assert_save_load_identical,
)

SIZES = {2: (6, 10), 3: (6, 10, 4)}
TIME_STEPS = (5, 7, 3)


def make_inputs(name, n_modalities, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    sizes = SIZES[n_modalities]
    if fusion.get_class(name).input_rank == 2:
        return [rng.normal(size=(batch, d)).astype("float32") for d in sizes]
    return [rng.normal(size=(batch, t, d)).astype("float32")
            for t, d in zip(TIME_STEPS, sizes)]


def cases():
    for name in fusion.available():
        cls = fusion.get_class(name)
        for n in (2, 3):
            if n >= cls.min_modalities and (cls.max_modalities is None or n <= cls.max_modalities):
                yield pytest.param(name, n, id=f"{name}-{n}")


def factory(name):
    return lambda: fusion.get(name, units=8)


@pytest.mark.parametrize("name, n", list(cases()))
def test_save_load_reproduces_outputs(name, n, tmp_path):
    xs = make_inputs(name, n)
    presence = np.ones((4, n), "float32")
    presence[0, 0] = presence[1, n - 1] = 0
    assert_save_load_identical(factory(name)(), xs, tmp_path, presence=presence)


@pytest.mark.parametrize("name, n", list(cases()))
def test_every_weight_gets_a_gradient(name, n):
    assert_every_weight_gets_gradient(factory(name)(), make_inputs(name, n))


@pytest.mark.parametrize("name, n", list(cases()))
@pytest.mark.parametrize("absent", [0, 1])
def test_absent_modality_is_ignored(name, n, absent):
    assert_absent_modality_ignored(factory(name)(), make_inputs(name, n), absent=absent)


@pytest.mark.parametrize("name, n", list(cases()))
def test_fits_with_jit_compile(name, n):
    assert_fits_with_jit(factory(name)(), make_inputs(name, n))


@pytest.mark.parametrize("name", fusion.available())
def test_bad_inputs_are_rejected(name):
    cls = fusion.get_class(name)
    time_steps = None if cls.input_rank == 2 else 5
    assert_bad_inputs_rejected(factory(name), SIZES[2], time_steps=time_steps)


@pytest.mark.parametrize("name", fusion.available())
def test_modality_count_limits(name):
    cls = fusion.get_class(name)
    with pytest.raises(ValueError, match=f"{cls.__name__}.*modalities"):
        fusion.get(name, units=8)(make_inputs(name, 2)[:1])
    if cls.max_modalities == 2:
        with pytest.raises(ValueError, match=f"{cls.__name__}.*exactly 2.*take 3 modalities: .*mlb"):
            fusion.get(name, units=8)(make_inputs(name, 3))


@pytest.mark.parametrize("name", fusion.available())
def test_config_round_trip(name):
    layer = fusion.get(name, units=8)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
