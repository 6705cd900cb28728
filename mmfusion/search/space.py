"""The MFAS fusion-architecture space shared by the oracle and the hypermodel.

An *architecture* is a list of fusion layers; a *layer* is a list of strings
`[tap of modality 1, ..., tap of modality M, fusion type, activation]`
(modalities in the order of `FusionSpace.taps`). Layer 1 fuses the chosen
taps; layer `l > 1` fuses them together with the output of layer `l - 1`
(the MFAS chain `h_l = act(F([tap_a; tap_b; h_{l-1}]))`, built by
`mmfusion.compose.build_fusion_model` from `FusionPoint`s). Architectures are
plain JSON lists, so oracle state holding them is JSON-serializable.

KerasTuner hyperparameter names (the contract between oracle and hypermodel):
`fusion_layers` (int, 1..max_layers), and for each layer `i`, active when
`fusion_layers >= i`: `layer_{i}/tap/{modality}`, `layer_{i}/fusion`,
`layer_{i}/activation`.
"""

import itertools
import json
from dataclasses import dataclass

import numpy as np

from mmfusion import fusion as fusion_lib
from mmfusion.compose import FusionPoint

NUM_LAYERS = "fusion_layers"

__all__ = ["FusionSpace", "architecture_key"]


def _fits(name, n_inputs):
    cls = fusion_lib.get_class(name)
    return cls.input_rank == 2 and cls.accepts(n_inputs)


def architecture_key(architecture):
    """A canonical string for an architecture (used to detect duplicates).

    Example:

    >>> key = architecture_key([("h1", "vector", "concat", "relu")])
    >>> key
    '[["h1", "vector", "concat", "relu"]]'
    >>> key == architecture_key([["h1", "vector", "concat", "relu"]])  # tuples or lists
    True
    """
    return json.dumps([list(layer) for layer in architecture])


@dataclass
class FusionSpace:
    """Which fusion architectures a search may propose.

    Args:
        taps: dict modality -> list of tap names (candidate fusion points),
            e.g. from `mmfusion.branches.tap_shapes`.
        fusions: candidate vector fusion-layer names (default: every
            registered vector layer). Each layer only uses those that take
            its number of inputs: `M` modalities at layer 1, `M + 1` after.
        activations: candidate activations applied after each fusion layer.
        max_layers: the longest architecture (number of fusion layers).

    Example:

    >>> space = FusionSpace({"a": ["h1", "vector"], "b": ["vector"]},
    ...                     fusions=["concat"], activations=["relu"], max_layers=2)
    >>> space.layer_options(1)
    [['h1', 'vector', 'concat', 'relu'], ['vector', 'vector', 'concat', 'relu']]
    >>> space.describe([["h1", "vector", "concat", "relu"]])
    'concat(a.h1, b.vector) -> relu'
    """

    taps: dict
    fusions: tuple = None
    activations: tuple = ("relu", "tanh")
    max_layers: int = 3

    def __post_init__(self):
        self.taps = {str(m): [str(t) for t in taps] for m, taps in self.taps.items()}
        self.modalities = list(self.taps)
        self.fusions = list(self.fusions or fusion_lib.available(input_rank=2))
        self.activations = list(self.activations)
        if not self.modalities or not all(self.taps.values()):
            raise ValueError(f"FusionSpace: every modality needs at least one tap; "
                             f"received taps={self.taps}.")
        for i in range(1, min(self.max_layers, 2) + 1):
            if not self.layer_fusions(i):
                raise ValueError(
                    f"FusionSpace: none of the fusions {self.fusions} takes "
                    f"{self._inputs(i)} vector inputs (fusion layer {i}).")

    def _inputs(self, index):
        return len(self.modalities) + (index > 1)

    def layer_fusions(self, index):
        """The fusion types usable at layer `index` (1-based)."""
        return [f for f in self.fusions if _fits(f, self._inputs(index))]

    def layer_options(self, index):
        """Every possible layer at position `index`, as lists of strings."""
        choices = [self.taps[m] for m in self.modalities]
        choices += [self.layer_fusions(index), self.activations]
        return [list(option) for option in itertools.product(*choices)]

    def count(self, length):
        """How many architectures of `length` fusion layers the space holds."""
        return len(self.layer_options(1)) * len(self.layer_options(2)) ** (length - 1)

    def architecture_at(self, length, index):
        """The `index`-th architecture of `length` layers (`0 <= index <
        count(length)`, layer 1 varying slowest): enumerates the space.

        Example:

        >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]},
        ...                     fusions=["concat"], activations=["relu"], max_layers=2)
        >>> [space.architecture_at(1, i)[0][0] for i in range(space.count(1))]
        ['h', 'vector']
        >>> space.count(2), space.architecture_at(2, 3) == space.layer_options(1)[1:] * 2
        (4, True)
        """
        options = [self.layer_options(min(i, 2)) for i in range(1, length + 1)]
        layers = []
        for choices in reversed(options):
            index, digit = divmod(index, len(choices))
            layers.append(choices[digit])
        return layers[::-1]

    # ------------------------------------------------------ hyperparameters
    def values(self, architecture):
        """KerasTuner hyperparameter values of an architecture."""
        values = {NUM_LAYERS: len(architecture)}
        for i, layer in enumerate(architecture, start=1):
            for modality, tap in zip(self.modalities, layer):
                values[f"layer_{i}/tap/{modality}"] = tap
            values[f"layer_{i}/fusion"] = layer[-2]
            values[f"layer_{i}/activation"] = layer[-1]
        return values

    def architecture(self, values):
        """The architecture encoded in hyperparameter values (inverse of `values`)."""
        return [
            [values[f"layer_{i}/tap/{m}"] for m in self.modalities]
            + [values[f"layer_{i}/fusion"], values[f"layer_{i}/activation"]]
            for i in range(1, int(values[NUM_LAYERS]) + 1)
        ]

    def declare(self, hp):
        """Registers the space on a `keras_tuner.HyperParameters` and returns
        the architecture its current values select.

        Layer `i`'s choices are conditional on `fusion_layers >= i`, so
        KerasTuner only records (and hashes) the active ones.
        """
        n = hp.Int(NUM_LAYERS, 1, self.max_layers)
        for i in range(1, self.max_layers + 1):
            with hp.conditional_scope(NUM_LAYERS, list(range(i, self.max_layers + 1))):
                for m in self.modalities:
                    hp.Choice(f"layer_{i}/tap/{m}", self.taps[m])
                hp.Choice(f"layer_{i}/fusion", self.layer_fusions(i))
                hp.Choice(f"layer_{i}/activation", self.activations)
        return self.architecture({**hp.values, NUM_LAYERS: n})

    # -------------------------------------------------------------- readers
    def points(self, architecture, **kwargs):
        """`mmfusion.compose.FusionPoint`s of an architecture; `kwargs` go to
        every fusion layer (e.g. `units=`)."""
        return [
            FusionPoint(taps=dict(zip(self.modalities, layer[:-2])), fusion=layer[-2],
                        activation=layer[-1], kwargs=dict(kwargs))
            for layer in architecture
        ]

    def describe(self, architecture):
        """A readable one-line form: `fusion(modality.tap, ...) -> activation; ...`."""
        parts = []
        for i, layer in enumerate(architecture):
            inputs = [f"{m}.{t}" for m, t in zip(self.modalities, layer)]
            inputs += ["previous"] if i else []
            parts.append(f"{layer[-2]}({', '.join(inputs)}) -> {layer[-1]}")
        return "; ".join(parts)

    def encode(self, architectures):
        """One-hot encodings `(n, max_layers, features)` for the surrogate:
        per layer, one block per modality (its taps), one for the fusion type
        and one for the activation; layers past an architecture's length are 0.
        """
        vocab = [self.taps[m] for m in self.modalities] + [self.fusions, self.activations]
        offsets = np.cumsum([0] + [len(v) for v in vocab])
        codes = np.zeros((len(architectures), self.max_layers, offsets[-1]), "float32")
        for a, architecture in enumerate(architectures):
            for i, layer in enumerate(architecture):
                for block, value in enumerate(layer):
                    codes[a, i, offsets[block] + vocab[block].index(value)] = 1.0
        return codes
