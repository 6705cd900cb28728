import json
import os

import keras
import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.cli import search_parser
from mmfusion.compose import build_fusion_model
from mmfusion.search import FusionSpace
from mmfusion.search.features import feature_branches, pack
from mmfusion.search.oneshot import (ArchitectureOracle, FusionSupernet, candidate_ops,
                                     search_oneshot)
from mmfusion.search.run import SettingsMismatchError, Task, make_oracle, run_search
from mmfusion.search.state import CorruptStateError

SPACE = FusionSpace({"a": ["h1", "vector"], "b": ["h1", "vector"]},
                    fusions=["concat", "gmu", "lmf"], activations=["relu", "tanh"], max_layers=2)


def _features(n=600, seed=0):
    """Random taps; the label is the sign of the sum of `a.vector`'s units
    (no other tap carries it; it is not the first tap, which the argmax of
    untrained, uniform weights would give)."""
    rng = np.random.default_rng(seed)
    features = {"a": {"h1": rng.normal(size=(n, 5)), "vector": rng.normal(size=(n, 3))},
                "b": {"h1": rng.normal(size=(n, 4)), "vector": rng.normal(size=(n, 3))}}
    features = {m: {t: v.astype("float32") for t, v in taps.items()}
                for m, taps in features.items()}
    labels = (features["a"]["vector"].sum(axis=1) > 0).astype("int32")
    return features, labels


def _sizes(features):
    return {m: {t: v.shape[1] for t, v in taps.items()} for m, taps in features.items()}


def _copy_into(supernet, architecture, model):
    """Copies the supernet's candidate layers of `architecture` and its head
    of that depth into the discrete model `build_fusion_model` built."""
    for l, layer in enumerate(architecture, start=1):
        combo = tuple(supernet.space.taps[m].index(t) for m, t in zip(supernet.space.modalities,
                                                                        layer))
        option = (combo, supernet.space.layer_fusions(l).index(layer[-2]))
        candidate = supernet.candidates[l - 1][supernet.options[l - 1].index(option)]
        model.get_layer(f"fusion_{l}_{layer[-2]}").set_weights(candidate.get_weights())
    head = supernet.heads[len(architecture) - 1]
    for i, dense in enumerate(head[:-1], start=1):
        model.get_layer(f"head_dense_{i}").set_weights(dense.get_weights())
    model.get_layer("head_logits").set_weights(head[-1].get_weights())


@pytest.mark.parametrize("architecture", [
    [["h1", "vector", "gmu", "tanh"]],
    [["vector", "h1", "lmf", "relu"], ["h1", "h1", "concat", "tanh"]],
    [["h1", "vector", "concat", "relu"], ["vector", "vector", "gmu", "relu"]],
])
def test_one_hot_supernet_is_the_discrete_architecture(architecture):
    keras.utils.set_random_seed(0)
    features, _ = _features(n=32)
    supernet = FusionSupernet(SPACE, _sizes(features), 3, units=8, head_units=(6,))
    x = pack(features)
    mixed = keras.ops.convert_to_numpy(supernet(x))
    supernet.select(architecture)
    assert supernet.architecture() == architecture
    chosen = keras.ops.convert_to_numpy(supernet(x))
    model = build_fusion_model(feature_branches(features), SPACE.points(architecture),
                               num_outputs=3, units=8, head_units=(6,))
    _copy_into(supernet, architecture, model)
    np.testing.assert_allclose(chosen, model.predict(x, verbose=0), atol=1e-6, rtol=0)
    assert np.abs(mixed - chosen).max() > 1e-3  # the mixture is another network


def test_candidate_ops_counts_every_tap_combination_and_fusion():
    # 4 tap combinations x 3 fusions at layer 1; layer 2 fuses 3 inputs
    # (lmf, gmu and concat take any number).
    assert candidate_ops(SPACE) == 4 * 3 + 4 * len(SPACE.layer_fusions(2))
    features, _ = _features(n=8)
    supernet = FusionSupernet(SPACE, _sizes(features), 2, units=4)
    assert sum(len(c) for c in supernet.candidates) == candidate_ops(SPACE)


def test_supernet_picks_the_only_informative_tap(tmp_path):
    features, labels = _features()
    space = FusionSpace(SPACE.taps, fusions=["concat", "gmu"], max_layers=1)
    record = search_oneshot(space, features, labels, 2, str(tmp_path), epochs=8, units=16,
                            head_units=(16,), batch_size=32, seed=0)
    assert record["architecture"][0][0] == "vector", record["probabilities"]
    assert record["probabilities"]["layer_1"]["tap/a"]["vector"] > 0.7
    assert record["candidate_epochs"] == 8 * 8


def _task(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=(n, 3)).astype("float32"),
         "b": rng.normal(size=(n, 2)).astype("float32")}
    y = (x["a"][:, 0] > 0).astype("int32")
    return Task({"a": tabular_mlp(3, units=(8, 4), name="a"),
                 "b": tabular_mlp(2, units=(8, 4), name="b")},
                {"train": (x, y), "validation": (x, y), "test": (x, y)}, num_classes=2)


@pytest.mark.slow
def test_run_search_oneshot_exports_resumes_and_checks_settings(tmp_path, capsys):
    directory = str(tmp_path)
    common = dict(oracle="oneshot", directory=directory, epochs=2, fusions=["concat", "gmu"],
                  max_layers=1, pretrain_epochs=1, supernet_epochs=2, verbose=1)
    result = run_search(_task(), **common)
    out = capsys.readouterr().out
    assert "supernet: done in" in out and out.count("trial 1/1") == 1
    supernet = result["supernet"]
    space = FusionSpace({"a": ["dense_1", "vector"], "b": ["dense_1", "vector"]},
                        fusions=["concat", "gmu"], max_layers=1)
    assert supernet["candidate_epochs"] == 2 * candidate_ops(space)
    assert space.architecture(result["values"]) == supernet["architecture"]
    assert result["architecture"] == space.describe(supernet["architecture"])
    model = keras.models.load_model(result["model_path"])
    x, _ = _task().splits["test"]
    exported = keras.models.load_model(os.path.join(directory, "best_oneshot.keras"))
    np.testing.assert_allclose(model.predict(x, verbose=0), exported.predict(x, verbose=0),
                               atol=1e-6)
    # The same command reuses the supernet and the finished retraining.
    again = run_search(_task(), **common)
    out = capsys.readouterr().out
    assert "supernet: finished one read from" in out and "trial " not in out
    assert again["supernet"] == supernet
    # Other supernet settings: the SettingsMismatchError path.
    with pytest.raises(SettingsMismatchError, match="supernet_epochs=3 \\(it has 2\\)"):
        run_search(_task(), **{**common, "supernet_epochs": 3})


def test_damaged_supernet_record_is_reported(tmp_path):
    features, labels = _features(n=40)
    space = FusionSpace(SPACE.taps, fusions=["concat"], max_layers=1)
    record = search_oneshot(space, features, labels, 2, str(tmp_path), epochs=1, units=4)
    path = tmp_path / "supernet.json"
    assert json.loads(path.read_text())["key"] == record["key"]
    assert (tmp_path / "supernet.weights.h5").exists()
    assert search_oneshot(space, features, labels, 2, str(tmp_path), epochs=1,
                          units=4) == record  # reused, not trained again
    path.write_text('{"architecture": [[')  # as a non-atomic writer killed mid-write
    with pytest.raises(CorruptStateError, match="supernet.json"):
        search_oneshot(space, features, labels, 2, str(tmp_path), epochs=1, units=4)


def test_architecture_oracle_state_round_trips(tmp_path):
    oracle = make_oracle("oneshot", SPACE, 1, architectures=[[["h1", "h1", "gmu", "relu"]]])
    assert isinstance(oracle, ArchitectureOracle)
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.save()
    other = ArchitectureOracle(SPACE, [[["vector", "h1", "concat", "relu"]]])
    other._set_project_dir(str(tmp_path), "p")
    other.reload()
    assert other.architectures == [[["h1", "h1", "gmu", "relu"]]]
    with pytest.raises(ValueError, match="train one first"):
        make_oracle("oneshot", SPACE, 1)


def test_search_command_takes_the_oneshot_oracle():
    options = search_parser("synthetic").parse_args(["--oracle", "oneshot",
                                                     "--supernet-epochs", "3"])
    assert (options.oracle, options.supernet_epochs) == ("oneshot", 3)
