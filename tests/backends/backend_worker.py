"""Runs every registered fusion layer under the backend of `KERAS_BACKEND`.

`python -m tests.backends.backend_worker DIR [--unimodal] LAYER...` writes
`DIR/<backend>.json`: for each named layer, the fusion-layer contract (`mmfusion.testing`, every check
on two modalities: "passed" or the failure message) and a small model's
losses before and after training, saved and reloaded (the contract under
TensorFlow is checked by tests/fusion/test_every_layer.py). Models saved by an
earlier run under another backend (`DIR/<name>.keras` with reference inputs
and predictions in `DIR/<name>.npz`) are loaded and predicted too, so the
test can compare predictions across backends. The first run writes them.
With `--unimodal` it also writes `DIR/<backend>-unimodal.json`: the training loss of a model
with unimodal auxiliary losses next to its NumPy computation
(`tests.test_unimodal.loss_report`; `UnimodalLossModel.compute_loss` runs
inside each backend's own training step).
"""

import json
import os
import sys

import keras
import numpy as np

from mmfusion import fusion
from mmfusion.testing import CHECKS, LayerCase, run_fusion_layer_test

SIZES = (6, 10)


def build_model(name, xs):
    tensors = [keras.Input(shape=x.shape[1:]) for x in xs]
    presence = keras.Input(shape=(len(xs),))
    fused = fusion.get(name, units=8)(tensors, presence=presence)
    if len(fused.shape) > 2:
        fused = keras.layers.Flatten()(fused)
    return keras.Model(tensors + [presence], keras.layers.Dense(1)(fused))


def contract(name):
    """`{check: "passed" or the failure}` for `fusion.get(name, units=8)`."""
    cls = fusion.get_class(name)
    results = {}
    for check in CHECKS:
        if check == "keras_mask" and cls.input_rank != 3:
            continue
        try:
            run_fusion_layer_test(cls, {"units": 8}, SIZES, checks=[check])
        except AssertionError as error:
            results[check] = str(error)
        else:
            results[check] = "passed"
    return results


def check_layer(name, directory):
    keras.utils.set_random_seed(0)
    xs = LayerCase(fusion.get_class(name), sizes=SIZES, batch=16).inputs()
    presence = np.ones((16, 2), "float32")
    presence[::4, 0] = 0
    feeds = xs + [presence]
    target = np.random.default_rng(2).normal(size=(16, 1)).astype("float32")
    model = build_model(name, xs)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    # Trained with every modality present; evaluated in inference mode (no
    # dropout noise) before and after. `feeds` (some modality absent) is what
    # the saved model is compared on.
    train_feeds = xs + [np.ones_like(presence)]
    first = model.evaluate(train_feeds, target, batch_size=16, verbose=0)
    model.fit(train_feeds, target, epochs=10, batch_size=16, verbose=0)
    result = {"first_loss": first,
              "last_loss": model.evaluate(train_feeds, target, batch_size=16, verbose=0)}

    path = os.path.join(directory, f"{name}.keras")
    if os.path.exists(path):
        reference = np.load(os.path.join(directory, f"{name}.npz"))
        feeds_ref = [reference[f"x{i}"] for i in range(len(reference.files) - 1)]
        loaded = keras.saving.load_model(path)
        got = loaded.predict(feeds_ref, verbose=0)
        result["cross_backend_max_error"] = float(np.abs(got - reference["y"]).max())
    else:
        model.save(path)
        np.savez(os.path.join(directory, f"{name}.npz"),
                 y=model.predict(feeds, verbose=0), **{f"x{i}": f for i, f in enumerate(feeds)})
        reloaded = keras.saving.load_model(path)
        result["reload_max_error"] = float(
            np.abs(reloaded.predict(feeds, verbose=0) - model.predict(feeds, verbose=0)).max())
    if keras.backend.backend() != "tensorflow":  # tests/fusion checks TensorFlow
        result["contract"] = contract(name)
    return result


def _write(path, results):
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def main(directory, layers, unimodal):
    from tests.test_unimodal import loss_report

    results = {name: check_layer(name, directory) for name in layers}
    _write(os.path.join(directory, f"{keras.backend.backend()}.json"), results)
    if unimodal:
        _write(os.path.join(directory, f"{keras.backend.backend()}-unimodal.json"),
               loss_report())


if __name__ == "__main__":
    arguments = sys.argv[2:]
    main(sys.argv[1], [a for a in arguments if a != "--unimodal"], "--unimodal" in arguments)
