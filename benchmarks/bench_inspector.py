"""Overhead of `FusionInspector` on `fit`: TensorBoard alone vs. TensorBoard +
FusionInspector (default frequency), same model, data and seed, interleaved
repetitions in one process. Prints one JSON line per fit (wall and process
CPU seconds) and a summary line: `ratio` is the ratio of the best (minimum)
wall times, the usual timing on a machine shared with other work, and
`ratio_cpu` the ratio of the median CPU times, which other processes disturb
less, and `ratio_inspector_time` is `fit / (fit - time inside the inspector's
callbacks)` (median over the inspected fits), the overhead measured inside
one fit. The inspector must stay under 1.10.

    python benchmarks/bench_inspector.py [--repeats 5] [--epochs 10] [--fusion gmu]
"""

import argparse
import json
import statistics
import tempfile
import time

import keras

from mmfusion.datasets.synthetic import load_gmu_synthetic
from mmfusion.demo import build_synthetic_model
from mmfusion.inspect import FusionInspector


class TimedInspector(FusionInspector):
    """A FusionInspector that adds up the wall time spent in its callbacks."""

    seconds = 0.0

    def _timed(self, method, *args):
        start = time.perf_counter()
        method(*args)
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, logs=None):
        self._timed(super().on_train_begin, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._timed(super().on_epoch_end, epoch, logs)


def timed_fit(fusion, train, val, epochs, log_dir, inspect):
    """`(wall_s, cpu_s, last_callback)` of one `fit` (a fresh model each time, as in the demo)."""
    model = build_synthetic_model(fusion, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    callbacks = [keras.callbacks.TensorBoard(log_dir)]
    if inspect:
        callbacks.append(TimedInspector(log_dir, (val.inputs, val.labels)))
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(train.inputs, train.labels, validation_data=(val.inputs, val.labels),
              epochs=epochs, batch_size=64, callbacks=callbacks, verbose=0)
    return time.perf_counter() - start, time.process_time() - cpu, callbacks[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fusion", default="gmu")
    args = parser.parse_args()
    train, val = load_gmu_synthetic(n_train=2000, n_test=500, seed=0)
    times = {"tensorboard": [], "tensorboard+inspector": []}
    cpu_times = {config: [] for config in times}
    shares = []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            for config in times:
                inspect = config != "tensorboard"
                seconds, cpu, inspector = timed_fit(args.fusion, train, val, args.epochs,
                                                    f"{root}/{config}_{repeat}", inspect)
                times[config].append(seconds)
                cpu_times[config].append(cpu)
                line = {"config": config, "repeat": repeat, "epochs": args.epochs,
                        "fit_s": round(seconds, 3), "cpu_s": round(cpu, 3)}
                if inspect:
                    shares.append(seconds / (seconds - inspector.seconds))
                    line["inspector_s"] = round(inspector.seconds, 3)
                print(json.dumps(line), flush=True)
        inspector.on_train_begin()
        start = time.perf_counter()
        for step in range(5):
            inspector.write(step)
        write_s = (time.perf_counter() - start) / 5
        inspector.on_train_end()
    base, inspected = min(times["tensorboard"]), min(times["tensorboard+inspector"])
    cpu_base, cpu_inspected = (statistics.median(cpu_times[c]) for c in times)
    print(json.dumps({
        "benchmark": "fusion_inspector_overhead", "fusion": args.fusion, "epochs": args.epochs,
        "train_examples": len(train), "probe_examples": len(inspector.y),
        "best_fit_tensorboard_s": round(base, 3),
        "best_fit_tensorboard_inspector_s": round(inspected, 3),
        "ratio": round(inspected / base, 3),
        "ratio_cpu": round(cpu_inspected / cpu_base, 3),
        "ratio_inspector_time": round(statistics.median(shares), 3),
        "inspector_write_ms_per_epoch_warm": round(1000 * write_s, 1),
        "epoch_ms_tensorboard": round(1000 * base / args.epochs, 1),
    }))


if __name__ == "__main__":
    main()
