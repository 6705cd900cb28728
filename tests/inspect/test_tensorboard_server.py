import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


TENSORBOARD = os.path.join(os.path.dirname(sys.executable), "tensorboard")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for_tags(process, base, plugin, run, expected, deadline):
    """Polls `plugin`'s tags until `run` has all of `expected` (fails at `deadline`)."""
    while True:
        try:
            if expected <= set(get_json(f"{base}/data/plugin/{plugin}/tags").get(run, {})):
                return
        except OSError:
            pass
        if process.poll() is not None:
            pytest.fail(f"tensorboard exited with code {process.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"tensorboard did not serve {plugin} tags {expected} of run {run} in time")
        time.sleep(1)


@pytest.mark.slow  # tensorboard takes 10-30 s to start on 2 cores
@pytest.mark.skipif(not os.path.exists(TENSORBOARD), reason="no tensorboard executable")
def test_tensorboard_serves_the_inspector_tags(runs, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "tensorboard.log", "w") as log:
        process = subprocess.Popen(
            [TENSORBOARD, "--logdir", os.path.dirname(runs["gmu"]), "--host", "127.0.0.1",
             "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            wait_for_tags(process, base, "scalars", "gmu/fusion",
                          {"gmu/gates_mean/visual", "ablation/accuracy/without_visual"}, deadline)
            wait_for_tags(process, base, "scalars", "sum_attention/fusion",
                          {"weighted_sum/modality_weights/visual"}, deadline)
            wait_for_tags(process, base, "scalars", "gmu/validation", {"epoch_accuracy"}, deadline)
            wait_for_tags(process, base, "histograms", "gmu/fusion", {"gmu/gates/visual"}, deadline)
            wait_for_tags(process, base, "images", "sum_attention/fusion",
                          {"co_attention/affinity"}, deadline)
            # The Custom Scalars dashboard serves the inspector's layout.
            layout = get_json(f"{base}/data/plugin/custom_scalars/layout")
            titles = [c["title"] for cat in layout["category"] for c in cat["chart"]]
            assert any(t.startswith("modality ablation") for t in titles), layout
        finally:
            process.terminate()
            process.wait(timeout=20)
