"""`mmfusion report LOGDIR`: a self-contained HTML page of a training run.

Reads the run's event files (those of `keras.callbacks.TensorBoard` and of
`mmfusion.inspect.FusionInspector`) with TensorBoard's own event reader and
writes one HTML file with every plot embedded as a base64 PNG.
"""

import base64
import html
import os
from collections import defaultdict

from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.util import tensor_util

from mmfusion.files import write_text
from mmfusion.inspect.callbacks import ABLATION, MISSING_RATE, RUN
from mmfusion.inspect.plots import (contribution_bars, missing_rate_curves, png_bytes,
                                    weight_trajectories)
from mmfusion.robustness import relative_robustness

__all__ = ["build_report", "read_events"]

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
figure img {{ max-width: 640px; image-rendering: pixelated; border: 1px solid #eee; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def read_events(logdir):
    """Scalars and latest images of every run under `logdir`.

    Args:
        logdir: a TensorBoard log directory (runs are its sub-directories).

    Returns:
        `(scalars, images)`: `scalars[run][tag]` is `(steps, values)` (lists,
        in the order written) and `images[run][tag]` the list of PNG bytes
        of the tag's last step.

    Example:

    >>> import tensorflow as tf
    >>> logdir = getfixture("tmp_path")
    >>> writer = tf.summary.create_file_writer(str(logdir / "train"))
    >>> with writer.as_default():
    ...     for step, loss in enumerate([0.9, 0.5]):
    ...         _ = tf.summary.scalar("epoch_loss", loss, step=step)
    >>> writer.close()
    >>> scalars, images = read_events(str(logdir))
    >>> steps, values = scalars["train"]["epoch_loss"]
    >>> steps, [round(v, 2) for v in values], images
    ([0, 1], [0.9, 0.5], {})
    """
    mux = EventMultiplexer(size_guidance={plugin_event_accumulator.TENSORS: 0})
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    scalars, images = defaultdict(dict), defaultdict(dict)
    for run, tags in mux.PluginRunToTagToContent("scalars").items():
        for tag in tags:
            events = mux.Tensors(run, tag)
            scalars[run][tag] = ([e.step for e in events],
                                 [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events])
    for run, tags in mux.PluginRunToTagToContent("images").items():
        for tag in tags:
            last = tensor_util.make_ndarray(mux.Tensors(run, tag)[-1].tensor_proto)
            images[run][tag] = list(last[2:])  # [width, height, png, png, ...]
    return dict(scalars), dict(images)


def _figure_html(png, caption):
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header, rows):
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{v:.4f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                         for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _contributions(fusion_scalars):
    """`{metric: (value with all, {modality: value without it}, {modality:
    value with it alone})}` at the last logged step."""
    full, without, only = {}, defaultdict(dict), defaultdict(dict)
    for tag, (_, values) in fusion_scalars.items():
        parts = tag.split("/")
        if parts[0] != ABLATION or len(parts) != 3:
            continue
        if parts[2] == "all":
            full[parts[1]] = values[-1]
        elif parts[2].startswith("without_"):
            without[parts[1]][parts[2].removeprefix("without_")] = values[-1]
        elif parts[2].startswith("only_"):
            only[parts[1]][parts[2].removeprefix("only_")] = values[-1]
    return {metric: (value, without[metric], only[metric]) for metric, value in full.items()}


def _missing_rates(fusion_scalars):
    """`{metric: (rates, steps, values)}` of the `missing_rate/METRIC/rate_R`
    scalars: increasing rates, the logged steps, and `values[i][j]` the
    metric at rate `rates[i]` and step `steps[j]`."""
    found = defaultdict(dict)
    for tag, series in fusion_scalars.items():
        parts = tag.split("/")
        if parts[0] == MISSING_RATE and len(parts) == 3 and parts[2].startswith("rate_"):
            found[parts[1]][float(parts[2].removeprefix("rate_"))] = series
    curves = {}
    for metric, by_rate in found.items():
        rates = sorted(by_rate)
        steps = by_rate[rates[0]][0]
        curves[metric] = (rates, steps, [by_rate[r][1] for r in rates])
    return curves


def _missing_rate_html(curves):
    """A table per metric: the value at each missing rate at the first and
    the last logged epoch, and the last epoch's relative robustness."""
    parts = []
    for metric, (rates, steps, values) in sorted(curves.items()):
        columns = sorted({0, len(steps) - 1})
        header = ["metric", "test-time missing rate"] + [
            f"epoch {steps[j]}" + (" (last)" if j == len(steps) - 1 else "") for j in columns]
        parts.append(_table(header, [(metric, f"{rate:g}", *(row[j] for j in columns))
                                     for rate, row in zip(rates, values)]))
        if len(rates) > 1:
            area = relative_robustness(rates, [row[-1] for row in values])
            parts.append(f"<p>Relative robustness of {html.escape(metric)} at epoch {steps[-1]} "
                         f"(area under the curve, as in MultiBench): {area:.4f}</p>")
    return parts


def _constant(series):
    """Whether every curve of `{label: (steps, values)}` holds one and the same value."""
    values = {v for _, vs in series.values() for v in vs}
    return len(values) <= 1


def _groups(series_by_tag, split):
    """Groups `{tag: series}` into `{group: {label: series}}` by `split(tag)`."""
    groups = defaultdict(dict)
    for tag, series in series_by_tag.items():
        group, label = split(tag)
        groups[group][label] = series
    return groups


def build_report(logdir, output=None):
    """Writes the HTML report of the run in `logdir` and returns its path.

    The page holds summary tables (each run's final metrics; each modality's
    contribution by ablation; the metric at each test-time missing rate, at
    the first and the last logged epoch, with its relative robustness; the
    last logged fusion scalars) and the plots: training curves (one per
    `epoch_*` metric, train vs. validation), fusion weight trajectories
    (modality weights, gate means, ablation and missing-rate metrics: one
    plot per fusion layer and kind), contribution bars, the metric vs. the
    missing rate (one line per logged epoch), and the last logged attention
    maps. The file is written atomically.

    Args:
        logdir: the log directory given to `keras.callbacks.TensorBoard` and
            `FusionInspector`.
        output: path of the HTML file (default `<logdir>/report.html`).

    Returns:
        The path of the HTML file.

    Example:

    >>> import tensorflow as tf
    >>> logdir = getfixture("tmp_path")
    >>> writer = tf.summary.create_file_writer(str(logdir / "train"))
    >>> with writer.as_default():
    ...     for step, loss in enumerate([0.9, 0.5]):
    ...         _ = tf.summary.scalar("epoch_loss", loss, step=step)
    >>> writer.close()
    >>> path = build_report(str(logdir))
    >>> with open(path, encoding="utf-8") as f:
    ...     page = f.read()
    >>> os.path.basename(path), "training curve: epoch_loss" in page
    ('report.html', True)
    """
    scalars, images = read_events(logdir)
    if not scalars and not images:
        raise ValueError(f"mmfusion report: no TensorBoard scalars or images under '{logdir}'.")
    fusion = scalars.pop(RUN, {})
    contributions = _contributions(fusion)
    missing = _missing_rates(fusion)
    body = ["<h2>Final metrics</h2>", _table(
        ["run", "metric", "final value", "points"],
        [(run, tag, values[-1], len(values))
         for run, tags in sorted(scalars.items()) for tag, (_, values) in sorted(tags.items())])]
    if contributions:
        body += ["<h2>Modality contributions (last logged epoch)</h2>", _table(
            ["metric", "modality", "with all", "without modality", "contribution",
             "modality alone"],
            [(metric, m, full, value, full - value, only.get(m, ""))
             for metric, (full, without, only) in contributions.items()
             for m, value in without.items()])]
    if missing:
        body += ["<h2>Metric vs. test-time missing rate</h2>", *_missing_rate_html(missing)]
    if fusion:
        body += ["<h2>Fusion scalars (last logged epoch)</h2>",
                 _table(["tag", "value"], [(tag, v[-1]) for tag, (_, v) in sorted(fusion.items())])]
    body += ["<h2>Plots</h2>", _plots(scalars, fusion, contributions, missing,
                                      images.get(RUN, {}))]
    output = output or os.path.join(logdir, "report.html")
    title = f"mmfusion report: {html.escape(os.path.abspath(logdir))}"
    write_text(output, PAGE.format(title=title, body="\n".join(body)))
    return output


def _plots(scalars, fusion, contributions, missing, attention_maps):
    """HTML figures: training curves, fusion scalar groups, contributions,
    metric vs. missing rate, attention maps."""
    figures = []
    metrics = _groups({(run, tag): s for run, tags in scalars.items() for tag, s in tags.items()
                       if tag.startswith("epoch_")}, lambda key: (key[1], key[0]))
    for tag, series in sorted(metrics.items()):
        if _constant(series):  # e.g. epoch_learning_rate without a schedule
            continue
        figures.append((weight_trajectories(series, tag, tag), f"training curve: {tag}"))
    for group, series in sorted(_groups(fusion, lambda t: tuple(t.rsplit("/", 1))).items()):
        ylabel = group.rsplit("/", 1)[-1].replace("_", " ")  # gates_mean, accuracy, ...
        figures.append((weight_trajectories(series, group, ylabel), f"fusion: {group}"))
    for metric, (full, without, _) in contributions.items():
        figures.append((contribution_bars(without, full, metric), f"modality contribution: {metric}"))
    for metric, (rates, steps, values) in sorted(missing.items()):
        curves = {step: (rates, [row[j] for row in values]) for j, step in enumerate(steps)}
        figures.append((missing_rate_curves(curves, metric), f"{metric} vs. missing rate"))
    html_figures = [_figure_html(png_bytes(fig), caption) for fig, caption in figures]
    for tag, pngs in sorted(attention_maps.items()):
        html_figures += [_figure_html(png, f"attention map: {tag} (example {i})")
                         for i, png in enumerate(pngs)]
    return "\n".join(html_figures)
