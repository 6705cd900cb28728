"""Frozen-branch feature cache: each search trial trains only the fusion network.

As in MFAS, every modality's branch is pretrained once on its own
(`pretrain_branch`: the branch plus a softmax head on its `"vector"` tap),
then frozen; `FeatureCache` computes the outputs of all its taps once and
stores them on disk as `.npz` (written atomically, validated when read),
keyed by a hash of the branch weights, the data and the pooling, so a
second search (or a resumed one) reads them back.
`feature_branches` turns cached features into stand-in branches with the same
taps, so `FusionHyperModel` builds the same fusion networks on top of them;
`transfer_weights` then moves a searched fusion network onto the real
branches to export an end-to-end model.

Example:

>>> import numpy as np
>>> from mmfusion.branches import tabular_mlp
>>> branch = tabular_mlp(3, units=(4, 2), name="a")
>>> cache = FeatureCache(str(getfixture("tmp_path")))
>>> features = cache.features({"a": branch}, {"a": np.ones((5, 3), "float32")})
>>> {tap: x.shape for tap, x in features["a"].items()}
{'dense_1': (5, 4), 'vector': (5, 2)}
>>> stand_in = feature_branches(features)["a"]
>>> sorted(stand_in(pack(features)["a"]))
['dense_1', 'vector']
"""

import hashlib
import os

import keras
import numpy as np

from mmfusion.branches import VECTOR_TAP
from mmfusion.compose import Head, output_layers
from mmfusion.search.objectives import head_loss, head_metrics
from mmfusion.search.state import load_arrays, save_arrays

__all__ = ["FeatureCache", "TapSplit", "feature_branches", "pack", "pretrain_branch",
           "transfer_weights"]


def pretrain_branch(branch, x, y, num_classes, epochs=10, batch_size=64, learning_rate=1e-3,
                    validation_data=None, verbose=0, head="classification"):
    """Trains one branch alone, through a head on its `"vector"` tap (one
    output layer: softmax, sigmoids or linear, with the head's loss of
    `mmfusion.search.objectives`), then freezes it (`branch.trainable = False`).

    Args:
        branch: a branch model (see `mmfusion.branches`); trained in place.
        x: its modality's training inputs.
        y: the labels: class ids, 0/1 label columns (`"multilabel"`) or
            targets (`"regression"`).
        num_classes: number of classes (labels, targets).
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: Adam learning rate.
        validation_data: optional `(x, y)`.
        verbose: Keras verbosity.
        head: `"classification"`, `"multilabel"` or `"regression"`.

    Returns:
        The Keras `History` of the training.

    Example:

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> branch = tabular_mlp(3, units=(8,), name="a")
    >>> x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    >>> history = pretrain_branch(branch, x, (x[:, 0] > 0).astype("int32"), num_classes=2,
    ...                           epochs=2)
    >>> len(history.history["loss"]), branch.trainable
    (2, False)
    """
    spec = Head(head, num_outputs=num_classes, units=())
    outputs = output_layers(branch.output[VECTOR_TAP], spec, f"{branch.name}_pretrain")
    model = keras.Model(branch.inputs, outputs, name=f"{branch.name}_pretrain")
    model.compile(keras.optimizers.Adam(learning_rate), loss=head_loss(head),
                  metrics=head_metrics(head))
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size,
                        validation_data=validation_data, verbose=verbose)
    branch.trainable = False
    return history


def _to_vectors(x, pooling):
    """NumPy twin of `mmfusion.branches.common.to_vector` for cached taps."""
    if x.ndim == 2:
        return x
    if pooling == "flatten":
        return x.reshape(len(x), -1)
    axes = tuple(range(1, x.ndim - 1))
    return x.mean(axis=axes) if pooling == "avg" else x.max(axis=axes)


class FeatureCache:
    """Tap outputs of frozen branches, computed once and kept as `.npz` files.

    Args:
        directory: folder of the cache files (created if needed).
        pooling: how feature-map taps are stored as vectors: `"flatten"`,
            `"avg"` or `"max"` (use the hypermodel's `tap_pooling`, so the
            cached fusion network fits the real branches).
        batch_size: batch size of the forward passes.

    Example:

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> cache = FeatureCache(str(getfixture("tmp_path")))
    >>> branch = tabular_mlp(3, units=(4,), name="a")
    >>> x = np.ones((5, 3), "float32")
    >>> first = cache.taps(branch, x)      # computed and stored
    >>> second = cache.taps(branch, x)     # read back from disk
    >>> cache.misses, cache.hits, bool(np.array_equal(first["vector"], second["vector"]))
    (1, 1, True)
    """

    def __init__(self, directory, pooling="flatten", batch_size=256):
        self.directory = directory
        self.pooling = pooling
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0

    def key(self, branch, x):
        """Hex digest of the branch's weights, the data and the pooling."""
        digest = hashlib.sha256(f"{branch.name}|{self.pooling}|{x.shape}|{x.dtype}".encode())
        for weight in branch.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
        digest.update(np.ascontiguousarray(x).tobytes())
        return digest.hexdigest()[:24]

    def taps(self, branch, x):
        """`{tap: (n, d) float32 array}` of one branch on `x`, from disk if cached."""
        x = np.asarray(x)
        path = os.path.join(self.directory, f"{branch.name}-{self.key(branch, x)}.npz")
        if os.path.exists(path):
            self.hits += 1
            return load_arrays(path, recovery="Delete it: the features are computed again.")
        self.misses += 1
        outputs = branch.predict(x, batch_size=self.batch_size, verbose=0)
        taps = {tap: _to_vectors(np.asarray(v, "float32"), self.pooling)
                for tap, v in outputs.items()}
        save_arrays(path, taps)  # atomic: readers never see a half-written file
        return taps

    def features(self, branches, inputs):
        """`{modality: {tap: array}}` for dicts modality -> branch and -> inputs."""
        return {m: self.taps(branch, inputs[m]) for m, branch in branches.items()}


@keras.saving.register_keras_serializable(package="mmfusion")
class TapSplit(keras.layers.Layer):
    """Splits a `(batch, sum(sizes))` vector into a dict `{name: (batch, size)}`.

    Args:
        names: tap names, in order.
        sizes: their feature sizes.

    Example:

    >>> import numpy as np
    >>> parts = TapSplit(["a", "b"], [2, 3])(np.arange(10.0).reshape(2, 5))
    >>> [np.asarray(parts[k]).tolist() for k in ("a", "b")]
    [[[0.0, 1.0], [5.0, 6.0]], [[2.0, 3.0, 4.0], [7.0, 8.0, 9.0]]]
    """

    def __init__(self, names, sizes, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.sizes = [int(s) for s in sizes]

    def call(self, x):
        ends = np.cumsum(self.sizes)
        return {n: x[:, e - s:e] for n, s, e in zip(self.names, self.sizes, ends)}

    def compute_output_shape(self, input_shape):
        return {n: (input_shape[0], s) for n, s in zip(self.names, self.sizes)}

    def get_config(self):
        return {**super().get_config(), "names": self.names, "sizes": self.sizes}


def pack(features):
    """`{modality: (n, sum of tap sizes)}` arrays, the inputs of `feature_branches`.

    Example:

    >>> import numpy as np
    >>> features = {"a": {"block_1": np.zeros((4, 6)), "vector": np.ones((4, 2))}}
    >>> pack(features)["a"].shape
    (4, 8)
    """
    return {m: np.concatenate(list(taps.values()), axis=1) for m, taps in features.items()}


def feature_branches(features):
    """Stand-in branches over cached features: `{modality: model}`, each from
    the packed features of `pack(features)[modality]` (input named after the
    modality) to the dict of its taps, with no weights.

    Example:

    >>> import numpy as np
    >>> features = {"a": {"block_1": np.zeros((4, 6)), "vector": np.ones((4, 2))}}
    >>> stand_in = feature_branches(features)["a"]
    >>> taps = stand_in(pack(features)["a"])
    >>> {tap: tuple(x.shape) for tap, x in taps.items()}, len(stand_in.weights)
    ({'block_1': (4, 6), 'vector': (4, 2)}, 0)
    """
    branches = {}
    for m, taps in features.items():
        sizes = [x.shape[1] for x in taps.values()]
        inputs = keras.Input(shape=(sum(sizes),), name=m)
        outputs = TapSplit(list(taps), sizes, name=f"{m}_taps")(inputs)
        branches[m] = keras.Model(inputs, outputs, name=f"{m}_features")
    return branches


def transfer_weights(source, target):
    """Copies the weights of every top-level layer of `source` to the layer of
    the same name in `target` (the fusion layers and head, from a model
    searched on cached features to the same architecture on real branches).

    Returns:
        The names of the layers copied.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> def network():
    ...     inputs = keras.Input(shape=(3,))
    ...     return keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))
    >>> source, target = network(), network()
    >>> transfer_weights(source, target)
    ['head']
    >>> x = np.ones((1, 3), "float32")
    >>> bool(np.allclose(source.predict(x, verbose=0), target.predict(x, verbose=0)))
    True
    """
    copied = []
    for layer in source.layers:
        if layer.weights and not isinstance(layer, keras.Model):
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied.append(layer.name)
    return copied
