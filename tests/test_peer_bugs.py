"""Known bugs of peer implementations, each ruled out here by a test that
would fail on the buggy computation (README: "Correctness against known peer
bugs")."""

import itertools

import keras
import numpy as np
import pytest

from mmfusion import fusion
from mmfusion.fusion import LMF, MCB


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _count_sketch_of_outer_product(xs, sketches, d):
    """Pham & Pagh's identity, with no FFT: the MCB of x and y is the count
    sketch of their outer product, hash (h1(i) + h2(j)) mod d and sign
    s1(i) s2(j). Brute force over every pair (i, j) of every example."""
    (x, y), ((h1, s1), (h2, s2)) = xs, sketches
    out = np.zeros((len(x), d))
    for i, j in itertools.product(range(x.shape[1]), range(y.shape[1])):
        out[:, (h1[i] + h2[j]) % d] += s1[i] * s2[j] * x[:, i] * y[:, j]
    return out


def test_mcb_uses_every_frequency_bin():
    """MMF's CompactBilinearPooling multiplies only frequency bins 0 and 1 of
    `torch.fft.rfft`'s complex output (indexing it as the old real/imaginary
    pairs); ours equals the sketch of the outer product, which the two-bin
    result does not."""
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(5, 7)).astype("float32"), rng.normal(size=(5, 9)).astype("float32")]
    d = 32
    layer = MCB(sketch_size=d, seed=4, power_norm=False, l2_norm=False)
    ours = _numpy(layer(xs))
    sketches = [(_numpy(index), _numpy(sign)) for index, sign in layer.sketches]
    expected = _count_sketch_of_outer_product(xs, sketches, d)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    # The peer's computation: the spectra of the two sketches, bins 0 and 1 only.
    sketched = [np.stack([np.bincount(h, weights=s * row, minlength=d) for row in x])
                for x, (h, s) in zip(xs, sketches)]
    spectra = [np.fft.rfft(s, axis=-1)[..., :2] for s in sketched]
    two_bins = np.fft.irfft(spectra[0] * spectra[1], n=d, axis=-1)
    assert np.abs(two_bins - expected).max() > 0.5 * np.abs(expected).max()


def test_every_lmf_factor_trains_and_is_saved(tmp_path):
    """MultiBench's LowRankTensorFusion keeps its factors in a Python list
    (never registered: not trained, not saved) and the official LMF code left
    the fusion weights and bias out of the optimizer. Here every factor, the
    rank weights and the bias are trainable weights of the model, one fit
    step changes each of them, and `.keras` reload restores each exactly."""
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(16, d)).astype("float32") for d in (3, 5, 4)]
    y = rng.normal(size=(16, 2)).astype("float32")
    inputs = [keras.Input((x.shape[1],)) for x in xs]
    layer = LMF(units=2, rank=3, name="lmf")
    model = keras.Model(inputs, layer(inputs))
    names = sorted(w.path for w in layer.trainable_weights)
    tracked = {id(w) for w in model.trainable_weights}
    assert len(names) == 5 and all(id(w) in tracked for w in layer.trainable_weights)
    assert not layer.non_trainable_weights
    before = {w.path: _numpy(w).copy() for w in layer.trainable_weights}
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(xs, y, batch_size=16, epochs=1, verbose=0)
    unchanged = [w.path for w in layer.trainable_weights
                 if np.allclose(_numpy(w), before[w.path], rtol=0, atol=1e-7)]
    assert not unchanged, f"weights left untrained: {unchanged}"
    path = str(tmp_path / "lmf.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path).get_layer("lmf")
    assert sorted(w.path for w in reloaded.trainable_weights) == names
    for w, r in zip(layer.trainable_weights, reloaded.trainable_weights):
        np.testing.assert_array_equal(_numpy(w), _numpy(r))
    np.testing.assert_array_equal(_numpy(model(xs)),
                                  _numpy(keras.saving.load_model(path)(xs)))


def _layers(n):
    for name in fusion.available():
        cls = fusion.get_class(name)
        if cls.min_modalities <= n and (cls.max_modalities is None or n <= cls.max_modalities):
            yield name, cls.input_rank


@pytest.mark.parametrize("n", [2, 3])
def test_any_subset_of_modalities_can_be_absent_row_by_row(n):
    """Missing-modality support elsewhere often covers one modality at a time
    (e.g. MultiBench's robustness tests corrupt one modality per test set).
    Here one batch holds every subset of absent modalities, one per row
    (none, each one, each pair, ..., all): for every fusion layer (vectors and
    sequences), every row's output ignores exactly its absent inputs (NaN or
    anything) and stays finite."""
    rng = np.random.default_rng(2)
    subsets = np.array(list(itertools.product([1.0, 0.0], repeat=n)), "float32")
    sizes, steps = (6, 10, 4)[:n], (5, 7, 3)[:n]
    failures, checked = {}, 0
    for name, rank in _layers(n):
        shapes = [(d,) if rank == 2 else (t, d) for d, t in zip(sizes, steps)]
        xs = [rng.normal(size=(len(subsets),) + shape).astype("float32") for shape in shapes]
        absent = [(subsets[:, m] == 0).reshape((-1,) + (1,) * (rank - 1)) for m in range(n)]
        garbage = [np.where(a, np.float32(np.nan), x) for a, x in zip(absent, xs)]
        shifted = [np.where(a, x, x * 3.0 + 1.0) for a, x in zip(absent, xs)]
        layer = fusion.get(name, units=8)
        out = _numpy(layer(xs, presence=subsets))
        with_garbage = _numpy(layer(garbage, presence=subsets))
        checked += 1
        if not (np.all(np.isfinite(out)) and np.allclose(out, with_garbage, atol=1e-5)):
            failures[name] = "absent inputs changed the output"
            continue
        # The inputs matter where they are present (row 0: all present; what a
        # lone modality gives is each layer's documented choice, e.g. zeros).
        moved = np.abs(_numpy(layer(shifted, presence=subsets)) - out).reshape(len(out), -1)
        if not moved[0].max() > 1e-6:
            failures[name] = "present inputs did not matter"
    assert checked >= 5 and not failures, failures
