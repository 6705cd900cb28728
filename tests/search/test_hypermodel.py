import glob
import os

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from mmfusion.branches import tabular_mlp
from mmfusion.datasets.synthetic import load_gmu_synthetic
from mmfusion.search import FusionHyperModel, MFASTuner
from mmfusion.search.features import (FeatureCache, feature_branches, pack, pretrain_branch,
                                      transfer_weights)


TRIALS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Pretrained frozen branches, cached features and a small MFAS search with TensorBoard."""
    folder = tmp_path_factory.mktemp("search")
    train, test = load_gmu_synthetic(n_train=300, n_test=100, seed=0)
    branches = {m: tabular_mlp(2, units=(8, 4), name=m) for m in train.inputs}
    for m, branch in branches.items():
        pretrain_branch(branch, train.inputs[m], train.labels, 2, epochs=1)
    cache = FeatureCache(str(folder / "features"))
    features = cache.features(branches, train.inputs)
    hypermodel = FusionHyperModel(feature_branches(features), 2, fusions=["concat", "gmu"],
                                  max_layers=2, units=(4,), fit_verbose=0)
    tuner = MFASTuner(hypermodel, max_trials=TRIALS, seed=0, directory=str(folder),
                      oracle_kwargs={"initial_samples": 2, "samples_per_step": 1,
                                     "surrogate_epochs": 5})
    logs = str(folder / "logs")
    x = pack(features)
    tuner.search(x, train.labels, validation_split=0.25, epochs=1, verbose=0,
                 callbacks=[keras.callbacks.TensorBoard(logs)])
    return locals()


def test_each_trial_builds_its_architecture(setup):
    tuner, hypermodel = setup["tuner"], setup["hypermodel"]
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == TRIALS and all(t.status == "COMPLETED" for t in trials)
    for trial in trials:
        model = hypermodel.build(trial.hyperparameters)
        architecture = hypermodel.space.architecture(trial.hyperparameters.values)
        for i, (*taps, fusion, activation) in enumerate(architecture, start=1):
            layer = model.get_layer(f"fusion_{i}_{fusion}")
            assert type(layer).registry_name == fusion
            assert layer.modality_names[:2] == ["visual", "textual"]
            assert len(layer.modality_names) == 2 + (i > 1)  # + the previous layer
            assert model.get_layer(f"fusion_{i}_activation").activation.__name__ == activation


def test_trainable_branches_are_cloned_frozen_shared():
    branch = tabular_mlp(2, units=(4,), name="a")
    frozen = tabular_mlp(2, units=(4,), name="b")
    frozen.trainable = False
    hypermodel = FusionHyperModel({"a": branch, "b": frozen}, 2, fusions=["concat"])
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert model.get_layer("b_branch") is frozen
    assert model.get_layer("a_branch") is not branch


def test_feature_cache_hits_and_keys(setup, tmp_path):
    branches, inputs = setup["branches"], setup["train"].inputs
    cache = FeatureCache(str(tmp_path))
    first = cache.features(branches, inputs)
    again = cache.features(branches, inputs)
    assert (cache.misses, cache.hits) == (2, 2)
    for m in first:
        for tap in first[m]:
            np.testing.assert_array_equal(first[m][tap], again[m][tap])
    branch = branches["visual"]
    key = cache.key(branch, inputs["visual"])
    assert cache.key(branch, inputs["visual"][:-1]) != key
    weights = branch.get_weights()
    branch.set_weights([w + 1 for w in weights])
    assert cache.key(branch, inputs["visual"]) != key
    branch.set_weights(weights)


def test_best_model_moves_onto_real_branches(setup, tmp_path):
    tuner, hypermodel = setup["tuner"], setup["hypermodel"]
    best_hp = tuner.get_best_hyperparameters()[0]
    searched = tuner.get_best_models()[0]
    model = hypermodel.with_branches(setup["branches"]).build(best_hp)
    assert transfer_weights(searched, model)
    inputs = setup["test"].inputs
    features = setup["cache"].features(setup["branches"], inputs)
    expected = searched.predict(pack(features), verbose=0)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=1e-5)
    path = str(tmp_path / "best.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(inputs, verbose=0),
                               expected, atol=1e-5)


def test_tensorboard_hparams_written_per_trial(setup):
    runs = set()
    for path in glob.glob(os.path.join(setup["logs"], "**", "events.out.tfevents.*"),
                          recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    runs.add(os.path.relpath(os.path.dirname(path), setup["logs"]))
    assert len({r.split(os.sep)[0] for r in runs}) == TRIALS  # one hparams run per trial
