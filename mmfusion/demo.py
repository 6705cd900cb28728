"""`mmfusion demo`: concatenation vs. GMU on the GMU paper's synthetic task.

Trains both models with `model.fit`, reports their test accuracy and how well
the GMU gate recovers the hidden switch M, and writes TensorBoard logs, a JSON
file of the results and a PNG of the gate over the input planes.
"""

import json
import os

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from mmfusion import fusion
from mmfusion.datasets.synthetic import MODALITIES, load_gmu_synthetic
from mmfusion.inspect import fusion_weights

__all__ = ["build_synthetic_model", "plot_gate", "run_demo", "train_synthetic", "visual_gate"]


def build_synthetic_model(fusion_name, dim=2, units=16, seed=0):
    """A binary classifier over the two synthetic modalities.

    Both inputs go through one fusion layer with `units` outputs (the
    concatenation baseline projects with a tanh layer of the same size), then
    a sigmoid unit.

    Args:
        fusion_name: registered fusion layer name, e.g. `"gmu"` or `"concat"`.
        dim: feature size of each modality.
        units: size of the fused representation.
        seed: seed of the weight initialization.

    Returns:
        An uncompiled `keras.Model` with inputs named after `MODALITIES`.

    Example:

    >>> build_synthetic_model("gmu").output.shape
    (None, 1)
    """
    keras.utils.set_random_seed(seed)
    inputs = {m: keras.Input(shape=(dim,), name=m) for m in MODALITIES}
    kwargs = {"activation": "tanh"} if fusion_name == "concat" else {}
    layer = fusion.get(fusion_name, units=units, modalities=list(MODALITIES),
                       name=f"{fusion_name}_fusion", **kwargs)
    output = keras.layers.Dense(1, activation="sigmoid", name="label")(layer(inputs))
    return keras.Model(inputs, output, name=f"{fusion_name}_synthetic")


def visual_gate(model, inputs):
    """Mean over units of the GMU gate on the `visual` modality, per example.

    Args:
        model: a model from `build_synthetic_model("gmu")`.
        inputs: dict modality -> `(n, dim)` array.

    Returns:
        `(n,)` array in (0, 1).

    Example:

    >>> from mmfusion.datasets.synthetic import make_gmu_task
    >>> data = make_gmu_task(n_samples=5)
    >>> gate = visual_gate(build_synthetic_model("gmu"), data.inputs)
    >>> gate.shape, bool(((gate > 0) & (gate < 1)).all())
    ((5,), True)
    """
    gates = fusion_weights(model, "gmu_fusion", inputs)["gates"]
    return gates[:, MODALITIES.index("visual"), :].mean(axis=1)


def plot_gate(gate, data, path):
    """PNG: the visual gate over both input planes and its histogram per M.

    Args:
        gate: `(n,)` gate values (see `visual_gate`).
        data: the `SyntheticData` the gate was computed on.
        path: path of the PNG file.

    Example:

    >>> from mmfusion.datasets.synthetic import make_gmu_task
    >>> data = make_gmu_task(n_samples=20)
    >>> path = getfixture("tmp_path") / "gate.png"
    >>> plot_gate(np.linspace(0, 1, 20), data, str(path))
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, modality in zip(axes, MODALITIES):
        x = data.inputs[modality]
        points = ax.scatter(x[:, 0], x[:, 1], c=gate, cmap="coolwarm", vmin=0, vmax=1, s=8)
        ax.set_title(f"visual gate z over the {modality} input")
        ax.set_xlabel(f"{modality}[0]")
        ax.set_ylabel(f"{modality}[1]")
    fig.colorbar(points, ax=axes[:2].tolist(), label="z")
    bins = np.linspace(0, 1, 31)
    for m, label in ((1, "M = 1: visual carries the signal"), (0, "M = 0: textual carries it")):
        axes[2].hist(gate[data.switch == m], bins=bins, alpha=0.6, label=label)
    axes[2].set_xlabel("mean gate z on visual")
    axes[2].set_title("gate vs. hidden switch M")
    axes[2].legend()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train_synthetic(fusion_name, train, test, epochs=30, log_dir=None, seed=0, verbose=2):
    """Fits `build_synthetic_model(fusion_name)` and returns `(model, test_accuracy)`.

    Args:
        fusion_name: registered fusion layer name, e.g. `"gmu"` or `"concat"`.
        train: training `SyntheticData` (10% of it validates).
        test: test `SyntheticData`.
        epochs: training epochs (Adam, learning rate 0.01, batch size 64).
        log_dir: optional TensorBoard log directory.
        seed: seed of the weight initialization.
        verbose: `model.fit` verbosity.

    Example:

    >>> from mmfusion.datasets.synthetic import load_gmu_synthetic
    >>> train, test = load_gmu_synthetic(n_train=32, n_test=16)
    >>> model, accuracy = train_synthetic("gmu", train, test, epochs=1, verbose=0)
    >>> model.name, 0.0 <= accuracy <= 1.0
    ('gmu_synthetic', True)
    """
    model = build_synthetic_model(fusion_name, dim=train.inputs["visual"].shape[1], seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    model.fit(train.inputs, train.labels, validation_split=0.1, epochs=epochs,
              batch_size=64, callbacks=callbacks, verbose=verbose)
    _, accuracy = model.evaluate(test.inputs, test.labels, verbose=0)
    return model, float(accuracy)


def run_demo(output_dir="mmfusion-demo", epochs=30, seed=0, verbose=2):
    """Runs the demo and returns its results dict (also written as JSON).

    Trains the concatenation and GMU models on 2000 examples of the
    synthetic task, evaluates them on 1000 more, and writes into
    `output_dir` the TensorBoard logs (`tensorboard/`), the gate plot
    (`gmu_gate.png`, see `plot_gate`) and the results (`results.json`).

    Args:
        output_dir: folder of the outputs (created if needed).
        epochs: training epochs of each model.
        seed: seed of the data and of the weight initialization.
        verbose: `model.fit` verbosity.

    Returns:
        Dict with `"concat_test_accuracy"`, `"gmu_test_accuracy"` and
        `"gmu_gate_auc"` (ROC AUC of the visual gate against the hidden switch M).

    Example:

    `epochs=0` here only runs the pipeline (untrained models, chance-level
    results); the command `mmfusion demo` trains for 30 epochs.

    >>> output = getfixture("tmp_path")
    >>> results = run_demo(str(output), epochs=0, verbose=0)  # doctest: +ELLIPSIS
    <BLANKLINE>
    == training the concat model ==
    ...
    GMU gate vs hidden switch M: ROC AUC ...
    >>> sorted(results), sorted(os.listdir(output))  # doctest: +NORMALIZE_WHITESPACE
    (['concat_test_accuracy', 'gmu_gate_auc', 'gmu_test_accuracy'],
     ['gmu_gate.png', 'results.json', 'tensorboard'])
    """
    os.makedirs(output_dir, exist_ok=True)
    train, test = load_gmu_synthetic(n_train=2000, n_test=1000, seed=seed)
    results = {}
    models = {}
    for name in ("concat", "gmu"):
        print(f"\n== training the {name} model ==")
        models[name], results[f"{name}_test_accuracy"] = train_synthetic(
            name, train, test, epochs=epochs, seed=seed, verbose=verbose,
            log_dir=os.path.join(output_dir, "tensorboard", name),
        )
    gate = visual_gate(models["gmu"], test.inputs)
    results["gmu_gate_auc"] = float(roc_auc_score(test.switch, gate))
    paths = {
        "tensorboard": os.path.join(output_dir, "tensorboard"),
        "gate_plot": os.path.join(output_dir, "gmu_gate.png"),
        "results": os.path.join(output_dir, "results.json"),
    }
    plot_gate(gate, test, paths["gate_plot"])
    with open(paths["results"], "w") as f:
        json.dump(results, f, indent=2)
    print("\n== results on the test split ==")
    print(f"concatenation test accuracy: {results['concat_test_accuracy']:.3f}")
    print(f"GMU test accuracy:           {results['gmu_test_accuracy']:.3f}")
    print(f"GMU gate vs hidden switch M: ROC AUC {results['gmu_gate_auc']:.3f}")
    print(f"\nTensorBoard logs: {paths['tensorboard']}  (tensorboard --logdir {paths['tensorboard']})")
    print(f"gate plot:        {paths['gate_plot']}")
    print(f"results:          {paths['results']}")
    return results
