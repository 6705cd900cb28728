"""One-shot fusion search (DARTS / BM-NAS style): a supernet over a `FusionSpace`.

`FusionSupernet` holds, at every fusion layer position `l = 1..max_layers`,
one *candidate op* per combination of taps (one tap per modality) and fusion
type usable there (`space.layer_fusions(l)`): a real registered fusion layer
with its own weights, built with `units` as `build_fusion_model` builds it.
Layer `l`'s mixed output is

    z_l = sum over (taps, fusion) of  prod_m p_tap[l, m](tap_m) * p_fusion[l](fusion)
                                      * F_{taps, fusion}([tap_1, ..., tap_M, h_{l-1}])
    h_l = sum over activations a of p_act[l](a) * a(z_l)

(`h_{l-1}` only for `l > 1`), and the output is
`softmax(sum over L of p_depth(L) * head_L(h_L))`: one head (the MLP of
`head_units` and the logits) per depth, and the depth mixture is a weighted
sum of the **heads' logits** (each head only sees chains of its own length,
as the discrete model of that length does).

**Factorized architecture weights.** Each choice has its own softmax (each
modality's tap, the fusion type and the activation at every layer, and the
depth); a combination's weight is the product of its choices'
probabilities. Taps of one modality have different sizes, so a weighted sum
of taps would need projections the discrete architectures do not have;
instead every tap combination gets its own fusion layer, and the factorized
weights keep one parameter per choice (not per combination) and make
discretization the argmax of each choice, the same choices the space's
hyperparameters make. With one-hot weights (`select`) the supernet computes
exactly the discrete architecture's network (`tests/search/test_oneshot.py`).

**Training** (`train_supernet`, first-order DARTS): the search part of the
training features is cut in two (seeded): the network weights are trained on
one part, the architecture weights on the other (never on validation or
test). Both steps run in the same batch of one `fit`: the network-weight
loss sees the architecture weights through `stop_gradient`, and the
architecture loss runs the supernet inside a `keras.StatelessScope` mapping
every network weight to its `stop_gradient`, so each loss only moves its own
parameters (no custom `train_step`: tested on TensorFlow, JAX and PyTorch). One Adam optimizer updates both: the architecture
logits are parameterized as `(architecture_learning_rate / learning_rate) *
theta`, and Adam's step does not depend on the gradient's scale, so they move
at `architecture_learning_rate` per step.

**Cost** (`candidate_ops`, `search_oneshot`): a *candidate-epoch* is one
forward and backward pass of one candidate fusion layer (with a head) over
as many examples as the search's training features hold, what one epoch of
one trial costs. One supernet epoch passes every candidate op over the
network-weight part and as many examples of the architecture part, about
the whole training features, so it costs `candidate_ops(space)`
candidate-epochs (activations and heads are not counted); the retrained
architecture adds its own epochs.
"""

import os
import time

import keras
import keras_tuner
import numpy as np

from mmfusion import fusion as fusion_lib
from mmfusion.compose import PREVIOUS
from mmfusion.files import write_json
from mmfusion.search.baselines import kerastuner_seed
from mmfusion.search.features import TapSplit, pack
from mmfusion.search.space import architecture_key
from mmfusion.search.state import CrashSafeOracle, read_json, save_weights

__all__ = ["ArchitectureOracle", "FusionSupernet", "candidate_ops", "search_oneshot",
           "train_supernet"]

_STATUS = keras_tuner.engine.trial.TrialStatus
_LARGE = 1e4  # exp(-_LARGE) is 0 in float32: a logit this far below is a zero weight
LOSS = "sparse_categorical_crossentropy"


def candidate_ops(space):
    """The number of candidate fusion layers of a supernet over `space`.

    Example:

    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]},
    ...                     fusions=["concat", "gmu"], max_layers=2)
    >>> candidate_ops(space)  # (2 taps x 1 tap) x 2 fusions, at each of 2 layers
    8
    """
    combinations = int(np.prod([len(space.taps[m]) for m in space.modalities]))
    return sum(combinations * len(space.layer_fusions(l))
               for l in range(1, space.max_layers + 1))


class FusionSupernet(keras.Model):
    """Every architecture of a `FusionSpace` in one network, mixed by
    softmax architecture weights (see the module docstring).

    Args:
        space: the `mmfusion.search.FusionSpace`.
        tap_sizes: dict modality -> dict tap -> feature size, in the order
            of the packed features (`mmfusion.search.features.pack`).
        num_classes: number of classes of the softmax output.
        units: `units=` of every candidate fusion layer.
        head_units: hidden sizes of each head's MLP (relu).
        learning_rate: the Adam learning rate of the network weights.
        architecture_learning_rate: the step size of the architecture
            logits (see the module docstring).
        **kwargs: `keras.Model` arguments (`name`).

    Call arguments:
        inputs: dict modality -> packed features `(batch, sum of tap sizes)`.
        training: Keras's training flag.

    Returns:
        Class probabilities `(batch, num_classes)`.

    Example:

    >>> import numpy as np
    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]}, fusions=["concat"],
    ...                     max_layers=1)
    >>> supernet = FusionSupernet(space, {"a": {"h": 3, "vector": 2}, "b": {"vector": 4}}, 2,
    ...                           units=8)
    >>> tuple(supernet({"a": np.ones((5, 5)), "b": np.ones((5, 4))}).shape)
    (5, 2)
    >>> supernet.select([["vector", "vector", "concat", "tanh"]])
    >>> supernet.architecture()
    [['vector', 'vector', 'concat', 'tanh']]
    """

    def __init__(self, space, tap_sizes, num_classes, units=64, head_units=(64,),
                 learning_rate=1e-3, architecture_learning_rate=3e-2, **kwargs):
        super().__init__(**kwargs)
        self.space = space
        self.tap_sizes = {m: dict(tap_sizes[m]) for m in space.modalities}
        self.num_classes = int(num_classes)
        self.units = int(units)
        self.head_units = tuple(head_units)
        self.scale = float(architecture_learning_rate) / float(learning_rate)
        self.splits = [TapSplit(list(self.tap_sizes[m]), list(self.tap_sizes[m].values()),
                                name=f"{m}_taps") for m in space.modalities]
        self.options = []  # per layer: [(tap indices, fusion index)] of its candidate ops
        self.candidates = []  # per layer: its candidate fusion layers, in `options` order
        self.logits = []  # per layer: {"tap/<modality>", "fusion", "activation"} -> weight
        for l in range(1, space.max_layers + 1):
            names = space.modalities + ([PREVIOUS] if l > 1 else [])
            fusions = space.layer_fusions(l)
            combos = np.ndindex(*[len(space.taps[m]) for m in space.modalities])
            options = [(combo, f) for combo in combos for f in range(len(fusions))]
            self.options.append(options)
            self.candidates.append([
                fusion_lib.get(fusions[f], units=self.units, modalities=names,
                               name=f"fusion_{l}_{fusions[f]}_" + "_".join(map(str, combo)))
                for combo, f in options])
            sizes = {f"tap/{m}": len(space.taps[m]) for m in space.modalities}
            sizes.update(fusion=len(fusions), activation=len(space.activations))
            self.logits.append({choice: self._logit(f"layer_{l}_{choice.replace('/', '_')}", n)
                                for choice, n in sizes.items()})
        self.depth_logits = self._logit("depth", space.max_layers)
        self.heads = [[keras.layers.Dense(n, activation="relu", name=f"head_{L}_dense_{i}")
                       for i, n in enumerate(self.head_units, start=1)]
                      + [keras.layers.Dense(self.num_classes, name=f"head_{L}_logits")]
                      for L in range(1, space.max_layers + 1)]

    def _logit(self, name, size):
        # A choice of one value has nothing to learn (its probability is 1).
        return self.add_weight(name=name, shape=(size,), initializer=keras.initializers.Zeros(),
                               trainable=size > 1)

    @property
    def architecture_weights(self):
        """The architecture logits' variables (the rest are network weights)."""
        return [w for layer in self.logits for w in layer.values()] + [self.depth_logits]

    def probabilities(self):
        """The softmax of every choice: `(per layer {choice: probabilities}, depth)`."""
        def softmax(w):  # one value: weight 1 (Keras warns on a softmax of size 1)
            return keras.ops.ones((1,)) if w.shape[0] == 1 else keras.ops.softmax(
                self.scale * w.value)

        return ([{c: softmax(w) for c, w in layer.items()} for layer in self.logits],
                softmax(self.depth_logits))

    def call(self, inputs, training=None):
        return self.mix(inputs, self.probabilities(), training=training)

    def mix(self, inputs, probabilities, training=None):
        """The supernet's output with the given `probabilities()`."""
        layers, depth = probabilities
        taps = [list(split(inputs[m]).values())
                for split, m in zip(self.splits, self.space.modalities)]
        previous, logits = None, 0.0
        for l, (options, candidates, p) in enumerate(zip(self.options, self.candidates, layers)):
            mixed = 0.0
            for (combo, f), candidate in zip(options, candidates):
                weight = p["fusion"][f]
                for m, t in zip(self.space.modalities, combo):
                    weight = weight * p[f"tap/{m}"][t]
                tensors = [taps[i][t] for i, t in enumerate(combo)]
                mixed = mixed + weight * candidate(tensors + ([previous] if l else []),
                                                   training=training)
            previous = sum(p["activation"][k] * keras.activations.get(a)(mixed)
                           for k, a in enumerate(self.space.activations))
            x = previous
            for dense in self.heads[l]:
                x = dense(x)
            logits = logits + depth[l] * x
        return keras.ops.softmax(logits)

    def select(self, architecture):
        """Sets the architecture logits so that every softmax is one-hot at
        `architecture` (the supernet then computes that architecture)."""
        def one_hot(weight, index):
            values = np.full(weight.shape, -_LARGE / self.scale, "float32")
            values[index] = 0.0
            weight.assign(values)

        one_hot(self.depth_logits, len(architecture) - 1)
        for l, layer in enumerate(architecture, start=1):
            logits = self.logits[l - 1]
            for m, tap in zip(self.space.modalities, layer):
                one_hot(logits[f"tap/{m}"], self.space.taps[m].index(tap))
            one_hot(logits["fusion"], self.space.layer_fusions(l).index(layer[-2]))
            one_hot(logits["activation"], self.space.activations.index(layer[-1]))

    def architecture(self):
        """The discretized architecture: the argmax of every choice, as a
        list of layers in the `FusionSpace` format."""
        layers, depth = self.probabilities()
        length = int(np.argmax(keras.ops.convert_to_numpy(depth))) + 1
        architecture = []
        for l in range(length):
            best = {c: int(np.argmax(keras.ops.convert_to_numpy(p)))
                    for c, p in layers[l].items()}
            architecture.append([self.space.taps[m][best[f"tap/{m}"]]
                                 for m in self.space.modalities]
                                + [self.space.layer_fusions(l + 1)[best["fusion"]],
                                   self.space.activations[best["activation"]]])
        return architecture

    def describe_probabilities(self):
        """The probabilities as JSON: `{"depth": {L: p}, "layer_l": {choice: {value: p}}}`."""
        layers, depth = self.probabilities()
        numbers = lambda p: [float(v) for v in keras.ops.convert_to_numpy(p)]  # noqa: E731
        result = {"depth": dict(zip(map(str, range(1, len(layers) + 1)), numbers(depth)))}
        for l, layer in enumerate(layers, start=1):
            values = {f"tap/{m}": self.space.taps[m] for m in self.space.modalities}
            values.update(fusion=self.space.layer_fusions(l), activation=self.space.activations)
            result[f"layer_{l}"] = {c: dict(zip(values[c], numbers(p))) for c, p in layer.items()}
        return result


class _Alternation(keras.Model):
    """First-order DARTS in one `fit`: output `"weights"` trains the network
    weights on its inputs, output `"architecture"` the architecture logits."""

    def __init__(self, supernet, **kwargs):
        super().__init__(**kwargs)
        self.supernet = supernet

    def call(self, inputs, training=None):
        supernet = self.supernet
        layers, depth = supernet.probabilities()
        frozen = keras.tree.map_structure(keras.ops.stop_gradient, (layers, depth))
        weights_output = supernet.mix(inputs["weights"], frozen, training=training)
        architecture = {id(w) for w in supernet.architecture_weights}
        # Every variable is mapped (an unmapped one would bypass an outer
        # stateless scope, as the JAX trainer uses): network weights to
        # constants, the rest to themselves.
        mapping = [(v, v.value if id(v) in architecture else keras.ops.stop_gradient(v.value))
                   for v in supernet.variables]
        with keras.StatelessScope(state_mapping=mapping):
            architecture_output = supernet.mix(inputs["architecture"], (layers, depth),
                                               training=training)
        return {"weights": weights_output, "architecture": architecture_output}


def train_supernet(supernet, x, y, epochs=10, batch_size=64, learning_rate=1e-3,
                   architecture_fraction=0.5, seed=0, verbose=0):
    """Trains a `FusionSupernet` by first-order DARTS (see the module docstring).

    Args:
        supernet: the `FusionSupernet` (trained in place).
        x: dict modality -> packed training features.
        y: integer labels.
        epochs: passes over the network-weight part.
        batch_size: examples of each part per step.
        learning_rate: Adam learning rate of the network weights.
        architecture_fraction: the share of `x` that trains the
            architecture logits (the rest trains the network weights).
        seed: seed of the cut, the pairing of the parts and the shuffling.
        verbose: Keras verbosity.

    Returns:
        The Keras `History` (`weights_loss`: the network-weight part's loss,
        `architecture_loss`: the architecture part's).

    Example:

    >>> import numpy as np
    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["vector"], "b": ["vector"]}, fusions=["concat"],
    ...                     max_layers=1)
    >>> supernet = FusionSupernet(space, {"a": {"vector": 2}, "b": {"vector": 2}}, 2, units=4)
    >>> x = {m: np.random.default_rng(0).normal(size=(16, 2)).astype("float32") for m in "ab"}
    >>> history = train_supernet(supernet, x, (x["a"][:, 0] > 0).astype("int32"), epochs=2)
    >>> len(history.history["architecture_loss"])
    2
    """
    n = len(y)
    cut = int(round(n * architecture_fraction))
    if not 0 < cut < n:
        raise ValueError(f"train_supernet: architecture_fraction={architecture_fraction} "
                         f"leaves no example for the network or the architecture weights "
                         f"({n} examples).")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    network, search = order[cut:], order[:cut]
    paired = np.resize(rng.permutation(search), len(network))  # as many as `network`
    keras.utils.set_random_seed(seed)
    if not supernet.built:
        supernet({m: v[:1] for m, v in x.items()})
    trainer = _Alternation(supernet, name="supernet_alternation")
    trainer.compile(keras.optimizers.Adam(learning_rate), loss={"weights": LOSS,
                                                                "architecture": LOSS})
    inputs = {"weights": {m: v[network] for m, v in x.items()},
              "architecture": {m: v[paired] for m, v in x.items()}}
    return trainer.fit(inputs, {"weights": y[network], "architecture": y[paired]},
                       epochs=epochs, batch_size=batch_size, verbose=verbose)


def search_oneshot(space, features, labels, num_classes, directory, epochs=10, units=64,
                   head_units=(64,), batch_size=64, learning_rate=1e-3,
                   architecture_learning_rate=3e-2, seed=0, overwrite=False, report=None):
    """Trains a supernet on cached training features and discretizes it, or
    reads the result of a finished one back.

    Files (written atomically): `directory/supernet.weights.h5` and
    `directory/supernet.json` (architecture, probabilities, losses, cost),
    written when the supernet is trained; a run that finds `supernet.json`
    reuses it (a killed run trains the supernet again). Settings are checked
    by the caller (`mmfusion.search.run.run_search`).

    Args:
        space: the `FusionSpace`.
        features: `{modality: {tap: array}}` of the search's training part.
        labels: its labels.
        num_classes: number of classes.
        directory: folder of the supernet's files.
        epochs: supernet epochs.
        units: `units=` of every candidate fusion layer.
        head_units: hidden sizes of the heads.
        batch_size: examples of each part per step.
        learning_rate: Adam learning rate of the network weights.
        architecture_learning_rate: step size of the architecture logits.
        seed: seed of the supernet's weights, cut and batches.
        overwrite: train again even if a finished supernet is there.
        report: optional callable (e.g. `print`) given progress lines.

    Returns:
        A dict: `architecture` (a list in the `FusionSpace` format), `key`
        (its `architecture_key`), `probabilities`, `history`, `epochs`,
        `candidate_ops`, `candidate_epochs` (of the supernet: epochs ×
        candidate ops) and `cpu_seconds`, `wall_seconds`.

    Example:

    >>> import numpy as np
    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]}, fusions=["concat"],
    ...                     max_layers=1)
    >>> rng = np.random.default_rng(0)
    >>> features = {"a": {"h": rng.normal(size=(32, 3)), "vector": rng.normal(size=(32, 2))},
    ...             "b": {"vector": rng.normal(size=(32, 2))}}
    >>> result = search_oneshot(space, features, np.zeros(32, "int32"), 2,
    ...                         str(getfixture("tmp_path")), epochs=1, units=4)
    >>> result["candidate_epochs"], len(result["architecture"])
    (2, 1)
    """
    report = report or (lambda line: None)
    record_path = os.path.join(directory, "supernet.json")
    if os.path.exists(record_path) and not overwrite:
        record = read_json(record_path)
        report(f"supernet: finished one read from {record_path}: "
               f"{space.describe(record['architecture'])}")
        return record
    x = {m: v.astype("float32") for m, v in pack(features).items()}
    y = np.asarray(labels)
    keras.utils.set_random_seed(seed)
    supernet = FusionSupernet(space, {m: {t: v.shape[1] for t, v in taps.items()}
                                      for m, taps in features.items()},
                              num_classes, units=units, head_units=head_units,
                              learning_rate=learning_rate,
                              architecture_learning_rate=architecture_learning_rate,
                              name="fusion_supernet")
    ops = candidate_ops(space)
    report(f"supernet: {ops} candidate fusion layers, {epochs} epochs on {len(y)} examples ...")
    cpu, wall = time.process_time(), time.perf_counter()
    history = train_supernet(supernet, x, y, epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    architecture = supernet.architecture()
    record = {"architecture": architecture, "key": architecture_key(architecture),
              "probabilities": supernet.describe_probabilities(),
              "history": {k: [float(v) for v in values]
                          for k, values in history.history.items()},
              "epochs": int(epochs), "candidate_ops": ops, "candidate_epochs": int(epochs) * ops,
              "cpu_seconds": cpu, "wall_seconds": wall}
    save_weights(supernet, os.path.join(directory, "supernet.weights.h5"))
    write_json(record_path, record)
    report(f"supernet: done in {wall:.1f} s ({cpu:.1f} CPU s, {record['candidate_epochs']} "
           f"candidate-epochs): {space.describe(architecture)}")
    return record


class ArchitectureOracle(CrashSafeOracle, keras_tuner.Oracle):
    """Proposes given architectures, in order, one trial each (the retraining
    step of a one-shot search); other hyperparameters take their defaults.

    Args:
        space: the `FusionSpace`.
        architectures: the architectures to train (lists in its format).
        objective: the KerasTuner objective.
        seed: integer seed (0 included; see `kerastuner_seed`).
        **kwargs: other `keras_tuner.Oracle` arguments.

    Example:

    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]}, fusions=["concat"])
    >>> oracle = ArchitectureOracle(space, [[["h", "vector", "concat", "relu"]]],
    ...                             objective="val_accuracy")
    >>> oracle.max_trials, oracle.populate_space("0")["values"]["layer_1/tap/a"]
    (1, 'h')
    """

    def __init__(self, space, architectures, objective=None, seed=0, **kwargs):
        super().__init__(objective=objective, max_trials=len(architectures),
                         seed=kerastuner_seed(seed), **kwargs)
        self.space = space
        self.architectures = [[list(layer) for layer in a] for a in architectures]

    def populate_space(self, trial_id):
        proposed = {architecture_key(self.space.architecture(t.hyperparameters.values))
                    for t in self.trials.values()}
        left = [a for a in self.architectures if architecture_key(a) not in proposed]
        if not left:
            return {"status": _STATUS.STOPPED}
        values = self.space.values(left[0])
        for hp in self.hyperparameters.space:
            if hp.name not in values and all(c.is_active(values) for c in hp.conditions):
                values[hp.name] = hp.default
        return {"status": _STATUS.RUNNING, "values": values}

    def get_state(self):
        return {**super().get_state(), "architectures": self.architectures}

    def set_state(self, state):
        super().set_state(state)
        self.architectures = state["architectures"]
