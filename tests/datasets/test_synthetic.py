import numpy as np
import pytest

from mmfusion.datasets.synthetic import load_gmu_synthetic, make_gmu_task


def test_deterministic_under_seed_and_different_across_seeds():
    a, b, c = make_gmu_task(50, seed=3), make_gmu_task(50, seed=3), make_gmu_task(50, seed=4)
    np.testing.assert_array_equal(a.inputs["visual"], b.inputs["visual"])
    np.testing.assert_array_equal(a.switch, b.switch)
    assert not np.allclose(a.inputs["visual"], c.inputs["visual"])


def test_switch_decides_which_modality_carries_the_class():
    data = make_gmu_task(4000, dim=4, noise_std=0.5, seed=0)
    for modality, carries in (("visual", data.switch == 1), ("textual", data.switch == 0)):
        x = data.inputs[modality]
        # Where the modality carries the signal, its mean differs by class ...
        gap_signal = np.linalg.norm(
            x[carries & (data.labels == 1)].mean(0) - x[carries & (data.labels == 0)].mean(0))
        # ... where it carries noise, it does not depend on the class.
        gap_noise = np.linalg.norm(
            x[~carries & (data.labels == 1)].mean(0) - x[~carries & (data.labels == 0)].mean(0))
        assert gap_signal > 2.0 and gap_noise < 0.1, (modality, gap_signal, gap_noise)
        # Axes beyond the first two are pure noise.
        assert np.abs(x[:, 2:].mean(0)).max() < 0.05


def test_probabilities_and_split():
    train, test = load_gmu_synthetic(n_train=3000, n_test=1000, p_switch=0.8, seed=1)
    assert len(train) == 3000 and len(test) == 1000
    assert abs(train.switch.mean() - 0.8) < 0.03
    assert abs(train.labels.mean() - 0.5) < 0.03


def test_dim_below_two_is_rejected():
    with pytest.raises(ValueError, match="dim must be >= 2"):
        make_gmu_task(10, dim=1)
