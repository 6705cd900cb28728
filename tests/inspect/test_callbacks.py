import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

from mmfusion.inspect import FusionInspector
from mmfusion.inspect.callbacks import attention_images
from mmfusion.inspect.report import read_events
from tests.inspect.conftest import EPOCHS



def histograms(run_dir):
    """dict tag -> list of `(k, 3)` arrays (left edge, right edge, count) per step."""
    acc = plugin_event_accumulator.EventAccumulator(
        run_dir, size_guidance={plugin_event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = acc.PluginTagToContent("histograms")
    return {t: [tensor_util.make_ndarray(e.tensor_proto) for e in acc.Tensors(t)] for t in tags}


def test_gmu_run_has_gate_scalars_histograms_and_ablation(runs):
    scalars, images = read_events(runs["gmu"])
    fusion = scalars["fusion"]
    assert set(fusion) == {
        "gmu/gates_mean/visual", "gmu/gates_mean/textual", "ablation/accuracy/all",
        "ablation/accuracy/without_visual", "ablation/accuracy/without_textual",
        "ablation/accuracy/only_visual", "ablation/accuracy/only_textual",
        "missing_rate/accuracy/rate_0", "missing_rate/accuracy/rate_0.25",
        "missing_rate/accuracy/rate_0.5", "missing_rate/accuracy/rate_0.75"}
    assert fusion["gmu/gates_mean/visual"][0] == list(range(EPOCHS))
    for modality in ("visual", "textual"):
        means = np.array(fusion[f"gmu/gates_mean/{modality}"][1])
        assert np.all((means >= 0) & (means <= 1))
    # Bimodal GMU: the gates are z and 1 - z.
    total = np.add(fusion["gmu/gates_mean/visual"][1], fusion["gmu/gates_mean/textual"][1])
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    # Only visual carries the label: the network learns to open its gate.
    assert fusion["gmu/gates_mean/visual"][1][-1] > 0.55
    assert "train" in scalars and "validation" in scalars and not images

    hist = histograms(os.path.join(runs["gmu"], "fusion"))
    assert set(hist) == {"gmu/gates/visual", "gmu/gates/textual"}
    for buckets in hist["gmu/gates/visual"]:
        assert buckets[:, 0].min() >= 0 and buckets[:, 1].max() <= 1
        assert buckets[:, 2].sum() == 256 * 8  # default probe_size x units


@pytest.mark.parametrize("run", ["gmu", "sum_attention"])
def test_ablating_the_informative_modality_drops_accuracy_to_chance(runs, run):
    fusion = read_events(runs[run])[0]["fusion"]
    final = {tag.rsplit("/", 1)[1]: values[-1] for tag, (_, values) in fusion.items()
             if tag.startswith("ablation/accuracy/")}
    assert final["all"] > 0.95
    assert abs(final["without_visual"] - 0.5) < 0.12
    assert final["without_textual"] > final["all"] - 0.05
    # Two modalities: "only M" is "without the other one".
    assert final["only_textual"] == final["without_visual"]
    assert final["only_visual"] == final["without_textual"]


def test_weighted_sum_weights_sum_to_one_and_attention_maps_are_images(runs):
    scalars, images = read_events(runs["sum_attention"])
    fusion = scalars["fusion"]
    steps, visual = fusion["weighted_sum/modality_weights/visual"]
    _, textual = fusion["weighted_sum/modality_weights/textual"]
    assert steps == [0, 2]  # freq=2 over 4 epochs
    np.testing.assert_allclose(np.add(visual, textual), 1.0, atol=1e-5)
    assert visual[-1] > textual[-1]
    assert set(images["fusion"]) == {"co_attention/affinity", "co_attention/attention_visual",
                                     "co_attention/attention_textual"}
    pngs = images["fusion"]["co_attention/affinity"]
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG") for p in pngs)


def test_attention_images_are_labelled_figures_marking_absent_rows():
    from mmfusion.inspect.plots import attention_figure

    maps = np.zeros((2, 3, 2, 4))
    maps[:, 0] = [[0, 1, 2, 3], [4, 5, 6, 7]]
    fig = attention_figure(maps[0], query_labels=["what", "shape"], key_labels=list("abcd"),
                           title="co_attention/affinity", absent=["image"])
    *panels, bar = fig.axes
    assert len(panels) == 3 and bar.get_ylabel() == "weight"
    assert [(ax.get_xlabel(), ax.get_title()) for ax in panels] == [
        ("key", "head 0"), ("key", "head 1"), ("key", "head 2")]
    assert panels[0].get_ylabel() == "query"
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["what", "shape"]
    assert [t.get_text() for t in panels[1].get_xticklabels()] == list("abcd")
    assert bar.get_ylim() == (0.0, 7.0)  # one colour scale for every head
    assert fig.get_suptitle() == "co_attention/affinity  [absent: image]"
    images = attention_images(maps, max_images=2, title="t", modality_names=["text", "image"],
                              presence=np.array([[1, 1], [1, 0]]))
    assert images.shape[:1] == (2,) and images.shape[-1] == 4 and images.dtype == np.uint8
    assert not np.array_equal(images[0], images[1])  # the second one's title names 'image'


def test_inspector_is_not_a_tensorboard_subclass_and_checks_freq():
    assert not issubclass(FusionInspector, keras.callbacks.TensorBoard)
    with pytest.raises(ValueError, match="freq"):
        FusionInspector("logs", (np.zeros((2, 1)), np.zeros(2)), freq=0)


def test_probe_batch_comes_from_arrays_or_the_first_dataset_batch():
    import tensorflow as tf

    from mmfusion.inspect.callbacks import _probe_batch

    x = {"a": np.arange(10.0)[:, None]}
    y = np.arange(10)
    np.testing.assert_array_equal(_probe_batch((x, y, np.ones(10)), 4)[1], [0, 1, 2, 3])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    probe_x, probe_y = _probe_batch(dataset, 4)
    np.testing.assert_array_equal(probe_x["a"][:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(probe_y, [0, 1, 2, 3])


def test_gate_statistics_are_over_present_rows(tmp_path):
    """A GMU whose image is absent in half the rows: the logged gate mean and
    histogram of the image are those of its present rows only (its absent
    rows' zero gates would halve the mean)."""
    from mmfusion.branches import image_cnn, tabular_mlp
    from mmfusion.compose import build_fusion_model
    from mmfusion.inspect import FusionProbe, fusion_weights

    rng = np.random.default_rng(0)
    n = 32
    presence = np.ones((n, 2), "float32")
    presence[1::2, 1] = 0.0
    x = {"tab": rng.normal(size=(n, 3)).astype("float32"),
         "img": rng.random((n, 4, 4, 1)).astype("float32"), "presence": presence}
    y = np.arange(n) % 3
    keras.utils.set_random_seed(0)
    model = build_fusion_model({"tab": tabular_mlp(3, units=(4,), name="tab"),
                                "img": image_cnn((4, 4, 1), filters=(2,), name="img")},
                               "gmu", num_outputs=3, units=8, presence=True)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    log_dir = str(tmp_path)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0,
              callbacks=[FusionInspector(log_dir, (x, y), ablation=False)])
    gates = fusion_weights(model, "fusion_1_gmu", x)["gates"]  # (n, 2, units)
    np.testing.assert_array_equal(FusionProbe(model).presence(x)["fusion_1_gmu"], presence)
    assert np.all(gates[presence[:, 1] == 0, 1] == 0)  # absent rows: zero gates
    scalars, _ = read_events(log_dir)
    logged = scalars["fusion"]["fusion_1_gmu/gates_mean/img"][1][-1]
    np.testing.assert_allclose(logged, gates[presence[:, 1] == 1, 1].mean(), rtol=1e-5)
    assert abs(logged - gates[:, 1].mean()) > 0.05
    np.testing.assert_allclose(scalars["fusion"]["fusion_1_gmu/gates_mean/tab"][1][-1],
                               gates[:, 0].mean(), rtol=1e-5)  # tab is present everywhere
    (counts,) = histograms(os.path.join(log_dir, "fusion"))["fusion_1_gmu/gates/img"]
    assert counts[:, 2].sum() == (presence[:, 1] == 1).sum() * gates.shape[2]


def test_the_fusion_run_holds_a_custom_scalars_layout_matching_its_tags(runs):
    """TensorBoard's Custom Scalars dashboard overlays the curves whose tags
    match a chart's regex: the layout must select every logged ablation tag
    (in one chart), every missing-rate tag (in another) and every gate mean;
    the run has no modality weights, so it has no chart for them."""
    import re

    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    run_dir = os.path.join(runs["gmu"], "fusion")
    layouts = []
    for name in os.listdir(run_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
            for value in event.summary.value:
                if value.tag == metadata.CONFIG_SUMMARY_TAG:
                    layouts.append(layout_pb2.Layout.FromString(
                        tf.make_ndarray(value.tensor).item()))
    (layout,) = layouts
    charts = {c.title: c.multiline.tag[0] for c in layout.category[0].chart}
    tags = set(read_events(runs["gmu"])[0]["fusion"])
    # TensorBoard selects the tags a regex matches from their start (re.match).
    selected = {title: {t for t in tags if re.match(regex, t)} for title, regex in charts.items()}
    assert all(selected.values())  # no empty chart: only the kinds of scalars the run has
    ablation = {t for t in tags if t.startswith("ablation/")}
    assert len(ablation) == 5 and ablation in selected.values()
    missing = {t for t in tags if t.startswith("missing_rate/")}
    assert len(missing) == 4 and missing in selected.values()
    assert {"gmu/gates_mean/visual", "gmu/gates_mean/textual"} in selected.values()
    assert len(charts) == 3 and "modality weights" not in charts


RATES = (0.0, 0.25, 0.5, 0.75)
ORDER = ("c", "a", "b")  # branch order: the presence columns are not sorted


class MissingRatesByHand(keras.callbacks.Callback):
    """At every epoch end, the accuracy at each missing rate computed by hand:
    `sample_presence` masks from one generator seeded with `seed`, absent
    rows' inputs multiplied by 0, the mask in the model's presence form."""

    def __init__(self, x, y, form, seed):
        super().__init__()
        self.x, self.y, self.form, self.seed = x, y, form, seed
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        from mmfusion.robustness import sample_presence

        base = self.x.get("presence", np.ones((len(self.y), len(ORDER)), "float32"))
        if isinstance(base, dict):
            base = np.stack([base[m] for m in ORDER], axis=1)
        rng = np.random.default_rng(self.seed)
        row = []
        for rate in RATES:
            mask = sample_presence(rate, len(self.y), len(ORDER), rng, base)
            feed = {m: self.x[m] * mask[:, i:i + 1] for i, m in enumerate(ORDER)}
            if self.form == "matrix":
                feed["presence"] = mask
            elif self.form == "dict":
                feed["presence"] = {m: mask[:, i] for i, m in enumerate(ORDER)}
            predictions = self.model.predict(feed, batch_size=len(self.y), verbose=0)
            row.append(float(np.mean(predictions.argmax(-1) == self.y)))
        self.history.append(row)


def noisy_copies(n, seed):
    """Three modalities, each the 3-class label plus noise: every one helps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = {m: (y[:, None] + rng.normal(scale=0.8, size=(n, d))).astype("float32")
         for m, d in zip(ORDER, (3, 2, 4))}
    return x, y


@pytest.mark.parametrize("form", ["matrix", "dict", None])
def test_missing_rate_scalars_match_masking_by_hand(tmp_path, form):
    """The logged `missing_rate/accuracy/rate_R` of every epoch equals the
    accuracy of the model's predictions on the probe rows masked by hand with
    the same seed (presence matrix in branch order, with rows already absent
    in the data; presence dict; no presence input: zeroed inputs only)."""
    from mmfusion.branches import tabular_mlp
    from mmfusion.compose import build_fusion_model

    x, y = noisy_copies(400, seed=0)
    x_val, y_val = noisy_copies(150, seed=1)
    if form == "matrix":
        for data in (x, x_val):
            data["presence"] = np.ones((len(data["a"]), 3), "float32")
            data["presence"][::4, 1] = 0.0  # modality "a" missing from the data in a quarter
    elif form == "dict":
        for data in (x, x_val):
            data["presence"] = {m: np.ones(len(data["a"]), "float32") for m in ORDER}
    keras.utils.set_random_seed(0)
    model = build_fusion_model({m: tabular_mlp(x[m].shape[1], units=(8,), name=m) for m in ORDER},
                               "gmu", num_outputs=3, units=8, presence=form or False)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    by_hand = MissingRatesByHand(x_val, y_val, form, seed=3)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[
        by_hand, FusionInspector(str(tmp_path), (x_val, y_val), missing_rates=RATES, seed=3)])
    fusion = read_events(str(tmp_path))[0]["fusion"]
    logged = []
    for rate in RATES:
        steps, values = fusion[f"missing_rate/accuracy/rate_{rate:g}"]
        assert steps == [0, 1, 2]
        logged.append(values)
    np.testing.assert_allclose(np.transpose(logged), by_hand.history, atol=1e-6)
    np.testing.assert_allclose(fusion["ablation/accuracy/all"][1], np.array(logged)[0], atol=1e-6)
    final = np.array(logged)[:, -1]
    assert final[0] > 0.8 and final[0] - final[-1] > 0.1  # modalities missing: accuracy drops


def test_missing_rates_can_be_turned_off_and_text_needs_a_presence_input(tmp_path):
    x, y = noisy_copies(40, seed=0)
    x = {"c": x["c"], "a": x["a"]}
    inputs = {m: keras.Input(x[m].shape[1:], name=m) for m in x}
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.Concatenate()(list(inputs.values()))))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[FusionInspector(str(tmp_path), (x, y), missing_rates=None)])
    assert not [t for t in read_events(str(tmp_path))[0]["fusion"] if t.startswith("missing")]
    with pytest.raises(ValueError, match="missing_rates must be 'auto', None or a list"):
        inspector = FusionInspector(str(tmp_path), (x, y), missing_rates="all")
        inspector.set_model(model)
        inspector.on_train_begin()
    # Strings cannot be zeroed: without a presence input a text modality has no
    # "absent". Rates asked for explicitly raise; "auto" warns and logs none.
    text = keras.Input((1,), dtype="string", name="text")
    with_text = keras.Model({"c": inputs["c"], "text": text}, keras.layers.Dense(3)(inputs["c"]))
    probe = ({"c": x["c"], "text": np.array([["w"]] * 40)}, y)
    inspector = FusionInspector(str(tmp_path), probe, missing_rates=(0.0, 0.5))
    inspector.set_model(with_text)
    with pytest.raises(ValueError, match=r"model '.*' has no 'presence' input and its inputs "
                                         r"\['text'\] are not numeric"):
        inspector.on_train_begin()
    inspector = FusionInspector(str(tmp_path), probe)
    inspector.set_model(with_text)
    with pytest.warns(UserWarning, match="no missing-rate scalars for model"):
        inspector.on_train_begin()
    assert inspector._missing_feeds == {}
