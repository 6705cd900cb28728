"""benchmarks/inspection_screenshots.py: screenshots of TensorBoard and the
report with a headless Chromium (skipped where there is none, as on CI)."""

import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import inspection_screenshots  # noqa: E402


def test_without_a_browser_it_says_so_and_exits_cleanly(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no executable of any browser name
    monkeypatch.delenv("CHROME", raising=False)
    assert inspection_screenshots.find_browser() is None
    assert inspection_screenshots.main(["--output", str(tmp_path / "out")]) == 0
    assert "skipped, no Chromium or Chrome found" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.mark.slow  # trains two small models and starts tensorboard: ~60 s on 2 cores
@pytest.mark.skipif(inspection_screenshots.find_browser() is None,
                    reason="no Chromium or Chrome (apt-get install chromium)")
def test_screenshots_of_tensorboard_and_the_reports_show_something(tmp_path, capsys):
    import matplotlib.image

    assert inspection_screenshots.main(["--task", "synthetic", "--epochs", "1", "--limit", "200",
                                        "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    names = ["report_gmu.png", "report_co_attention.png", "tensorboard_custom_scalars.png",
             "tensorboard_scalars.png", "tensorboard_images.png"]
    assert printed[:-1] == [str(tmp_path / name) for name in names]
    for name in names:
        pixels = matplotlib.image.imread(io.BytesIO((tmp_path / name).read_bytes()), format="png")
        assert min(pixels.shape[:2]) >= 1000
        assert np.std(pixels[..., :3]) > 0.05, name  # not a blank page
    page = (tmp_path / "report_gmu.html").read_text(encoding="utf-8")
    assert "accuracy vs. missing rate" in page
