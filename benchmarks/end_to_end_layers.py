"""Fusion layers trained end to end on av_digits (real handwriting x spoken
digits): image CNN + audio CNN branches from `mmfusion.tasks`, one fusion
layer (`units=64`, paper defaults), Adam 2e-3, batch 32. The validation
split is carved out of the training data; the reported accuracy is on the
test split, after the last epoch. Mean ± std over seeds; the raw results are
written (atomically, after every run, so an interrupted run keeps what it
measured) to `benchmarks/end_to_end_layers.json`.

Rows: concatenation, GAN-Fusion (and with `adversarial_weight=0`), MUTAN
trained with `ModalityDropout(0.5)` (tested with both modalities and with
each one absent), and the bilinear / tensor family.

    python benchmarks/end_to_end_layers.py                      # everything, 12 epochs, 3 seeds
    python benchmarks/end_to_end_layers.py --rows concat gan_fusion --epochs 12
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).with_name("end_to_end_layers.json")
TENSOR_FAMILY = ("tfn", "lmf", "mcb", "mlb", "mfb", "mfh", "mutan", "tucker", "block")
ROWS = {  # row -> (fusion layer, fusion_kwargs, modality dropout rate)
    "concat": ("concat", {}, 0.0),
    "gan_fusion": ("gan_fusion", {}, 0.0),
    "gan_fusion (adversarial_weight=0)": ("gan_fusion", {"adversarial_weight": 0.0}, 0.0),
    "mutan + ModalityDropout(0.5)": ("mutan", {}, 0.5),
    **{name: (name, {}, 0.0) for name in TENSOR_FAMILY},
}
PRESENCE_CASES = {"both": (1, 1), "image only": (1, 0), "audio only": (0, 1)}

def train_and_test(row, seed, epochs, data_dir=None):
    """Trains the model of `row` with `seed`; returns its test accuracies
    (`{"both": ...}`, plus one per absent modality for modality-dropout rows)
    and the last validation accuracy."""
    import keras

    import mmfusion.tasks as tasks
    from mmfusion.compose import build_fusion_model

    fusion, kwargs, rate = ROWS[row]
    task = tasks.get("av_digits")
    data = task.data(data_dir=data_dir, seed=seed)
    keras.utils.set_random_seed(seed)
    branches = task.branches(data)
    modalities = list(branches)  # the order of the presence columns
    if rate and modalities != ["image", "audio"]:
        raise ValueError(f"expected the modalities image, audio; got {modalities}")
    model = build_fusion_model(branches, fusion, num_outputs=task.num_outputs,
                               units=64, fusion_kwargs=kwargs, presence=bool(rate),
                               modality_dropout=rate)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def feed(split, presence=(1, 1)):
        inputs, labels = data.splits[split]
        inputs = dict(inputs)
        if rate:
            inputs["presence"] = np.tile(np.float32(presence), (len(labels), 1))
        return inputs, labels

    history = model.fit(*feed("train"), validation_data=feed("validation"), epochs=epochs,
                        batch_size=32, verbose=0).history
    cases = PRESENCE_CASES if rate else {"both": (1, 1)}
    test = {case: float(model.evaluate(*feed("test", p), verbose=0)[1])
            for case, p in cases.items()}
    return {"test": test, "validation": float(history["val_accuracy"][-1])}


def _write(path, report):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, path)


def _table(report):
    lines = [f"| fusion | test accuracy, both present ({report['epochs']} epochs) | "
             "absent image | absent audio | seeds |", "|---|---|---|---|---|"]
    for row, runs in report["runs"].items():
        def cell(case):
            values = [r["test"][case] for r in runs if case in r["test"]]
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else ""
        lines.append(f"| {row} | {cell('both')} | {cell('audio only')} | {cell('image only')} "
                     f"| {len(runs)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", default=None, help="folder holding fsdd/ "
                        "(default: $MMFUSION_DATA, then Keras's cache)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    report = {"task": "av_digits", "epochs": args.epochs, "seeds": args.seeds, "units": 64,
              "optimizer": "Adam(2e-3)", "batch_size": 32, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": {}}
    for row in args.rows:
        report["runs"][row] = []
        for seed in args.seeds:
            start = time.time()
            result = train_and_test(row, seed, args.epochs, args.data_dir)
            result.update(seed=seed, seconds=round(time.time() - start, 1))
            report["runs"][row].append(result)
            print(row, result, flush=True)
            report["markdown"] = _table(report)
            _write(args.output, report)
    print(report["markdown"])
    return report


if __name__ == "__main__":
    main()
