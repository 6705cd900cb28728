"""TensorBoard inspection of fusion layers during `fit`.

`FusionInspector` writes what the model's fusion layers learned into the
TensorBoard run `<log_dir>/fusion`, next to the `train` and `validation` runs
of `keras.callbacks.TensorBoard(log_dir)`, with the epoch as step (as the
epoch summaries of `keras.callbacks.TensorBoard`). Tags, with `LAYER` the
fusion layer's name (`"nested_model/layer"` for a layer inside a nested
functional model) and `M` a modality name:

- `LAYER/modality_weights/M` (scalar): mean learned weight of modality M.
- `LAYER/gates/M` (histogram) and `LAYER/gates_mean/M` (scalar): GMU gates.
  Both are taken over the rows where M is present (in the `presence` mask
  the layer gets), so "weighs M less" and "M is missing more often" do not
  look alike; no summary is written for a modality absent in every row.
- `LAYER/KEY` (image) for 4-D weights `(batch, heads, T_q, T_k)` such as
  attention maps: one `mmfusion.inspect.plots.attention_figure` per example
  (heads side by side, query and key axes, a colour bar, the example's
  absent modalities in its title); (histogram) for any other weights.
- `ablation/METRIC/all`, `ablation/METRIC/without_M` and
  `ablation/METRIC/only_M` (scalars): the validation metric with every
  modality, with modality M absent, and with M the only one present (see
  `mmfusion.inspect.modality_ablation`).
- `missing_rate/METRIC/rate_R` (scalars): the validation metric with each
  modality absent at test-time missing rate R (`rate_0`, `rate_0.25`, ...):
  the masks of `mmfusion.robustness.missing_rate_inputs` (those of
  `missing_rate_sweep`), drawn once with a fixed seed, so every epoch is
  scored on the same rows with the same modalities missing.

The run also holds a layout for TensorBoard's Custom Scalars dashboard
(`scalars_layout`, written with the first summaries): the ablation curves
overlaid in one chart, the missing-rate curves in another, the gate means
and the modality weights in one each, for the kinds of scalars the run has.
"""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.summary.v1 import custom_scalar_pb

from mmfusion.inspect.plots import attention_figure, png_bytes
from mmfusion.inspect.probe import FusionProbe, batch_metric, modality_ablation
from mmfusion.robustness import missing_rate_inputs

RUN = "fusion"
ABLATION = "ablation"
MISSING_RATE = "missing_rate"
MISSING_RATES = (0.0, 0.25, 0.5, 0.75)
# Charts of TensorBoard's custom-scalars dashboard: kind -> (title, tag regex);
# the curves of one chart are overlaid. TensorBoard matches the regex at the
# start of the tag (`re.match`).
LAYOUT = {
    ABLATION: ("modality ablation: the metric with all, without and with only each modality",
               f"{ABLATION}/"),
    MISSING_RATE: ("the metric at each test-time missing rate (every modality absent at that "
                   "rate)", f"{MISSING_RATE}/"),
    "gates": ("gate means per modality", r".*/gates_mean/"),
    "modality_weights": ("modality weights", r".*/modality_weights/"),
}

__all__ = ["FusionInspector", "attention_images", "scalars_layout"]


def _probe_batch(validation_data, size):
    """`(x, y)` of the first `size` examples of `(x, y[, sample_weight])`
    arrays or of the first batch of a `tf.data.Dataset` of `(x, y)`."""
    if isinstance(validation_data, tf.data.Dataset):
        validation_data = next(iter(validation_data.as_numpy_iterator()))
    x, y = validation_data[:2]
    return keras.tree.map_structure(lambda a: np.asarray(a)[:size], (x, y))


def attention_images(maps, max_images, title="attention", modality_names=(), presence=None):
    """RGBA images `(k, H, W, 4)` of 4-D weights `(batch, heads, T_q, T_k)`, for `tf.summary.image`.

    One `attention_figure` per example (the first `max_images`, each with its
    first `max_images` heads), titled `title` and the example's index, with
    the modalities absent in that example (`presence`) named.

    Args:
        maps: array `(batch, heads, T_q, T_k)`.
        max_images: number of examples, and of heads per example, drawn.
        title: the figures' title.
        modality_names: names of the columns of `presence`.
        presence: optional `(batch, N)` 0/1 mask of the layer's modalities.

    Returns:
        uint8 array `(min(batch, max_images), H, W, 4)`.

    Example:

    >>> import numpy as np
    >>> images = attention_images(np.random.rand(5, 2, 3, 4), max_images=3)
    >>> images.shape[0], images.shape[-1], str(images.dtype)
    (3, 4, 'uint8')
    """
    maps = np.asarray(maps)[:max_images, :max_images]
    images = []
    for i, example in enumerate(maps):
        absent = ([m for m, p in zip(modality_names, presence[i]) if p <= 0.5]
                  if presence is not None else [])
        figure = attention_figure(example, title=f"{title}, example {i}", absent=absent)
        images.append(tf.io.decode_png(png_bytes(figure), channels=4).numpy())
    return np.stack(images)


def scalars_layout(kinds=tuple(LAYOUT)):
    """The custom-scalars layout of the fusion run: one chart per kind of
    fusion scalar in `kinds` (keys of `LAYOUT`), its curves overlaid.

    Example:

    >>> [chart.title for chart in scalars_layout(["gates", "modality_weights"]).category[0].chart]
    ['gate means per modality', 'modality weights']
    """
    charts = [layout_pb2.Chart(title=LAYOUT[kind][0],
                               multiline=layout_pb2.MultilineChartContent(tag=[LAYOUT[kind][1]]))
              for kind in kinds]
    return layout_pb2.Layout(category=[layout_pb2.Category(title="mmfusion", chart=charts)])


def write_histogram(tag, values, bins=30):
    """Writes a TensorBoard histogram of `values` to the default summary writer.

    Bucketed with NumPy (`tf.summary.histogram` costs about 20 times more
    for a few thousand values) into the histogram plugin's format: `(bins, 3)`
    rows of left edge, right edge, count.

    Args:
        tag: the summary tag.
        values: array of any shape (flattened).
        bins: number of equal-width buckets between the minimum and maximum.
    """
    counts, edges = np.histogram(np.asarray(values, dtype="float64").ravel(), bins=bins)
    buckets = np.stack([edges[:-1], edges[1:], counts], axis=1)
    metadata = histogram_metadata.create_summary_metadata(display_name=tag, description="")
    tf.summary.write(tag, tf.constant(buckets, dtype=tf.float64), metadata=metadata)


def write_weights(path, key, value, modality_names, max_images, presence=None):
    """Writes one entry of a fusion layer's weights dict to the default summary writer.

    Args:
        path: the layer's path (name, or `"nested_model/layer"`).
        key: the weights' key, e.g. `"modality_weights"`, `"gates"`.
        value: the weights on the probe batch, batch first.
        modality_names: the layer's modality names (for per-modality tags).
        max_images: examples and heads drawn for 4-D weights.
        presence: optional `(batch, N)` 0/1 mask the layer got; per-modality
            statistics use the rows where that modality is present.
    """
    tag = f"{path}/{key}"
    if key in ("modality_weights", "gates"):
        present = (np.ones((len(value), len(modality_names)), bool) if presence is None
                   else np.asarray(presence) > 0.5)
        for i, name in enumerate(modality_names):
            rows = value[present[:, i], i]
            if not len(rows):
                continue
            if key == "modality_weights":
                tf.summary.scalar(f"{tag}/{name}", float(rows.mean()))
            else:
                write_histogram(f"{tag}/{name}", rows)
                tf.summary.scalar(f"{path}/gates_mean/{name}", float(rows.mean()))
    elif value.ndim == 4:
        tf.summary.image(tag, attention_images(value, max_images, tag, modality_names, presence),
                         max_outputs=max_images)
    else:
        write_histogram(tag, value)


class FusionInspector(keras.callbacks.Callback):
    """Logs what the fusion layers learned to TensorBoard at the end of epochs.

    Every `freq` epochs, on a fixed probe batch of validation data, writes
    the weights of every `FusionLayer` of the model (nested functional models
    included), the contribution of each modality by ablation and the metric
    at each test-time missing rate into the TensorBoard run
    `<log_dir>/fusion` (tags: see the module docstring). The
    weights are read by a `FusionProbe` built once at the start of `fit`; the
    fusion layers log nothing themselves. Use it with
    `keras.callbacks.TensorBoard(log_dir)` on the same `log_dir`; it is not a
    subclass of it, so KerasTuner's HParams hook, which patches callbacks of
    class `keras.callbacks.TensorBoard` only, leaves it alone.

    Args:
        log_dir: the TensorBoard log directory (as given to `keras.callbacks.TensorBoard`).
        validation_data: `(x, y)` arrays (dict or list `x`), or a
            `tf.data.Dataset` of `(x, y)` batches (its first batch is used).
        freq: log every `freq` epochs (epochs 0, freq, 2 freq, ...).
        probe_size: number of examples of the probe batch.
        metric: compiled metric reported by the ablation and the missing
            rates (default: the first compiled metric, else the loss).
        ablation: whether to log the ablation scalars.
        max_images: examples (and heads per example) drawn per attention map.
        missing_rates: test-time missing rates at which the metric is
            logged (None or `()`: none). At rate R each modality of each
            probe row is absent with probability R (a row keeps at least
            one), marked absent in the model's `presence` input and its
            inputs zeroed; a model without a `presence` input gets the
            zeroed inputs only. Rate 0 is the metric with every modality.
            `"auto"`: `MISSING_RATES` (0, 0.25, 0.5, 0.75) when the model's
            modalities can be marked absent, else none, with a warning (a
            model without `presence` and with a text input); rates given
            explicitly raise a `ValueError` then.
        seed: seed of the missing-rate masks (fixed for the whole run).

    Example:

    ```python
    log_dir = "logs/run1"
    model.fit(x, y, validation_data=(x_val, y_val), epochs=10, callbacks=[
        keras.callbacks.TensorBoard(log_dir),
        mmfusion.inspect.FusionInspector(log_dir, (x_val, y_val)),
    ])
    # tensorboard --logdir logs/run1   or   mmfusion report logs/run1
    ```

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import GMU
    >>> from mmfusion.inspect.report import read_events
    >>> a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    >>> fused = GMU(4, modalities=["a", "b"], name="gmu")([a, b])
    >>> model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1, activation="sigmoid")(fused))
    >>> model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    >>> x, y = {"a": np.ones((8, 3)), "b": np.zeros((8, 2))}, np.ones((8, 1))
    >>> log_dir = str(getfixture("tmp_path"))
    >>> _ = model.fit(x, y, epochs=1, verbose=0, callbacks=[FusionInspector(log_dir, (x, y))])
    >>> scalars, _ = read_events(log_dir)
    >>> sorted(scalars["fusion"])  # doctest: +NORMALIZE_WHITESPACE
    ['ablation/accuracy/all', 'ablation/accuracy/only_a', 'ablation/accuracy/only_b',
     'ablation/accuracy/without_a', 'ablation/accuracy/without_b',
     'gmu/gates_mean/a', 'gmu/gates_mean/b',
     'missing_rate/accuracy/rate_0', 'missing_rate/accuracy/rate_0.25',
     'missing_rate/accuracy/rate_0.5', 'missing_rate/accuracy/rate_0.75']
    """

    def __init__(self, log_dir, validation_data, freq=1, probe_size=256, metric=None,
                 ablation=True, max_images=3, missing_rates="auto", seed=0):
        super().__init__()
        if freq < 1:
            raise ValueError(f"FusionInspector: freq must be >= 1; received {freq}.")
        self.log_dir = log_dir
        self.x, self.y = _probe_batch(validation_data, probe_size)
        self.freq = freq
        self.metric = metric
        self.ablation = ablation
        self.max_images = max_images
        self.missing_rates = missing_rates
        self.seed = seed
        self._probe = None
        self._missing_feeds = {}
        self._writer = None
        self._layout_written = False

    def on_train_begin(self, logs=None):
        if self._probe is None or self._probe.model is not self.model:
            self._probe = FusionProbe(self.model)
            self._missing_feeds = self._missing_rate_inputs()
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, RUN))
        self._layout_written = False

    def _missing_rate_inputs(self):
        """dict rate -> the probe inputs with modalities absent at that rate."""
        if self.missing_rates is None:
            return {}
        auto = isinstance(self.missing_rates, str)
        if auto and self.missing_rates != "auto":
            raise ValueError(f"FusionInspector: missing_rates must be 'auto', None or a list of "
                             f"rates; received {self.missing_rates!r}.")
        try:
            return missing_rate_inputs(self.model, self.x, MISSING_RATES if auto
                                       else self.missing_rates, self.seed)[0]
        except ValueError as error:
            if not auto:
                raise
            warnings.warn(f"FusionInspector: no missing-rate scalars for model "
                          f"'{self.model.name}': {error}", stacklevel=2)
            return {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.freq == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        self._writer.close()

    def write(self, step):
        """Writes every summary for `step` (called by `on_epoch_end`)."""
        weights = self._probe(self.x, batch_size=len(self.y))
        presence = self._probe.presence(self.x, batch_size=len(self.y))
        if not self._layout_written:  # the charts of the scalars this run has
            keys = {key for layer_weights in weights.values() for key in layer_weights}
            kinds = [kind for kind, wanted in ((ABLATION, self.ablation),
                                               (MISSING_RATE, self._missing_feeds),
                                               ("gates", "gates" in keys),
                                               ("modality_weights", "modality_weights" in keys))
                     if wanted]
            with self._writer.as_default():
                tf.summary.experimental.write_raw_pb(
                    custom_scalar_pb(scalars_layout(kinds)).SerializeToString(), step=0)
            self._layout_written = True
        with self._writer.as_default(step=step):
            for path, layer_weights in weights.items():
                names = self._probe.layers[path].modality_names
                for key, value in layer_weights.items():
                    write_weights(path, key, value, names, self.max_images, presence[path])
            if self.ablation:
                result = modality_ablation(self.model, self.x, self.y, self.metric)
                tag = f"{ABLATION}/{result['metric']}"
                tf.summary.scalar(f"{tag}/all", result["all"])
                for kind in ("without", "only"):
                    for name, value in result[kind].items():
                        tf.summary.scalar(f"{tag}/{kind}_{name}", value)
            for rate, feed in self._missing_feeds.items():
                metric, value = batch_metric(self.model, feed, self.y, self.metric)
                tf.summary.scalar(f"{MISSING_RATE}/{metric}/rate_{rate:g}", value)
        self._writer.flush()
