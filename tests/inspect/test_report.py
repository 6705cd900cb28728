import base64
import io
import re

import matplotlib.image
import numpy as np
import pytest

from mmfusion.cli import main
from mmfusion.inspect.report import read_events


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embedded_images(page):
    """dict alt text -> decoded bytes of every `data:image/png;base64` image."""
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">', page)
    return {alt: base64.b64decode(data) for data, alt in found}


def test_report_command_embeds_every_plot_as_a_valid_png(runs, tmp_path, capsys):
    output = tmp_path / "report.html"
    main(["report", runs["sum_attention"], "--output", str(output)])
    assert capsys.readouterr().out.strip() == str(output)
    page = output.read_text(encoding="utf-8")
    images = embedded_images(page)
    assert page.count("<img ") == len(images)
    expected = {
        "training curve: epoch_accuracy", "training curve: epoch_loss",
        "fusion: weighted_sum/modality_weights", "fusion: ablation/accuracy",
        "modality contribution: accuracy",
        "attention map: co_attention/affinity (example 0)",
        "attention map: co_attention/attention_textual (example 2)",
    }
    assert expected <= set(images)
    # Keras logs a constant epoch_learning_rate (no schedule): no plot for it,
    # nor for TensorBoard's own evaluation_*_vs_iterations tags.
    scalars = read_events(runs["sum_attention"])[0]
    assert len(set(scalars["train"]["epoch_learning_rate"][1])) == 1
    assert not [alt for alt in images if "learning_rate" in alt or "vs_iterations" in alt]
    for png in images.values():
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim in (2, 3) and min(pixels.shape[:2]) >= 32


def test_report_tables_give_final_metrics_and_contributions(runs, capsys):
    main(["report", runs["gmu"]])
    path = capsys.readouterr().out.strip()
    assert path.endswith("report.html")
    page = open(path, encoding="utf-8").read()
    found = re.findall(r"<tr><td>accuracy</td><td>(\w+)</td><td>([-0-9.]+)</td>"
                       r"<td>([-0-9.]+)</td><td>([-0-9.]+)</td><td>([-0-9.]+)</td></tr>", page)
    table = {m: [float(v) for v in values] for m, *values in found}
    assert set(table) == {"visual", "textual"}
    rows = {m: values[2] for m, values in table.items()}  # the contribution column
    assert float(rows["visual"]) > 0.35 > abs(float(rows["textual"]))
    # "modality alone": the visual one alone keeps the accuracy of all.
    full, _, _, visual_alone = table["visual"]
    assert abs(visual_alone - full) < 0.05 and table["textual"][3] < full - 0.35
    assert re.search(r"<td>validation</td><td>epoch_accuracy</td><td>0\.9\d+</td><td>4</td>", page)
    assert "attention map" not in page and np.isfinite(float(rows["visual"]))


def test_report_tables_and_plots_the_metric_vs_missing_rate(runs, tmp_path):
    from mmfusion.inspect.report import build_report
    from mmfusion.robustness import relative_robustness
    from tests.inspect.conftest import EPOCHS

    page = open(build_report(runs["gmu"], str(tmp_path / "r.html")), encoding="utf-8").read()
    fusion = read_events(runs["gmu"])[0]["fusion"]
    rates = [0.0, 0.25, 0.5, 0.75]
    logged = np.array([fusion[f"missing_rate/accuracy/rate_{r:g}"][1] for r in rates])
    assert logged.shape == (4, EPOCHS)
    found = re.findall(r"<tr><td>accuracy</td><td>([0-9.]+)</td><td>([-0-9.]+)</td>"
                       r"<td>([-0-9.]+)</td></tr>", page)
    assert [float(r) for r, _, _ in found] == rates
    np.testing.assert_allclose([[float(a), float(b)] for _, a, b in found],
                               logged[:, [0, -1]], atol=5e-5)  # printed with 4 decimals
    assert f"<th>epoch 0</th><th>epoch {EPOCHS - 1} (last)</th>" in page
    area = float(re.search(rf"Relative robustness of accuracy at epoch {EPOCHS - 1} \(area under "
                           r"the curve, "
                           r"as in MultiBench\): ([0-9.]+)", page).group(1))
    assert abs(area - relative_robustness(rates, logged[:, -1])) < 5e-5
    # Only visual carries the label: losing modalities costs accuracy.
    assert logged[0, -1] - logged[-1, -1] > 0.1
    assert {"accuracy vs. missing rate", "fusion: missing_rate/accuracy"} <= set(
        embedded_images(page))
