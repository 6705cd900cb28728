"""The synthetic task of the GMU paper (Arevalo et al., 2017, section 4.1).

A binary class C. Each of two modalities, `visual` and `textual`, has a
class-conditioned signal `x̂ ~ N(μ_C, σ²)` and a class-independent noise
counterpart `ỹ ~ N(μ_noise, σ²)`. A hidden Bernoulli switch M decides which
modality carries the signal: for M = 1, `visual = x̂_v` and `textual = ỹ_t`;
for M = 0, `visual = ỹ_v` and `textual = x̂_t`. A model must therefore look
at *both* inputs to know which one to trust — exactly what a gate learns.
"""

from dataclasses import dataclass

import numpy as np

MODALITIES = ("visual", "textual")

__all__ = ["MODALITIES", "SyntheticData", "load_gmu_synthetic", "make_gmu_task"]


@dataclass
class SyntheticData:
    """One split of the synthetic task.

    Attributes:
        inputs: dict modality name -> `(n, dim)` float32 array.
        labels: `(n,)` int32 class C.
        switch: `(n,)` int32 hidden M (1: `visual` carries the signal).

    Example:

    >>> data = make_gmu_task(n_samples=6, seed=0)
    >>> len(data), data.inputs["visual"].shape, data.labels.tolist(), data.switch.tolist()
    (6, (6, 2), [1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1])
    """

    inputs: dict
    labels: np.ndarray
    switch: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        """The examples at `index` (an index array, mask or slice), as `SyntheticData`."""
        return SyntheticData(inputs={m: x[index] for m, x in self.inputs.items()},
                             labels=self.labels[index], switch=self.switch[index])


def _centers(rng, dim, separation):
    """Three well-separated means (class 0, class 1, noise) in the first two
    axes, on a circle of radius `separation`, randomly rotated."""
    angle = rng.uniform(0, 2 * np.pi)
    angles = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
    centers = np.zeros((3, dim))
    centers[:, 0] = separation * np.cos(angles)
    centers[:, 1] = separation * np.sin(angles)
    return centers


def make_gmu_task(n_samples=2000, dim=2, separation=2.0, noise_std=0.7,
                  p_switch=0.5, p_class=0.5, seed=0):
    """Samples the GMU paper's synthetic task.

    Args:
        n_samples: number of examples.
        dim: feature size of each modality (>= 2; the means differ in the
            first two axes, the others are pure noise).
        separation: radius of the circle the three means of a modality lie on.
        noise_std: standard deviation σ of every Gaussian.
        p_switch: P(M = 1), the probability that `visual` carries the signal.
        p_class: P(C = 1).
        seed: seed of the generator; the means depend on it too.

    Returns:
        A `SyntheticData`.

    Example:

    >>> data = make_gmu_task(n_samples=8, seed=1)
    >>> data.inputs["visual"].shape, data.labels.shape, sorted(data.inputs)
    ((8, 2), (8,), ['textual', 'visual'])
    """
    if dim < 2:
        raise ValueError(f"make_gmu_task: dim must be >= 2; received {dim}.")
    rng = np.random.default_rng(seed)
    centers = {m: _centers(rng, dim, separation) for m in MODALITIES}
    labels = (rng.random(n_samples) < p_class).astype("int32")
    switch = (rng.random(n_samples) < p_switch).astype("int32")

    def draw(modality, carries_signal):
        c = centers[modality]
        mean = np.where(carries_signal[:, None], c[labels], c[2])
        return (mean + noise_std * rng.normal(size=(n_samples, dim))).astype("float32")

    inputs = {
        "visual": draw("visual", switch == 1),
        "textual": draw("textual", switch == 0),
    }
    return SyntheticData(inputs=inputs, labels=labels, switch=switch)


def load_gmu_synthetic(n_train=2000, n_test=1000, seed=0, **kwargs):
    """Train and test splits drawn from the same means (one generator).

    Args:
        n_train: training examples.
        n_test: test examples.
        seed: seed of the generator.
        **kwargs: other arguments of `make_gmu_task`.

    Returns:
        `(train, test)`, two `SyntheticData`.

    Example:

    >>> train, test = load_gmu_synthetic(n_train=10, n_test=5)
    >>> len(train), len(test)
    (10, 5)
    """
    data = make_gmu_task(n_samples=n_train + n_test, seed=seed, **kwargs)
    return data.take(slice(0, n_train)), data.take(slice(n_train, None))
