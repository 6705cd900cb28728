"""The fusion-layer contract as a reusable check: `run_fusion_layer_test`.

Modelled on Keras's own `run_layer_test`, it checks a `FusionLayer` subclass
(ours or a third party's) on the current Keras backend: config round trip,
`.keras` reload, presence semantics, NaN/Inf placeholders, empty batches, bad
inputs, dtype policies, distinct initial weights, Keras masks, determinism
and gradients. Each check is a small function of a `LayerCase`, listed by
name in `CHECKS`, that raises `AssertionError` with a message naming the
layer and what went wrong.
"""

import inspect
import os
import tempfile

import keras
import numpy as np

from mmfusion.fusion.base import SequenceFusionLayer

__all__ = ["CHECKS", "LayerCase", "POLICIES", "run_fusion_layer_test"]

#: The dtype policies of the mixed-precision check (float32 is checked everywhere else).
POLICIES = ("float64", "mixed_float16", "mixed_bfloat16")
_TIME_STEPS = (5, 7, 3, 4, 6)


def _np(x):
    return keras.ops.convert_to_numpy(x)


class LayerCase:
    """A fusion layer class, its constructor arguments and inputs to check it on.

    Args:
        cls: a `FusionLayer` subclass (registered as Keras-serializable for
            the save/load check).
        init_kwargs: constructor arguments.
        sizes: feature size of each modality; their number is the number of
            modalities.
        time_steps: for sequence layers (`cls.input_rank == 3`), the number of
            timesteps of each modality (default 5, 7, 3, ...).
        batch: batch size of the inputs.
        seed: seeds the inputs (NumPy) and the layer's weights
            (`keras.utils.set_random_seed`) wherever a check builds a layer.

    Example:

    >>> from mmfusion.fusion import GMU
    >>> case = LayerCase(GMU, {"units": 4}, sizes=(3, 5))
    >>> [x.shape for x in case.inputs()], case.names
    ([(4, 3), (4, 5)], ['modality_0', 'modality_1'])
    >>> case.presence_pattern().tolist()  # rows: no modality 0, no modality 1, none, all
    [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    """

    def __init__(self, cls, init_kwargs=None, sizes=(6, 10), time_steps=None, batch=4, seed=0):
        self.cls = cls
        self.init_kwargs = dict(init_kwargs or {})
        self.sizes = tuple(sizes)
        self.n = len(self.sizes)
        self.sequence = getattr(cls, "input_rank", 2) == 3
        if self.sequence:
            steps = time_steps or [_TIME_STEPS[i % len(_TIME_STEPS)] for i in range(self.n)]
            many = isinstance(steps, (list, tuple))
            self.time_steps = tuple(steps) if many else (steps,) * self.n
        else:
            self.time_steps = None
        self.batch = batch
        self.seed = seed
        names = self.init_kwargs.get("modalities")
        self.names = list(names) if names else [f"modality_{i}" for i in range(self.n)]

    def make(self, **overrides):
        """A new layer from `init_kwargs` updated with `overrides`."""
        return self.cls(**{**self.init_kwargs, **overrides})

    def seeded(self, **overrides):
        """`make(**overrides)` after `keras.utils.set_random_seed(seed)`."""
        keras.utils.set_random_seed(self.seed)
        return self.make(**overrides)

    def inputs(self, batch=None, seed=None):
        """One float32 array per modality, `(batch, d_i)` or `(batch, T_i, d_i)`."""
        batch = self.batch if batch is None else batch
        rng = np.random.default_rng(self.seed if seed is None else seed)
        if not self.sequence:
            return [rng.normal(size=(batch, d)).astype("float32") for d in self.sizes]
        return [rng.normal(size=(batch, t, d)).astype("float32")
                for t, d in zip(self.time_steps, self.sizes)]

    def presence_pattern(self, batch=None):
        """`(batch, n)` presence: row 0 lacks modality 0, row 1 the last
        modality, row 2 every modality; the other rows have all of them."""
        presence = np.ones((self.batch if batch is None else batch, self.n), "float32")
        presence[0, 0] = 0.0
        presence[1, -1] = 0.0
        presence[2] = 0.0
        return presence

    @property
    def label(self):
        return f"{self.cls.__name__}({self.init_kwargs}) on sizes {self.sizes}"


def _fail(case, message):
    raise AssertionError(f"{case.label}: {message}")


def _assert_finite(case, value, what):
    value = _np(value)
    if not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[:3].tolist()
        _fail(case, f"{what} is not finite (first non-finite entries at {bad}).")


def _assert_close(case, actual, expected, what, rtol=1e-5, atol=1e-6):
    actual, expected = _np(actual), _np(expected)
    if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=rtol, atol=atol,
                                                         equal_nan=False):
        if actual.shape != expected.shape:
            _fail(case, f"{what} (shape {actual.shape}, expected {expected.shape}).")
        _fail(case, f"{what} (max |difference| {np.max(np.abs(actual - expected))}).")


def _symbolic_model(case, layer, with_presence=True):
    tensors = [keras.Input(shape=x.shape[1:], name=f"input_{i}")
               for i, x in enumerate(case.inputs(batch=1))]
    kwargs, model_inputs = {}, list(tensors)
    if with_presence:
        kwargs["presence"] = keras.Input(shape=(case.n,), name="presence")
        model_inputs.append(kwargs["presence"])
    fused = layer(tensors, **kwargs)
    if len(fused.shape) > 2:
        fused = keras.layers.Flatten(dtype=layer.dtype_policy)(fused)
    return keras.Model(model_inputs, fused)


# ---------------------------------------------------------------- the checks
def check_config_round_trip(case):
    """`from_config(get_config())` gives the same config, every constructor
    argument is in it, and the clone with the same weights computes the same."""
    layer = case.make()
    xs = case.inputs()
    out = layer(xs)
    config = layer.get_config()
    arguments = set()
    for klass in case.cls.__mro__:
        if klass is keras.layers.Layer:
            break
        arguments |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kwargs"}
    missing = sorted(arguments - set(config))
    if missing:
        _fail(case, f"get_config() lacks constructor arguments {missing}.")
    clone = case.cls.from_config(config)
    if clone.get_config() != config:
        _fail(case, f"from_config(get_config()) changes the config: {config} -> "
                    f"{clone.get_config()}.")
    clone(xs)
    clone.set_weights(layer.get_weights())
    _assert_close(case, clone(xs), out, "the clone from get_config() with the same weights "
                  "computes a different output")


def check_save_load(case, directory=None):
    """A model around the layer (with a presence input) saved as `.keras`
    reloads to identical predictions."""
    model = _symbolic_model(case, case.make())
    feeds = case.inputs() + [case.presence_pattern()]
    before = model.predict(feeds, verbose=0)
    with tempfile.TemporaryDirectory(dir=directory) as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    after = reloaded.predict(feeds, verbose=0)
    if not np.array_equal(after, before):
        _fail(case, f"the reloaded .keras model predicts differently "
                    f"(max |difference| {np.max(np.abs(after - before))}).")


def check_presence(case):
    """For each modality: marked absent, changing its input changes nothing,
    while present it matters; a row with no modality is finite."""
    layer = case.make()
    xs = case.inputs()
    for i, name in enumerate(case.names):
        presence = np.ones((case.batch, case.n), "float32")
        presence[:, i] = 0.0
        presence[-1] = 0.0
        changed = list(xs)
        changed[i] = xs[i] * 5.0 + 3.0
        first = _np(layer(xs, presence=presence))
        _assert_close(case, layer(changed, presence=presence), first,
                      f"modality '{name}' is marked absent but changing its input changes "
                      "the output")
        _assert_finite(case, first[-1], "the output of a row with no modality present")
        if np.allclose(_np(layer(changed)), _np(layer(xs)), rtol=1e-5, atol=1e-6):
            _fail(case, f"modality '{name}' does not affect the output even when present.")


def check_placeholders(case):
    """NaN, +Inf and -Inf in absent rows (and, for `SequenceFusionLayer`s,
    NaN at timesteps masked by `element_mask`) give the same finite output
    as zeros there."""
    layer = case.make()
    xs = case.inputs()
    presence = case.presence_pattern()
    zeros = [np.where(presence[:, i].reshape((-1,) + (1,) * (x.ndim - 1)) > 0, x, 0.0)
             for i, x in enumerate(xs)]
    expected = _np(layer(zeros, presence=presence))
    _assert_finite(case, expected, "the output with absent modalities")
    for value in (np.nan, np.inf, -np.inf):
        filled = [np.where(presence[:, i].reshape((-1,) + (1,) * (x.ndim - 1)) > 0, x, value)
                  .astype("float32") for i, x in enumerate(xs)]
        _assert_close(case, layer(filled, presence=presence), expected,
                      f"{value} in absent rows changes the output from that with zeros there")
    if issubclass(case.cls, SequenceFusionLayer):
        masks = [np.ones(x.shape[:2], "float32") for x in xs]
        for m in masks:
            m[:, m.shape[1] // 2 + 1:] = 0.0
        padded = [np.where(m[..., None] > 0, x, 0.0).astype("float32") for x, m in zip(xs, masks)]
        nan_padded = [np.where(m[..., None] > 0, x, np.nan).astype("float32")
                      for x, m in zip(xs, masks)]
        expected = _np(layer(padded, element_mask=masks))
        _assert_finite(case, expected, "the output with padded timesteps")
        _assert_close(case, layer(nan_padded, element_mask=masks), expected,
                      "NaN at padded timesteps changes the output from that with zeros there")


def check_empty_batch(case):
    """A batch of size 0 (with and without presence) gives an empty output
    with the usual feature shape."""
    layer = case.make()
    full = _np(layer(case.inputs()))
    empty = case.inputs(batch=0)
    for presence in (None, np.zeros((0, case.n), "float32")):
        try:
            out = _np(layer(empty, presence=presence))
        except Exception as error:  # noqa: BLE001 -- any failure is the finding
            _fail(case, f"a batch of size 0 (presence={presence is not None}) raises "
                        f"{type(error).__name__}: {error}")
        if out.shape != (0,) + full.shape[1:]:
            _fail(case, f"a batch of size 0 gives shape {out.shape}, expected "
                        f"{(0,) + full.shape[1:]}.")


def _expect_value_error(case, what, call, *patterns):
    try:
        call()
    except ValueError as error:
        message = str(error)
        missing = [p for p in patterns if p not in message]
        if missing:
            _fail(case, f"{what}: the ValueError does not name {missing}: {message!r}")
        return
    except Exception as error:  # noqa: BLE001 -- the wrong kind of error is the finding
        _fail(case, f"{what} raises {type(error).__name__} instead of ValueError: {error}")
    _fail(case, f"{what} is accepted silently.")


def check_bad_inputs(case):
    """Too few or too many modalities, a wrong rank, feature size or batch,
    and a presence of the wrong shape raise a ValueError naming the layer
    (and the modality concerned); presence values other than 0/1 raise too,
    or are read as clipped to [0, 1]."""
    xs = case.inputs()
    cls = case.cls.__name__
    layer = case.make()
    layer(xs)
    if not case.cls.accepts(1):
        _expect_value_error(case, "one modality", lambda: case.make()(xs[:1]), cls)
    if case.cls.max_modalities is not None:
        extra = xs + [xs[-1]] * (case.cls.max_modalities + 1 - case.n)
        _expect_value_error(case, f"{len(extra)} modalities", lambda: case.make()(extra), cls)
    last = case.names[-1]
    wrong_rank = xs[:-1] + [xs[-1][..., None]]
    _expect_value_error(case, f"an extra axis on '{last}'", lambda: case.make()(wrong_rank),
                        cls, last)
    wrong_size = xs[:-1] + [np.concatenate([xs[-1], xs[-1]], axis=-1)]
    _expect_value_error(case, f"a new feature size of '{last}' after build",
                        lambda: layer(wrong_size), cls, last)
    wrong_batch = xs[:-1] + [xs[-1][:-1]]
    _expect_value_error(case, f"a shorter batch for '{last}'", lambda: case.make()(wrong_batch),
                        cls, last)
    bad_shape = np.ones((case.batch, case.n + 1), "float32")
    _expect_value_error(case, "presence with an extra column",
                        lambda: layer(xs, presence=bad_shape), cls, "presence")
    for value in (2.0, -1.0):
        _check_presence_values(case, layer, xs, value)


def _check_presence_values(case, layer, xs, value):
    """Presence `value` (not 0/1) either raises a ValueError naming `presence`
    or counts as its clipped value (1 for 2, 0 for -1), never anything else."""
    presence = np.ones((case.batch, case.n), "float32")
    presence[:, 0] = value
    try:
        out = _np(layer(xs, presence=presence))
    except ValueError as error:
        if "presence" not in str(error):
            _fail(case, f"presence values of {value}: the ValueError does not name "
                        f"'presence': {error}")
        return
    clipped = _np(layer(xs, presence=np.clip(presence, 0.0, 1.0)))
    _assert_close(case, out, clipped, f"presence values of {value} are neither rejected nor "
                  "read as their clipped value")


def _float64_available(policy):
    """False for float64 policies on JAX without `jax_enable_x64` (JAX then
    computes in float32 whatever the policy says)."""
    if "float64" not in policy or keras.backend.backend() != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


def check_mixed_precision(case, policies=POLICIES):
    """Under each dtype policy: the layer and all its sublayers compute in the
    policy's dtype, outputs are finite with every, one and no modality
    present, and one `fit` step (with absent modalities) has a finite loss.
    float64 is skipped on JAX unless `jax_enable_x64` is set."""
    xs = case.inputs()
    presence = case.presence_pattern()
    # One model per policy outputs the layer's own output (no Flatten, which
    # would cast) without and with presence. It is called and fit eagerly
    # except on JAX, where eager ops compile one by one for every new dtype
    # (about twice the CPU time of compiling the model's functions).
    eager = keras.backend.backend() != "jax"
    for policy in filter(_float64_available, policies):
        layer = case.make(dtype=policy)
        compute = keras.DTypePolicy(policy).compute_dtype
        tensors = [keras.Input(shape=x.shape[1:]) for x in xs]
        plain = layer(tensors)
        # `_flatten_layers` is how Keras itself lists sublayers (no public API).
        wrong = sorted(f"{sub.name} ({sub.compute_dtype})" for sub in layer._flatten_layers()
                       if sub.compute_dtype != compute)
        if wrong:
            _fail(case, f"under {policy} these sublayers compute in another dtype: {wrong}.")
        present = keras.Input(shape=(case.n,))
        model = keras.Model(tensors + [present], [plain, layer(tensors, presence=present)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=eager)
        feeds = xs + [presence]
        out, with_absent = model(feeds) if eager else model.predict(feeds, verbose=0)
        if keras.backend.standardize_dtype(out.dtype) != compute:
            _fail(case, f"under {policy} the output is {out.dtype}, expected {compute}.")
        _assert_finite(case, out, f"the output under {policy}")
        _assert_finite(case, with_absent, f"the output under {policy} with absent modalities")
        targets = [np.zeros(tuple(out.shape), "float32"),
                   np.zeros(tuple(with_absent.shape), "float32")]
        history = model.fit(feeds, targets, batch_size=case.batch, epochs=1, verbose=0)
        if not np.isfinite(history.history["loss"][-1]):
            _fail(case, f"one fit step under {policy} has loss {history.history['loss'][-1]}.")


def check_distinct_weights(case):
    """No two randomly initialized trainable weights of one layer start equal,
    and two unseeded layers do not start with equal weights."""
    first, second = case.make(), case.make()
    xs = case.inputs()
    first(xs)
    second(xs)
    random = [(w.path, _np(w)) for w in first.trainable_weights if np.ptp(_np(w)) > 0]
    for i, (path_a, a) in enumerate(random):
        for path_b, b in random[i + 1:]:
            if a.shape == b.shape and np.array_equal(a, b):
                _fail(case, f"trainable weights {path_a} and {path_b} start identical.")
    for a, b in zip(first.trainable_weights, second.trainable_weights):
        if np.ptp(_np(a)) > 0 and np.array_equal(_np(a), _np(b)):
            _fail(case, f"two instances start with identical {a.path}.")


def check_keras_mask(case):
    """Sequence layers consume Keras masks: with `Embedding(mask_zero=True)`
    inputs, changing the padding embedding changes no output."""
    rng = np.random.default_rng(case.seed)
    vocabulary = 11
    tokens, embeddings, ids = [], [], []
    for i, (t, d) in enumerate(zip(case.time_steps, case.sizes)):
        tokens.append(keras.Input(shape=(t,), dtype="int32", name=f"tokens_{i}"))
        embeddings.append(keras.layers.Embedding(vocabulary, d, mask_zero=True, name=f"embed_{i}"))
        row = rng.integers(1, vocabulary, size=(case.batch, t))
        for r in range(case.batch):
            row[r, 1 + (r + i) % t:] = 0  # row r keeps 1 + (r + i) % t real tokens
        ids.append(row.astype("int32"))
    layer = case.make()
    model = keras.Model(tokens, layer([e(x) for e, x in zip(embeddings, tokens)]))
    before = model.predict(ids, verbose=0)
    for embedding in embeddings:
        table = _np(embedding.embeddings).copy()
        table[0] = rng.normal(size=table.shape[1]) * 100.0
        embedding.embeddings.assign(table)
    _assert_close(case, model.predict(ids, verbose=0), before,
                  "with a Keras mask, changing the padding embedding changes the output")


def check_determinism(case):
    """Under `keras.utils.set_random_seed`, building and calling the layer
    twice gives identical weights and outputs (inference and training)."""
    xs = case.inputs()
    runs = []
    for _ in range(2):
        layer = case.seeded()
        inference = _np(layer(xs))
        training = _np(layer(xs, training=True))
        runs.append(([_np(w) for w in layer.weights], inference, training))
    (w1, i1, t1), (w2, i2, t2) = runs
    for w, a, b in zip(layer.weights, w1, w2):
        if not np.array_equal(a, b):
            _fail(case, f"{w.path} differs between two seeded builds.")
    if not np.array_equal(i1, i2) or not np.array_equal(t1, t2):
        _fail(case, "outputs differ between two seeded runs.")


def check_gradients(case):
    """One `fit` step (any backend; the layer's `add_loss` terms included)
    changes every trainable weight and leaves it finite: every weight gets a
    non-zero, finite gradient.

    Adam with a tiny epsilon moves each weight by about the learning rate in
    the sign of its gradient, so a weight is left unchanged only where its
    gradient is exactly zero. The layer and inputs are seeded, so the result
    is the same on every run (a ReLU unit or a max that never selects one
    modality gives an exactly zero gradient for some weights and inputs).
    """
    layer = case.seeded()
    model = _symbolic_model(case, layer, with_presence=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, epsilon=1e-30), loss="mse",
                  jit_compile=keras.backend.backend() != "torch")
    xs = case.inputs()
    target = np.zeros((case.batch,) + tuple(model.output.shape[1:]), "float32")
    if not layer.trainable_weights:
        _fail(case, "the layer has no trainable weights.")
    before = [_np(w).copy() for w in layer.trainable_weights]
    model.fit(xs, target, batch_size=case.batch, epochs=1, shuffle=False, verbose=0)
    for w, old in zip(layer.trainable_weights, before):
        new = _np(w)
        if not np.all(np.isfinite(new)):
            _fail(case, f"non-finite gradient for {w.path}.")
        if np.array_equal(new, old):
            _fail(case, f"zero gradient for {w.path}.")


#: Name -> check function, in the order `run_fusion_layer_test` runs them.
CHECKS = {
    "config": check_config_round_trip,
    "save_load": check_save_load,
    "presence": check_presence,
    "placeholders": check_placeholders,
    "empty_batch": check_empty_batch,
    "bad_inputs": check_bad_inputs,
    "mixed_precision": check_mixed_precision,
    "distinct_weights": check_distinct_weights,
    "keras_mask": check_keras_mask,
    "determinism": check_determinism,
    "gradients": check_gradients,
}


def run_fusion_layer_test(cls, init_kwargs=None, sizes=(6, 10), time_steps=None, batch=4, seed=0,
                          checks=None, skip=(), policies=POLICIES):
    """Checks the fusion-layer contract for `cls` on the current backend.

    Every check of `CHECKS` runs (or those named in `checks`, less `skip`);
    all failures are reported together.

    Checks: `config` (round trip, complete, same output), `save_load`
    (`.keras` reload identical), `presence` (absent modality ignored,
    present one matters, all-absent row finite), `placeholders` (NaN/Inf in
    absent rows and at padded steps), `empty_batch`, `bad_inputs` (clear
    ValueErrors), `mixed_precision` (`policies`: outputs, sublayers and one
    fit step), `distinct_weights`, `keras_mask` (sequence layers),
    `determinism` (under `keras.utils.set_random_seed`) and `gradients`
    (every weight moves in one `fit` step).

    Args:
        cls: the `FusionLayer` subclass, registered with
            `keras.saving.register_keras_serializable`.
        init_kwargs: constructor arguments.
        sizes: feature size of each modality (their count = modalities).
        time_steps: timesteps per modality for sequence layers.
        batch: batch size of the test inputs (at least 4).
        seed: seed of the inputs and of the layer weights.
        checks: names of the checks to run (default: all).
        skip: names of checks that do not apply to the layer (say why in
            the layer's documentation).
        policies: dtype policies for `mixed_precision`.

    Returns:
        The names of the checks that ran and passed.

    Raises:
        AssertionError: listing every failing check and why.

    Example:

    A third-party layer averaging same-size modalities over the present ones:

    >>> from keras import ops
    >>> from mmfusion.fusion import FusionLayer, dense, renormalize
    >>> @keras.saving.register_keras_serializable(package="doc")
    ... class PresentMean(FusionLayer):
    ...     def __init__(self, units, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.units = units
    ...         self.kernel_initializer = keras.initializers.GlorotUniform()
    ...     def build_fusion(self, shapes):
    ...         self.projections = [dense(self.units, f"projection_{i}", self, s)
    ...                             for i, s in enumerate(shapes)]
    ...     def fuse(self, inputs, presence, training=None):
    ...         stacked = ops.stack([p(x) for p, x in zip(self.projections, inputs)], axis=1)
    ...         if presence is None:
    ...             return ops.mean(stacked, axis=1), {}
    ...         weights = renormalize(presence, presence)[..., None]
    ...         stacked = ops.where(weights > 0, stacked, ops.zeros_like(stacked))
    ...         return ops.sum(stacked * weights, axis=1), {}
    ...     def get_config(self):
    ...         return {**super().get_config(), "units": self.units}
    >>> passed = run_fusion_layer_test(PresentMean, {"units": 3}, sizes=(2, 4),
    ...                                skip=["mixed_precision"])
    >>> passed[:4], len(passed)  # keras_mask only applies to sequence layers
    (['config', 'save_load', 'presence', 'placeholders'], 9)
    """
    unknown = sorted((set(checks or ()) | set(skip)) - set(CHECKS))
    if unknown:
        raise ValueError(f"Unknown checks {unknown}; the checks are {list(CHECKS)}.")
    if batch < 4:
        raise ValueError(f"run_fusion_layer_test needs batch >= 4; received {batch}.")
    case = LayerCase(cls, init_kwargs, sizes, time_steps, batch, seed)
    selected = [name for name in (checks or CHECKS) if name not in skip
                and (case.sequence or name != "keras_mask")]
    passed, failures = [], []
    for name in CHECKS:
        if name not in selected:
            continue
        check = CHECKS[name]
        try:
            check(case, policies) if name == "mixed_precision" else check(case)
        except Exception as error:  # noqa: BLE001 -- every failure is reported
            failures.append(f"[{name}] {type(error).__name__}: {error}")
        else:
            passed.append(name)
    if failures:
        raise AssertionError(
            f"{cls.__name__} failed {len(failures)} check(s): " + "\n".join(failures))
    return passed
