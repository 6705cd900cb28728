"""Missing-modality robustness: sweeps over missing rates and presence patterns,
and MultiBench's robustness metrics.

`missing_rate_sweep` trains a model per training-time missing rate (or takes
one trained model) and scores it at every test-time missing rate and under
every presence pattern (each non-empty subset of the modalities). At a
missing rate `r`, each modality of each row is absent independently with
probability `r`; a row that would lose every modality keeps one, drawn
uniformly (as `mmfusion.fusion.ModalityDropout` does), so rates are a little
below `r` in effect. Absent rows' inputs are set to zeros and marked absent
in the model's `presence` input (`build_fusion_model(..., presence=True)` or
`presence="dict"`).

The metrics follow MultiBench (Liang et al., NeurIPS 2021 Datasets and
Benchmarks), which borrows effective robustness from Taori et al. (2020):

- relative robustness: the area under the score vs. missing-rate curve
  (trapezoids; MultiBench's levels are 0.1 apart, so there it is
  `sum_i 0.1 * (s_i + s_{i+1}) / 2`);
- effective robustness: how much better than late fusion a method holds up
  once their scores at the first level are aligned:
  `sum_i [s_i - (l_i + s_0 - l_0)]`, `l` the late-fusion curve.
"""

import itertools
import json
from dataclasses import dataclass, field

import keras
import numpy as np
from matplotlib.figure import Figure

from mmfusion.compose import PRESENCE
from mmfusion.files import atomic_write, write_json

__all__ = ["SweepResult", "effective_robustness", "expected_scores", "missing_rate_inputs",
           "missing_rate_sweep", "pattern_probabilities", "presence_patterns", "relative_robustness",
           "sample_presence"]

MAX_MODALITIES = 4
ZERO_ABSENT_SUFFIX = "_zero_absent"


def relative_robustness(rates, scores):
    """MultiBench's relative robustness: the area under the score vs. missing-rate curve.

    Args:
        rates: increasing missing rates (imperfection levels).
        scores: the score (e.g. accuracy) at each rate.

    Returns:
        The trapezoid-rule area, a float.

    Example:

    >>> round(relative_robustness([0.0, 0.1, 0.2], [0.9, 0.8, 0.6]), 6)
    0.155
    """
    rates, scores = np.asarray(rates, "float64"), np.asarray(scores, "float64")
    _check_curve(rates, scores, "scores")
    if np.any(np.diff(rates) <= 0):
        raise ValueError(f"relative_robustness: rates must increase; received {rates.tolist()}.")
    return float(np.sum(np.diff(rates) * (scores[1:] + scores[:-1]) / 2))


def effective_robustness(scores, late_scores):
    """MultiBench's effective robustness: the score above late fusion's curve
    shifted to start where this method starts, summed over the levels.

    `sum_i [s_i - (l_i + s_0 - l_0)]` for scores `s` and late-fusion scores
    `l` at the same missing rates (the first one is the reference, normally 0).

    Args:
        scores: the method's score at each missing rate.
        late_scores: late fusion's score at the same rates.

    Returns:
        A float: positive when the method loses less than late fusion.

    Example:

    >>> round(effective_robustness([0.9, 0.8, 0.6], [0.8, 0.6, 0.5]), 6)
    0.1
    """
    scores, late = np.asarray(scores, "float64"), np.asarray(late_scores, "float64")
    _check_curve(late, scores, "scores")
    return float(np.sum(scores - (late + scores[0] - late[0])))


def _check_curve(reference, values, what):
    if reference.ndim != 1 or values.shape != reference.shape or len(values) < 2:
        raise ValueError(f"robustness metrics need two 1-D curves of the same length >= 2; "
                         f"received {what} of shape {values.shape} and {reference.shape}.")


def presence_patterns(modalities):
    """Every non-empty subset of `modalities` (2^N - 1), largest first.

    Example:

    >>> presence_patterns(["audio", "image"])
    [('audio', 'image'), ('audio',), ('image',)]
    """
    modalities = list(modalities)
    return [combo for size in range(len(modalities), 0, -1)
            for combo in itertools.combinations(modalities, size)]


def sample_presence(rate, n_rows, n_modalities, rng, base=None):
    """A `(n_rows, n_modalities)` 0/1 mask, each entry absent with probability `rate`.

    A row that would lose every modality keeps one of those present in
    `base`, drawn uniformly; entries absent in `base` stay absent.

    Args:
        rate: missing rate in [0, 1].
        n_rows, n_modalities: the mask's shape.
        rng: a `numpy.random.Generator`.
        base: optional incoming 0/1 mask (default: all present).

    Returns:
        float32 mask.

    Example:

    At rate 0.5 with two modalities a quarter of the rows would lose both and
    keep one back, so each modality is absent in 0.375 of the rows:

    >>> mask = sample_presence(0.5, 4000, 2, np.random.default_rng(0))
    >>> bool(mask.sum(axis=1).min() >= 1), round(float(1 - mask.mean()), 2)
    (True, 0.38)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample_presence: rate must be in [0, 1]; received {rate}.")
    base = np.ones((n_rows, n_modalities), bool) if base is None else np.asarray(base) > 0.5
    kept = (rng.random((n_rows, n_modalities)) >= rate) & base
    rescue = np.argmax(rng.random((n_rows, n_modalities)) * base, axis=1)
    emptied = ~kept.any(axis=1) & base.any(axis=1)
    kept[emptied, rescue[emptied]] = True
    return kept.astype("float32")


def pattern_probabilities(rate, modalities):
    """How often `sample_presence` leaves each presence pattern at `rate`.

    A pattern keeping `k` of the `N` modalities has probability
    `(1 - r)^k r^(N - k)`; a single-modality pattern gets `r^N / N` more, its
    share of the rows that lost everything and kept one back.

    Args:
        rate: missing rate in [0, 1].
        modalities: the modality names.

    Returns:
        dict pattern (a tuple of present modalities, as `presence_patterns`
        orders them) -> probability; the values sum to 1.

    Example:

    >>> pattern_probabilities(0.5, ["audio", "image"])
    {('audio', 'image'): 0.25, ('audio',): 0.375, ('image',): 0.375}
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"pattern_probabilities: rate must be in [0, 1]; received {rate}.")
    n = len(modalities)
    return {p: (1 - rate) ** len(p) * rate ** (n - len(p)) + (rate ** n / n if len(p) == 1 else 0.0)
            for p in presence_patterns(modalities)}


def expected_scores(pattern_scores, modalities, rates):
    """The expected score at each missing rate, from the score under each presence pattern.

    For a score that is a mean over rows (accuracy, a mean loss), drawing
    `sample_presence` masks at rate `r` gives, in expectation,
    `sum_p P_r(p) * score(p)` (`pattern_probabilities`): the curve a
    `missing_rate_sweep` estimates, without its sampling noise.

    Args:
        pattern_scores: dict pattern (tuple of present modalities) -> score,
            for every pattern of `presence_patterns(modalities)`.
        modalities: the modality names.
        rates: the missing rates.

    Returns:
        A list of floats, one per rate.

    Example:

    >>> scores = {("a", "b"): 0.9, ("a",): 0.7, ("b",): 0.5}
    >>> [round(s, 3) for s in expected_scores(scores, ["a", "b"], [0.0, 0.5, 1.0])]
    [0.9, 0.675, 0.6]
    """
    patterns = presence_patterns(modalities)
    missing = [p for p in patterns if tuple(p) not in pattern_scores]
    if missing:
        raise ValueError(f"expected_scores: no score for the presence patterns {missing} "
                         f"of the modalities {list(modalities)}.")
    return [float(sum(probability * pattern_scores[p] for p, probability
                      in pattern_probabilities(rate, modalities).items())) for rate in rates]


@dataclass
class SweepResult:
    """Scores of a missing-rate sweep (see `missing_rate_sweep`).

    Attributes:
        modalities: modality names, in presence-column order.
        train_rates: training-time missing rates (`[None]`: a model given as is).
        test_rates: test-time missing rates.
        patterns: presence patterns (tuples of present modalities).
        by_rate: `(len(train_rates), len(test_rates))` scores.
        by_pattern: `(len(train_rates), len(patterns))` scores.
        metric: name of the score.
        test_masks: test-time presence mask per test rate (shared by every
            training rate, so rows compare like with like).
        train_masks: training presence mask per training rate.

    Example:

    >>> result = SweepResult(["a", "b"], [0.0], [0.0, 0.5], [("a", "b"), ("a",), ("b",)],
    ...                      np.array([[0.9, 0.7]]), np.array([[0.9, 0.6, 0.5]]))
    >>> round(result.relative_robustness()[0.0], 3), result.best_pattern(0.0)
    (0.4, ('a', 'b'))
    """

    modalities: list
    train_rates: list
    test_rates: list
    patterns: list
    by_rate: np.ndarray
    by_pattern: np.ndarray
    metric: str = "accuracy"
    test_masks: dict = field(default_factory=dict, repr=False)
    train_masks: dict = field(default_factory=dict, repr=False)

    def relative_robustness(self):
        """dict training rate -> relative robustness of its test-rate curve."""
        return {r: relative_robustness(self.test_rates, row)
                for r, row in zip(self.train_rates, self.by_rate)}

    def effective_robustness(self, late):
        """dict training rate -> effective robustness relative to `late`, the
        `SweepResult` of a late-fusion model over the same test rates (its row
        of the same training rate, or its only row)."""
        if list(late.test_rates) != list(self.test_rates):
            raise ValueError(f"effective_robustness: late fusion was swept at test rates "
                             f"{late.test_rates}, this model at {self.test_rates}.")
        result = {}
        for r, row in zip(self.train_rates, self.by_rate):
            if r in late.train_rates:
                late_row = late.by_rate[late.train_rates.index(r)]
            elif len(late.train_rates) == 1:
                late_row = late.by_rate[0]
            else:
                raise ValueError(f"effective_robustness: late fusion has no training rate {r}; "
                                 f"its rates: {late.train_rates}.")
            result[r] = effective_robustness(row, late_row)
        return result

    def best_pattern(self, train_rate):
        """The presence pattern with the highest score at `train_rate`."""
        row = self.by_pattern[self.train_rates.index(train_rate)]
        return self.patterns[int(np.argmax(row))]

    def table(self, late=None):
        """Markdown tables: scores by test rate (with relative robustness, and
        effective robustness when `late` is given) and by presence pattern."""
        relative = self.relative_robustness()
        effective = self.effective_robustness(late) if late is not None else None
        head = ["train \\ test"] + [f"{r:g}" for r in self.test_rates] + ["relative"]
        head += ["effective"] if effective else []
        lines = [_row(head), _row(["---"] * len(head))]
        for r, row in zip(self.train_rates, self.by_rate):
            cells = [_rate(r)] + [f"{v:.3f}" for v in row] + [f"{relative[r]:.4f}"]
            lines.append(_row(cells + ([f"{effective[r]:+.4f}"] if effective else [])))
        names = [" + ".join(p) for p in self.patterns]
        lines += ["", _row(["train \\ present"] + names), _row(["---"] * (len(names) + 1))]
        for r, row in zip(self.train_rates, self.by_pattern):
            lines.append(_row([_rate(r)] + [f"{v:.3f}" for v in row]))
        return f"{self.metric} by test-time missing rate\n\n" + "\n".join(lines)

    def to_dict(self):
        """The scores as JSON-ready data (without the masks)."""
        return {"modalities": self.modalities, "train_rates": self.train_rates,
                "test_rates": self.test_rates, "patterns": [list(p) for p in self.patterns],
                "by_rate": np.asarray(self.by_rate).tolist(),
                "by_pattern": np.asarray(self.by_pattern).tolist(), "metric": self.metric,
                "relative_robustness": [self.relative_robustness()[r] for r in self.train_rates]}

    def save(self, path):
        """Writes `to_dict()` as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data):
        """A `SweepResult` (without masks) from `to_dict()`'s data."""
        return cls(data["modalities"], data["train_rates"], data["test_rates"],
                   [tuple(p) for p in data["patterns"]], np.array(data["by_rate"]),
                   np.array(data["by_pattern"]), data["metric"])

    @classmethod
    def load(cls, path):
        """A `SweepResult` (without masks) from a file written by `save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def plot(self, path=None, title=None):
        """A figure: score vs. test-time missing rate (a line per training rate)
        and score per presence pattern (bars grouped by pattern), under
        `title` (e.g. the model's name); a PNG at `path` when given (written
        atomically)."""
        fig = Figure(figsize=(11, 4))
        curves, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
        width = 0.8 / len(self.train_rates)
        positions = np.arange(len(self.patterns))
        for i, (r, row, by_pattern) in enumerate(zip(self.train_rates, self.by_rate,
                                                     self.by_pattern)):
            label = "as given" if r is None else f"trained at missing rate {r:g}"
            curves.plot(self.test_rates, row, marker="o", label=label)
            bars.bar(positions + (i - (len(self.train_rates) - 1) / 2) * width, by_pattern,
                     width, label=label)
        curves.set(xlabel="test-time missing rate", ylabel=self.metric,
                   title=f"{self.metric} vs. missing rate")
        curves.grid(alpha=0.3)
        curves.legend(fontsize=8)
        bars.set_xticks(positions, ["+".join(p) for p in self.patterns], rotation=30,
                        ha="right", fontsize=8)
        bars.set(xlabel="present modalities", ylabel=self.metric,
                 title=f"{self.metric} per presence pattern")
        bars.grid(axis="y", alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is not None:
            atomic_write(str(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"),
                         suffix=".png")
        return fig


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def _rate(r):
    return "as given" if r is None else f"{r:g}"


def _input_spec(model):
    """dict input name -> input of `model` (by name for a list of inputs)."""
    if isinstance(model.input, dict):
        return model.input
    return {tensor.name: tensor for tensor in keras.tree.flatten(model.input)}


def _presence_layout(model, modalities, caller="missing_rate_sweep", required=True):
    """`(form, modalities)` of the model's presence input: `"matrix"` with
    its column order (from the composer's `ZeroAbsent` layers unless given,
    else the order of the other inputs), `"dict"`, or, for a model without
    one when not `required`, None with the model's other inputs."""
    spec = _input_spec(model)
    others = [name for name in spec if name != PRESENCE]
    if PRESENCE not in spec:
        if required:
            raise ValueError(f"{caller}: model '{model.name}' has no '{PRESENCE}' "
                             "input; build it with build_fusion_model(..., presence=True).")
        return None, list(modalities or others)
    if isinstance(spec[PRESENCE], dict):
        return "dict", list(modalities or spec[PRESENCE])
    if modalities is None:
        columns = {layer.column: layer.name[: -len(ZERO_ABSENT_SUFFIX)] for layer in model.layers
                   if layer.name.endswith(ZERO_ABSENT_SUFFIX) and hasattr(layer, "column")}
        modalities = [columns[c] for c in sorted(columns)] or others
    width = spec[PRESENCE].shape[-1]
    if len(modalities) != width or not set(modalities) <= set(spec):
        raise ValueError(f"{caller}: model '{model.name}' has a presence matrix of "
                         f"{width} columns; pass modalities= (its column order, the order of "
                         f"the branches) naming model inputs {sorted(others)}; "
                         f"received {modalities}.")
    return "matrix", list(modalities)


def _masked(x, mask, form, modalities):
    """The feed for presence `mask`: absent rows' numeric inputs set to zeros,
    and the mask in the model's presence form (none for `form` None)."""
    feed = {}
    for name, value in x.items():
        if name == PRESENCE:
            continue
        value = np.asarray(value)
        if name in modalities and value.dtype.kind in "biuf":
            present = mask[:, modalities.index(name)].reshape((-1,) + (1,) * (value.ndim - 1))
            value = np.where(present > 0, value, np.zeros((), value.dtype))
        feed[name] = value
    if form is not None:
        feed[PRESENCE] = ({m: mask[:, i] for i, m in enumerate(modalities)} if form == "dict"
                          else mask)
    return feed


def _rate_masks(rates, base, rng):
    """dict rate -> `sample_presence` mask of `base`'s shape, drawn from `rng` in the order of `rates`."""
    return {r: sample_presence(r, len(base), base.shape[1], rng, base) for r in rates}


def missing_rate_inputs(model, x, rates, seed=0, modalities=None):
    """The inputs `x` of `model` with modalities absent at each missing rate.

    The masks are those `missing_rate_sweep` scores its test data with at
    the same `seed`: one `sample_presence` mask per rate, drawn in the order
    of `rates` from `numpy.random.default_rng(seed)`, respecting an
    `x["presence"]` already there. Absent rows' numeric inputs are set to
    zeros and the mask goes into the model's `presence` input (matrix or
    dict); a model without one gets the zeroed inputs only, its modalities
    being its inputs (every one of them must then be numeric).

    Args:
        model: a `keras.Model` with one input per modality (and optionally `presence`).
        x: dict input name -> array, or a list in the order of the model's inputs.
        rates: missing rates in [0, 1].
        seed: seed of the masks (an int, or a `numpy.random.Generator` to draw from).
        modalities: presence-column order of a matrix presence input (default:
            read from the model's `ZeroAbsent` layers, else the order of the
            other inputs).

    Returns:
        `(feeds, masks)`: dicts rate -> the masked inputs (the structure of
        `x`) and rate -> the `(n, N)` 0/1 mask (columns in modality order).

    Example:

    >>> a, b = keras.Input((2,), name="a"), keras.Input((1,), name="b")
    >>> model = keras.Model({"a": a, "b": b}, keras.layers.Concatenate()([a, b]))
    >>> feeds, masks = missing_rate_inputs(model, {"a": np.ones((4, 2)), "b": np.ones((4, 1))},
    ...                                    [0.0, 0.5])
    >>> masks[0.5][:, 1].tolist(), feeds[0.5]["b"][:, 0].tolist(), bool(masks[0.0].all())
    ([1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], True)
    """
    rates = _check_rates(rates, "rates", caller="missing_rate_inputs")
    form, names = _presence_layout(model, modalities, "missing_rate_inputs", required=False)
    order = list(_input_spec(model))
    as_dict = dict(x) if isinstance(x, dict) else dict(zip(order, x))
    if form is None:
        textual = [m for m in names if np.asarray(as_dict[m]).dtype.kind not in "biuf"]
        if textual:
            raise ValueError(f"missing_rate_inputs: model '{model.name}' has no '{PRESENCE}' "
                             f"input and its inputs {textual} are not numeric, so they cannot be "
                             "zeroed; build it with build_fusion_model(..., presence=True).")
    n_rows = len(np.asarray(as_dict[names[0]]))
    masks = _rate_masks(rates, _base_presence(as_dict, names, n_rows), np.random.default_rng(seed))
    feeds = {r: _masked(as_dict, mask, form, names) for r, mask in masks.items()}
    if not isinstance(x, dict):
        feeds = {r: [feed[name] for name in order] for r, feed in feeds.items()}
    return feeds, masks


def _base_presence(x, modalities, n_rows):
    """The presence the data already has (all present when it has none)."""
    given = x.get(PRESENCE)
    if given is None:
        return np.ones((n_rows, len(modalities)), "float32")
    if isinstance(given, dict):
        return np.stack([np.asarray(given[m], "float32").reshape(-1) for m in modalities], 1)
    return np.asarray(given, "float32")


def _accuracy(y_true, y_pred):
    y_true = np.asarray(y_true)
    labels = y_true.argmax(-1) if y_true.ndim == y_pred.ndim else y_true.reshape(-1)
    return float(np.mean(np.asarray(y_pred).argmax(-1) == labels))


def _check_rates(rates, what, caller="missing_rate_sweep"):
    rates = [float(r) for r in rates]
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
        raise ValueError(f"{caller}: {what} must be a non-empty list of rates in "
                         f"[0, 1]; received {rates}.")
    return rates


def missing_rate_sweep(builder_or_model, data, train_rates=None, test_rates=(0.0, 0.25, 0.5),
                       patterns=True, *, metric=None, modalities=None, fit_kwargs=None,
                       batch_size=256, seed=0):
    """Scores a fusion model over training-time x test-time missing rates and presence patterns.

    For each training rate `r` the builder makes a fresh, compiled model
    (`builder(r)`, after `keras.utils.set_random_seed(seed)`, so every rate
    starts from the same weights), which is trained on the training data
    with each modality absent at rate `r` (`sample_presence`, fixed for the
    run); use `r` in the builder to match e.g. `modality_dropout=r`, or
    ignore it. Each model is then scored on the test data at every test rate
    (one mask per test rate, shared by all models) and with every presence
    pattern (the same pattern in every row). A trained model may be given
    instead of a builder (no training; `train_rates` must be None).

    Args:
        builder_or_model: callable `train_rate -> compiled keras.Model`, or a
            trained model; either way with a `presence` input (matrix or dict,
            see `build_fusion_model`).
        data: `{"train": (x, y), "test": (x, y)}` with `x` a dict of NumPy
            arrays named like the model inputs; an `x["presence"]` already in
            the data is respected (absent stays absent). `"train"` is only
            needed with a builder.
        train_rates: training-time missing rates (with a builder).
        test_rates: test-time missing rates, increasing (the first is the
            reference of effective robustness; normally 0).
        patterns: True for every non-empty subset of modalities (N <= 4), a
            list of tuples of modality names, or False for none.
        metric: callable `(y_true, y_pred) -> float` (default: accuracy of
            the arg-max over integer or one-hot labels), named after its
            `__name__` in tables.
        modalities: presence-column order of a matrix presence input (default:
            read from the model's `ZeroAbsent` layers, i.e. the branch order,
            else the order of the other inputs).
        fit_kwargs: arguments of `model.fit` (default `epochs=5, verbose=0`).
        batch_size: prediction batch size.
        seed: seed of the masks and of `keras.utils.set_random_seed`.

    Returns:
        A `SweepResult` (tables, relative and effective robustness, plot).

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> from mmfusion.compose import build_fusion_model
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 64)
    >>> x = {"a": (y[:, None] + rng.normal(size=(64, 3))).astype("float32"),
    ...      "b": (y[:, None] + rng.normal(size=(64, 2))).astype("float32")}
    >>> def builder(rate):
    ...     model = build_fusion_model({"a": tabular_mlp(3, units=(8,), name="a"),
    ...                                 "b": tabular_mlp(2, units=(8,), name="b")},
    ...                                "concat", units=8, presence=True)
    ...     model.compile("adam", "sparse_categorical_crossentropy")
    ...     return model
    >>> result = missing_rate_sweep(builder, {"train": (x, y), "test": (x, y)},
    ...                             train_rates=[0.0, 0.5], test_rates=[0.0, 0.5],
    ...                             fit_kwargs={"epochs": 2, "verbose": 0})
    >>> result.by_rate.shape, result.patterns
    ((2, 2), [('a', 'b'), ('a',), ('b',)])
    """
    score = metric or _accuracy
    test_rates = _check_rates(test_rates, "test_rates")
    if isinstance(builder_or_model, keras.Model):
        if train_rates is not None:
            raise ValueError("missing_rate_sweep: train_rates need a builder (a callable "
                             "returning a compiled model); a model is scored as given.")
        runs = [(None, builder_or_model)]
    elif callable(builder_or_model):
        train_rates = _check_rates([0.0] if train_rates is None else train_rates, "train_rates")
        runs = ((r, _built(builder_or_model, r, seed)) for r in train_rates)
    else:
        raise ValueError(f"missing_rate_sweep: builder_or_model must be a keras.Model or a "
                         f"callable; received {type(builder_or_model).__name__}.")
    x_test, y_test = data["test"]
    rng = np.random.default_rng(seed)
    rates, by_rate, by_pattern, train_masks = [], [], [], {}
    for rate, model in runs:
        if not rates:  # the first model fixes the layout, the patterns and the test masks
            form, names = _presence_layout(model, modalities)
            chosen = _patterns(patterns, names)
            base = _base_presence(x_test, names, len(y_test))
            test_masks = _rate_masks(test_rates, base, rng)
        if rate is not None:
            x_train, y_train = data["train"]
            train_masks[rate] = sample_presence(
                rate, len(y_train), len(names), rng, _base_presence(x_train, names, len(y_train)))
            model.fit(_masked(x_train, train_masks[rate], form, names), y_train,
                      **(fit_kwargs or {"epochs": 5, "verbose": 0}))

        def evaluate(mask):
            prediction = model.predict(_masked(x_test, mask, form, names),
                                       batch_size=batch_size, verbose=0)
            return score(y_test, np.asarray(prediction))

        rates.append(rate)
        by_rate.append([evaluate(test_masks[r]) for r in test_rates])
        by_pattern.append([evaluate(base * np.array([[m in p for m in names]], "float32"))
                           for p in chosen])
    return SweepResult(names, rates, test_rates, chosen, np.array(by_rate),
                       np.array(by_pattern).reshape(len(rates), len(chosen)),
                       getattr(metric, "__name__", "score") if metric else "accuracy",
                       test_masks, train_masks)


def _built(builder, rate, seed):
    keras.utils.set_random_seed(seed)
    return builder(rate)


def _patterns(patterns, names):
    """The presence patterns to score: every one (`True`), none, or those given."""
    if patterns is True:
        if len(names) > MAX_MODALITIES:
            raise ValueError(f"missing_rate_sweep: every pattern of {len(names)} modalities is "
                             f"too many (N <= {MAX_MODALITIES}); pass patterns= explicitly.")
        return presence_patterns(names)
    chosen = [tuple(p) for p in (patterns or [])]
    unknown = sorted({m for p in chosen for m in p} - set(names))
    if unknown or any(not p for p in chosen):
        raise ValueError(f"missing_rate_sweep: patterns must be non-empty tuples of modalities "
                         f"{names}; received {chosen}.")
    return chosen
