"""Screenshots of what `FusionInspector` logs and of the `mmfusion report`
page, taken with a headless Chromium, to check every figure by looking at it.

Trains two small models briefly with `keras.callbacks.TensorBoard` and
`FusionInspector` under one log directory: a GMU (gates, ablation, metric vs.
missing rate) and a co-attention model (attention maps as images), both with
a `presence` input and modality dropout. The task is av_digits (digit images
and spoken digits) when FSDD is found under `--data-dir` (default
`$MMFUSION_DATA`), else the generated synthetic task. Then writes the HTML
report of each run, starts `tensorboard` on a free port, waits until it
serves the runs, and screenshots its Custom Scalars, Scalars (the
missing-rate and gate tags) and Images dashboards and the reports into
`--output` (default: a new temporary folder, outside the repository). Prints the paths of the PNGs, one per line, last a JSON line.
Without Chromium (or Chrome) it prints why and exits with status 0.

    python benchmarks/inspection_screenshots.py [--output DIR] [--task auto|av_digits|synthetic]
        [--epochs 10] [--limit N] [--data-dir DIR]
"""

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome",
            "google-chrome-stable", "chrome-headless-shell", "chrome")
# Page -> (URL fragment, window width, window height).
DASHBOARDS = {"tensorboard_custom_scalars": ("#custom_scalars", 1600, 1500),
              "tensorboard_scalars": ("#scalars&_smoothingWeight=0&tagFilter=missing_rate%7Cgates_mean",
                                      1600, 1500),
              "tensorboard_images": ("#images&_actualSize=true", 1600, 2400)}
REPORT_SIZE = (1400, 7000)
RATES = (0.0, 0.25, 0.5, 0.75)


def find_browser():
    """The path of a Chromium or Chrome executable (`$CHROME` first), or None."""
    for name in (os.environ.get("CHROME"),) + BROWSERS:
        path = name and shutil.which(name)
        if path:
            return path
    return None


def screenshot(browser, url, path, width, height, wait_ms=20000):
    """A PNG of `url` at `path`, taken by headless `browser` after `wait_ms`
    of virtual time (pages finish their requests and animations first)."""
    command = [browser, "--headless", "--disable-gpu", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--window-size={width},{height}",
               f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"{browser} could not screenshot {url} (exit {result.returncode}):\n"
                           f"{result.stderr[-2000:]}")
    return path


def _task_data(task, data_dir, seed, limit=None):
    """`(name, TaskData)`: av_digits when its data is found (or asked for), else
    synthetic; `limit` training and test examples when given."""
    from mmfusion import tasks
    from mmfusion.datasets.fsdd import DATA_ENV

    if task == "auto":  # av_digits only with a local FSDD: nothing is downloaded
        folder = data_dir or os.environ.get(DATA_ENV)
        task = "av_digits" if folder and os.path.isdir(os.path.join(folder, "fsdd")) else "synthetic"
    if task == "av_digits":
        return task, tasks.get(task).data(data_dir=data_dir, seed=seed, limit=limit)
    return task, tasks.get(task).data(seed=seed, limit=limit, n_train=2000, n_test=500, dim=4)


def _attention_model(task, data, num_outputs):
    """A co-attention model: over the branches' spatial taps for av_digits,
    over each synthetic modality's features as a sequence otherwise."""
    import keras

    from mmfusion import tasks
    from mmfusion.compose import build_fusion_model
    from mmfusion.fusion import CoAttention

    if task == "av_digits":
        return build_fusion_model(tasks.get(task).branches(data), "co_attention", units=32,
                                  num_outputs=num_outputs, taps={"image": "block_2",
                                                                 "audio": "block_3"},
                                  presence=True, modality_dropout=0.25, head_dropout=0.2,
                                  name="co_attention")
    x = data.splits["train"][0]
    inputs = {m: keras.Input(v.shape[1:], name=m) for m, v in x.items()}
    presence = keras.Input((len(x),), name="presence")
    sequences = {m: keras.layers.Reshape((v.shape[1], 1))(inputs[m]) for m, v in x.items()}
    fused = CoAttention(16, modalities=list(x), name="co_attention")(sequences, presence=presence)
    output = keras.layers.Dense(num_outputs, activation="softmax", name="prediction")(fused)
    return keras.Model({**inputs, "presence": presence}, output, name="co_attention")


def train_runs(logdir, task, epochs, data_dir=None, seed=0, limit=None):
    """Trains the GMU and co-attention runs in `logdir/gmu` and
    `logdir/co_attention` (the settings of `mmfusion train`: Adam at 1e-3,
    batches of 32, head dropout 0.2, plus modality dropout 0.25); returns the
    task's name."""
    import keras
    import numpy as np

    from mmfusion import tasks
    from mmfusion.compose import build_fusion_model
    from mmfusion.inspect import FusionInspector

    task, data = _task_data(task, data_dir, seed, limit)
    spec = tasks.get(task)
    (x, y), (x_val, y_val) = data.splits["train"], data.splits["validation"]
    x, x_val = ({**split, "presence": np.ones((len(labels), len(spec.modalities)), "float32")}
                for split, labels in ((x, y), (x_val, y_val)))
    builders = {
        "gmu": lambda: build_fusion_model(spec.branches(data), "gmu", units=32,
                                          num_outputs=spec.num_outputs, presence=True,
                                          modality_dropout=0.25, head_dropout=0.2, name="gmu"),
        "co_attention": lambda: _attention_model(task, data, spec.num_outputs)}
    for run, build in builders.items():
        keras.utils.set_random_seed(seed)
        model = build()
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        run_dir = os.path.join(logdir, run)
        model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0,
                  callbacks=[keras.callbacks.TensorBoard(run_dir),
                             FusionInspector(run_dir, (x_val, y_val), missing_rates=RATES)])
    return task


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _served(base, plugin, run, tag=None):
    """Whether TensorBoard at `base` serves `tag` (None: any tag) of `run` for `plugin`."""
    try:
        with urllib.request.urlopen(f"{base}/data/plugin/{plugin}/tags", timeout=5) as response:
            tags = json.load(response).get(run, {})
    except OSError:
        return False
    return bool(tags) if tag is None else tag in tags


@contextlib.contextmanager
def tensorboard(logdir, log_path, timeout=120):
    """Runs `tensorboard --logdir logdir` on a free port until the context
    ends; yields its base URL once it serves both runs' fusion summaries."""
    executable = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [executable if os.path.exists(executable) else "tensorboard", "--logdir", logdir,
             "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not (_served(base, "scalars", "gmu/fusion", "missing_rate/accuracy/rate_0.5")
                       and _served(base, "images", "co_attention/fusion")):
                if process.poll() is not None:
                    raise RuntimeError(f"tensorboard exited with code {process.returncode}; "
                                       f"see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tensorboard did not serve the runs in {timeout} s; "
                                       f"see {log_path}")
                time.sleep(1)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="folder of the PNGs (default: a new temporary folder)")
    parser.add_argument("--task", default="auto", choices=["auto", "av_digits", "synthetic"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None,
                        help="training and test examples kept (default: all)")
    parser.add_argument("--data-dir", default=None, help="folder of datasets holding fsdd/ "
                        "(default: $MMFUSION_DATA)")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print("inspection_screenshots: skipped, no Chromium or Chrome found (install one, e.g. "
              "`apt-get install chromium`, or set $CHROME to its path).")
        return 0
    output = os.path.abspath(args.output or tempfile.mkdtemp(prefix="mmfusion-screenshots-"))
    logdir = os.path.join(output, "logs")
    os.makedirs(logdir, exist_ok=True)
    start = time.perf_counter()
    task = train_runs(logdir, args.task, args.epochs, args.data_dir, limit=args.limit)
    trained_s = time.perf_counter() - start

    from mmfusion.inspect.report import build_report

    reports, paths = [], []
    for run in ("gmu", "co_attention"):  # a report is about one run
        reports.append(build_report(os.path.join(logdir, run),
                                    os.path.join(output, f"report_{run}.html")))
        paths.append(screenshot(browser, "file://" + reports[-1],
                                os.path.join(output, f"report_{run}.png"), *REPORT_SIZE))
    with tensorboard(logdir, os.path.join(output, "tensorboard.log")) as base:
        for name, (fragment, width, height) in DASHBOARDS.items():
            paths.append(screenshot(browser, f"{base}/{fragment}",
                                    os.path.join(output, f"{name}.png"), width, height))
    for path in paths:
        print(path)
    print(json.dumps({"task": task, "epochs": args.epochs, "train_s": round(trained_s, 1),
                      "total_s": round(time.perf_counter() - start, 1), "browser": browser,
                      "reports": reports, "screenshots": paths}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
