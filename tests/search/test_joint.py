"""Joint training of search candidates: each trains exactly as alone, and a
tuner training K trials at a time proposes, scores and checkpoints them as
one trial at a time does."""

import keras
import numpy as np
import pytest

from mmfusion.compose import build_fusion_model
from mmfusion.search import FusionHyperModel
from mmfusion.search.features import feature_branches, pack
from mmfusion.search.joint import build_before_fit, train_jointly
from mmfusion.search.run import make_tuner


def features(n=96, seed=0):
    rng = np.random.default_rng(seed)
    taps = {"a": {"early": rng.normal(size=(n, 6)), "vector": rng.normal(size=(n, 3))},
            "b": {"vector": rng.normal(size=(n, 4))}}
    taps = {m: {t: x.astype("float32") for t, x in ts.items()} for m, ts in taps.items()}
    labels = ((taps["a"]["vector"][:, 0] + taps["b"]["vector"][:, 1]) > 0).astype("int32")
    return taps, labels


def test_each_candidate_trains_exactly_as_it_would_alone():
    taps, y = features()
    branches, x = feature_branches(taps), pack(taps)
    keras.utils.set_random_seed(1)
    models = [build_fusion_model(branches, name, num_outputs=2, units=8)
              for name in ("concat", "gmu", "lmf")]
    alone = []
    for model in models:  # the same initial weights, trained separately below
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        alone.append(copy)
    keras.utils.set_random_seed(5)  # the batches' order
    histories = train_jointly(models, x, y, lambda: keras.optimizers.Adam(1e-2),
                              "sparse_categorical_crossentropy", validation_data=(x, y),
                              epochs=3, batch_size=16, verbose=0)
    for model, copy, history in zip(models, alone, histories):
        copy.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                     metrics=["accuracy"])
        keras.utils.set_random_seed(5)
        expected = copy.fit(x, y, validation_data=(x, y), epochs=3, batch_size=16,
                            verbose=0).history
        for trained, reference in zip(model.get_weights(), copy.get_weights()):
            np.testing.assert_allclose(trained, reference, rtol=0, atol=1e-6)
        assert set(history.history) == set(expected)
        for key, values in expected.items():
            np.testing.assert_allclose(history.history[key], values, rtol=1e-6)
    assert not np.allclose(models[0].get_weights()[-1], alone[0].get_weights()[-1] * 0)


def test_candidates_sharing_weights_are_refused():
    inputs = keras.Input((3,), name="a")
    dense = keras.layers.Dense(2, activation="softmax")
    first, second = keras.Model(inputs, dense(inputs)), keras.Model(inputs, dense(inputs))
    with pytest.raises(ValueError, match="shares trainable weights"):
        train_jointly([first, second], {"a": np.zeros((4, 3))}, np.zeros(4),
                      keras.optimizers.Adam, "sparse_categorical_crossentropy")


def hypermodel_and_tuner(directory, candidates_per_step, trials=6):
    taps, y = features()
    hypermodel = FusionHyperModel(feature_branches(taps), 2, fusions=["concat", "gmu"],
                                  max_layers=2, units=(4, 8), learning_rates=(1e-2, 3e-3),
                                  fit_verbose=0)
    tuner = make_tuner("random", hypermodel, trials, str(directory), seed=7,
                       candidates_per_step=candidates_per_step)
    return tuner, pack(taps), y


@pytest.mark.slow
def test_a_tuner_training_four_trials_at_a_time_proposes_scores_and_checkpoints_each(tmp_path):
    tuner, x, y = hypermodel_and_tuner(tmp_path / "joint", candidates_per_step=4)
    validation_taps, validation_y = features(48, seed=1)
    validation = (pack(validation_taps), validation_y)
    tuner.search(x, y, epochs=6, batch_size=32, validation_data=validation)
    trials = [tuner.oracle.trials[i] for i in tuner.oracle.end_order]
    assert len(trials) == 6 and all(t.status == "COMPLETED" for t in trials)
    # The same trials as the oracle proposes one at a time.
    alone, _, _ = hypermodel_and_tuner(tmp_path / "alone", candidates_per_step=1)
    proposed = [alone.oracle.create_trial(f"t{i}").hyperparameters.values for i in range(6)]
    assert [t.hyperparameters.values for t in trials] == proposed
    # Learning rates mixed within each batch (one joint model per rate, one of a single model).
    rates = [t.hyperparameters["learning_rate"] for t in trials]
    assert len(set(rates[:4])) == 2 and len(set(rates[4:])) == 2
    for trial in trials:  # the checkpoint is the epoch of the reported score
        model = tuner.load_model(trial)
        accuracy = model.evaluate(*validation, verbose=0, return_dict=True)["accuracy"]
        assert accuracy == pytest.approx(trial.score, abs=1e-6)
        assert trial.metrics.get_best_value("val_accuracy") == pytest.approx(trial.score)
    assert any(t.best_step < 5 for t in trials)  # not only last epochs: the check can fail


def test_per_trial_callbacks_need_one_candidate_per_step(tmp_path):
    taps, y = features(16)
    hypermodel = FusionHyperModel(feature_branches(taps), 2, fusions=["concat"], max_layers=1)
    tuner = make_tuner("random", hypermodel, 2, str(tmp_path), candidates_per_step=2)
    with pytest.raises(ValueError, match="per-trial callbacks"):
        tuner.search(pack(taps), y, epochs=1, callbacks=[keras.callbacks.TerminateOnNaN()])


@pytest.mark.slow
@pytest.mark.parametrize("candidates_per_step", [1, 2])
def test_tf_data_inputs_give_the_scores_and_weights_of_arrays(tmp_path, candidates_per_step):
    import tensorflow as tf

    taps, y = features(64)
    x = pack(taps)
    validation_taps, validation_y = features(32, seed=1)
    validation = (pack(validation_taps), validation_y)
    runs = {}
    for kind in ("arrays", "dataset"):
        hypermodel = FusionHyperModel(feature_branches(taps), 2, fusions=["concat", "gmu"],
                                      max_layers=1, units=(4,), learning_rates=(1e-2, 3e-3),
                                      fit_verbose=0)
        tuner = make_tuner("random", hypermodel, 2, str(tmp_path / kind), seed=7,
                           candidates_per_step=candidates_per_step, measure_costs=True)
        keras.utils.set_random_seed(3)
        if kind == "arrays":
            tuner.search(x, y, epochs=2, batch_size=16, shuffle=False,
                         validation_data=validation)
        else:
            tuner.search(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=2,
                         validation_data=tf.data.Dataset.from_tensor_slices(validation).batch(16))
        trials = [tuner.oracle.trials[i] for i in tuner.oracle.end_order]
        assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
        assert all(t.metrics.get_last_value("latency_ms") > 0 for t in trials)
        runs[kind] = [(t.score, t.metrics.get_last_value("params"),
                       tuner.load_model(t).get_weights()) for t in trials]
    for (score, params, weights), (expected_score, expected_params, expected) in zip(
            runs["dataset"], runs["arrays"]):
        assert score == pytest.approx(expected_score, abs=1e-6) and params == expected_params
        for w, e in zip(weights, expected):
            np.testing.assert_allclose(w, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize("candidates_per_step", [1, 2])
def test_identical_runs_give_identical_scores_whatever_ran_before(tmp_path, candidates_per_step):
    """Trials are seeded from the oracle's seed and the trial id, not from the
    process's random state (which pretraining or a cache hit leaves different)."""
    scores = []
    for run, noise in enumerate((0, 12345)):
        keras.utils.set_random_seed(noise)  # what ran before differs
        tuner, x, y = hypermodel_and_tuner(tmp_path / f"run{run}", candidates_per_step, trials=2)
        validation_taps, validation_y = features(48, seed=1)
        tuner.search(x, y, epochs=2, batch_size=32,
                     validation_data=(pack(validation_taps), validation_y))
        scores.append([tuner.oracle.trials[i].score for i in tuner.oracle.end_order])
    assert len(scores[0]) == 2 and scores[0] == scores[1]


class CountingModel(keras.Model):
    """A functional model counting the Python calls of its training step (its traces)."""

    traces = 0

    def train_step(self, data):
        CountingModel.traces += 1
        return super().train_step(data)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the second trace is TensorFlow's (variables made in the first)")
@pytest.mark.parametrize("as_dataset", [False, True])
def test_built_before_fit_the_training_step_is_traced_once(as_dataset):
    # Without `build_before_fit`, Keras 3.15 on TensorFlow traces it twice.
    import tensorflow as tf

    taps, y = features()
    x = pack(taps)
    inputs = {name: keras.Input((a.shape[1],), name=name) for name, a in x.items()}
    hidden = keras.layers.Concatenate()(list(inputs.values()))
    model = CountingModel(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    data = (tf.data.Dataset.from_tensor_slices((x, y)).batch(16),) if as_dataset else (x, y)
    build_before_fit(model, *data, batch_size=16)
    CountingModel.traces = 0
    model.fit(*data, epochs=2, batch_size=None if as_dataset else 16, verbose=0)
    assert CountingModel.traces == 1
