"""A small real MFAS search (real training on cached frozen-branch features)
finds a better architecture than the worst single-layer choice of taps.

The task makes the tap choice matter: the label is the XOR of the signs of
two inputs, one per modality, so no modality alone predicts it, and each
branch ends in a one-unit bottleneck (its `vector` tap) that pretraining on
one modality cannot make informative; only fusing earlier taps of both
branches solves it."""

import keras
import keras_tuner
import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.search.features import feature_branches, pack
from mmfusion.search.hypermodel import FusionHyperModel, MFASTuner
from mmfusion.search.run import Task, prepare

EPOCHS = 5


def xor_task(n=800, seed=0):
    rng = np.random.default_rng(seed)
    splits = {}
    for split, size in (("train", n), ("validation", n // 4), ("test", n // 4)):
        x = {m: rng.normal(size=(size, 2)).astype("float32") for m in ("a", "b")}
        splits[split] = (x, ((x["a"][:, 0] > 0) != (x["b"][:, 0] > 0)).astype("int32"))
    branches = {m: tabular_mlp(2, units=(16, 8, 1), name=m) for m in ("a", "b")}
    return Task(branches, splits, num_classes=2)


@pytest.mark.slow
def test_mfas_beats_the_worst_single_layer_architecture(tmp_path):
    keras.utils.set_random_seed(0)
    task = xor_task()
    prepared = prepare(task, str(tmp_path / "prepared"), pretrain_epochs=1)
    features, labels = prepared.features, prepared.labels
    data = dict(x=pack(features["train"]), y=labels["train"], epochs=EPOCHS, batch_size=32,
                verbose=0, validation_data=(pack(features["validation"]), labels["validation"]))
    hypermodel = FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                                  fusions=["concat"], activations=["relu"], max_layers=2,
                                  units=(32,), learning_rates=(1e-2,))
    tuner = MFASTuner(hypermodel, max_trials=6, seed=0, directory=str(tmp_path),
                      oracle_kwargs={"initial_samples": 5, "samples_per_step": 1,
                                     "surrogate_epochs": 20})
    tuner.search(**data)
    best = tuner.oracle.get_best_trials()[0].score

    space = hypermodel.space
    single_layer = []
    for layer in space.layer_options(1):  # every choice of one tap per branch
        hp = keras_tuner.HyperParameters()
        hypermodel.build(hp)
        hp.values.update(space.values([layer]))
        history = hypermodel.build(hp).fit(**data)
        single_layer.append(max(history.history["val_accuracy"]))
    assert len(single_layer) == 9  # 3 taps per branch
    assert best > min(single_layer) + 0.15, (best, single_layer)
    assert best > 0.75  # chance is 0.5
