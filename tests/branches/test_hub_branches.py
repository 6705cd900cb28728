"""keras-hub encoders as branches (`mmfusion.branches.hub`): tiny
random-weight BERT, ResNet, ViT and Whisper backbones built offline (no
preset is downloaded). Tap values are checked against the backbones' own
outputs and NumPy; padding, parameter counts after the cut, training in a
fusion model, `.keras` round trips and raw strings through the keras-hub
tokenizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

keras_hub = pytest.importorskip("keras_hub")

from mmfusion.branches import tabular_mlp, tap_shapes, with_raw_text  # noqa: E402
from mmfusion.branches import hub  # noqa: E402
from mmfusion.compose import build_fusion_model  # noqa: E402
from mmfusion.keras_internals import keras_mask  # noqa: E402

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
              "red", "blue", "shoe", "hat", "a", "big"]
TEXTS = ["a red shoe", "blue hat", "a big blue shoe", "red hat", "big red hat", "a blue shoe",
         "shoe", "a big hat"]
LABELS = np.array([0, 1, 0, 1, 1, 0, 0, 1])
LENGTH = 7


def bert(num_layers=3):
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(vocabulary_size=len(VOCABULARY), num_layers=num_layers,
                                         num_heads=2, hidden_dim=8, intermediate_dim=16,
                                         max_sequence_length=LENGTH)


def resnet():
    keras.utils.set_random_seed(0)
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64, 128],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
        image_shape=(16, 16, 3))


def whisper():
    keras.utils.set_random_seed(0)
    return keras_hub.models.WhisperBackbone(
        vocabulary_size=12, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        num_mels=6, max_encoder_sequence_length=10, max_decoder_sequence_length=5)


def preprocessor():
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=LENGTH)


def token_ids(texts=TEXTS):
    return keras.ops.convert_to_numpy(hub.hub_text_preprocessor(preprocessor())(tf.constant(texts)))


def numpy_out(branch, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in branch(x).items()}


def test_text_taps_equal_the_backbone_and_carry_the_padding():
    backbone = bert()
    branch = hub.hub_text_encoder(backbone, sequence_length=LENGTH)
    assert tap_shapes(branch) == {"layer_1": (None, LENGTH, 8), "layer_2": (None, LENGTH, 8),
                                  "layer_3": (None, LENGTH, 8), "vector": (None, 8)}
    assert branch.input.name == "text" and branch.input.dtype == "int32"
    assert all(keras_mask(branch.output[tap]) is not None for tap in ("layer_1", "layer_3"))
    ids = token_ids()
    assert ids[0].tolist() == [2, 9, 5, 7, 3, 0, 0]  # [CLS] a red shoe [SEP] [PAD] [PAD]
    real = ids != 0
    sequence = keras.ops.convert_to_numpy(backbone({
        "token_ids": ids, "padding_mask": real.astype("int32"),
        "segment_ids": np.zeros_like(ids)})["sequence_output"])
    out = numpy_out(branch, ids)
    np.testing.assert_allclose(out["layer_3"], sequence, rtol=1e-5, atol=1e-5)
    mean = (sequence * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    np.testing.assert_allclose(out["vector"], mean, rtol=1e-5, atol=1e-5)


def test_padding_is_ignored_by_every_layer():
    """A padded sequence gives the vector of the same tokens without padding
    (attention and pooling see the real tokens only)."""
    backbone = bert()
    padded = hub.hub_text_encoder(backbone, sequence_length=LENGTH)
    unpadded = hub.hub_text_encoder(backbone)  # any length
    ids = token_ids(["a red shoe"])
    assert ids[0, -2:].tolist() == [0, 0]
    vector = numpy_out(padded, ids)["vector"]
    np.testing.assert_allclose(vector, numpy_out(unpadded, ids[:, :5])["vector"],
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(vector, numpy_out(padded, np.where(ids == 0, 9, ids))["vector"],
                           atol=1e-3)  # the same positions as real tokens do change it
    peak = hub.hub_text_encoder(backbone, taps={"first": 1}, vector="max", sequence_length=LENGTH)
    first = numpy_out(unpadded, ids[:, :5])["layer_1"]
    np.testing.assert_allclose(numpy_out(peak, ids)["vector"], first.max(1), rtol=1e-5, atol=1e-5)


def test_text_cut_keeps_the_tapped_layers_only():
    backbone = bert()
    branch = hub.hub_text_encoder(backbone, taps={"embedding": 0, "layer_1": 1},
                                  sequence_length=LENGTH)
    assert list(tap_shapes(branch)) == ["embedding", "layer_1", "vector"]
    layer_params = backbone.get_layer("transformer_layer_0").count_params()
    pooled = backbone.get_layer("pooled_dense").count_params()
    assert branch.count_params() == backbone.count_params() - 2 * layer_params - pooled
    assert branch.count_params() < backbone.count_params()
    frozen = hub.hub_text_encoder(backbone, taps=[1], trainable=False)
    assert frozen.trainable_weights == [] and len(frozen.weights) > 0


def test_image_stages_and_cut_parameter_count():
    backbone = resnet()
    branch = hub.hub_image_encoder(backbone)
    assert tap_shapes(branch) == {"stage_1": (None, 4, 4, 64), "stage_2": (None, 2, 2, 64),
                                  "stage_3": (None, 1, 1, 128), "vector": (None, 128)}
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)(images)
    out = numpy_out(branch, images)
    for stage, level in (("stage_1", "P2"), ("stage_3", "P4")):
        np.testing.assert_allclose(out[stage], keras.ops.convert_to_numpy(pyramid[level]),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["vector"], out["stage_3"].mean((1, 2)), rtol=1e-5, atol=1e-6)
    early = hub.hub_image_encoder(backbone, taps=[1])
    assert list(tap_shapes(early)) == ["stage_1", "vector"]
    # 76,224 of 385,728 parameters: the stem and the first stage only.
    assert early.count_params() < backbone.count_params() / 2
    assert early.count_params() == sum(
        layer.count_params() for layer in backbone.layers
        if layer.name.startswith(("conv1", "stack0")))


def test_image_converter_as_preprocess_keeps_inference_mode(tmp_path):
    """A keras-hub `ImageConverter` (resizing + rescaling, what a preset
    ships) in front of the backbone: the branch equals the backbone on the
    converted images, BatchNormalization in inference mode."""
    backbone = resnet()
    converter = keras_hub.layers.ImageConverter(image_size=(16, 16), scale=1 / 255.0)
    branch = hub.hub_image_encoder(backbone, taps=[1], preprocess=converter,
                                   input_shape=(32, 32, 3))
    images = np.random.default_rng(3).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    stage_1 = keras.Model(backbone.input, backbone.pyramid_outputs["P2"])
    expected = keras.ops.convert_to_numpy(stage_1(converter(images)))
    out = numpy_out(branch, images)
    np.testing.assert_allclose(out["stage_1"], expected, rtol=1e-4, atol=1e-5)
    branch.save(tmp_path / "converted.keras")
    np.testing.assert_array_equal(
        numpy_out(keras.saving.load_model(tmp_path / "converted.keras"), images)["stage_1"],
        out["stage_1"])


def test_vit_is_tapped_by_layer_names():
    keras.utils.set_random_seed(0)
    vit = keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), patch_size=4, num_layers=2,
                                       num_heads=1, hidden_dim=4, mlp_dim=8)
    branch = hub.hub_image_encoder(vit, taps={"patches": "vit_patching_and_embedding"})
    assert tap_shapes(branch) == {"patches": (None, 5, 4), "vector": (None, 4)}
    assert branch.count_params() == vit.get_layer("vit_patching_and_embedding").count_params()
    full = hub.hub_image_encoder(vit)
    images = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(numpy_out(full, images)["vector"],
                               keras.ops.convert_to_numpy(vit(images)).mean(1),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no pyramid_outputs"):
        hub.hub_image_encoder(vit, taps=[1])


def test_whisper_encoder_without_the_decoder():
    backbone = whisper()
    branch = hub.hub_audio_encoder(backbone, taps={"layer_1": 1, "encoded": "encoder_layer_norm"})
    assert [t.name for t in branch.inputs] == ["audio"]
    assert tap_shapes(branch) == {"layer_1": (None, None, 8), "encoded": (None, None, 8),
                                  "vector": (None, 8)}
    frames = np.random.default_rng(0).normal(size=(2, 10, 6)).astype("float32")
    full = backbone({"encoder_features": frames, "decoder_token_ids": np.zeros((2, 5), "int32"),
                     "decoder_padding_mask": np.ones((2, 5), "int32")})
    encoded = keras.ops.convert_to_numpy(full["encoder_sequence_output"])
    out = numpy_out(branch, frames)
    np.testing.assert_allclose(out["encoded"], encoded, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["vector"], encoded.mean(1), rtol=1e-5, atol=1e-5)
    decoder = sum(layer.count_params() for layer in backbone.layers
                  if layer.name.startswith(("decoder", "transformer_decoder")))
    assert branch.count_params() == backbone.count_params() - decoder
    assert list(tap_shapes(hub.hub_audio_encoder(backbone))) == ["layer_1", "layer_2", "vector"]


def test_fusion_model_trains_and_reloads_on_raw_strings(tmp_path):
    keras.utils.set_random_seed(0)
    text = hub.hub_text_encoder(bert(2), taps=[1], sequence_length=LENGTH)
    tabular = tabular_mlp(3, units=(4,), name="tabular")
    model = build_fusion_model({"text": text, "tabular": tabular}, "concat", num_outputs=2,
                               units=8, taps={"text": "layer_1", "tabular": "vector"},
                               tap_pooling="avg")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    feeds = {"text": token_ids(), "tabular": np.random.default_rng(0).normal(size=(8, 3))}
    history = model.fit(feeds, LABELS, epochs=4, batch_size=8, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    raw = with_raw_text(model, {"text": hub.hub_text_preprocessor(preprocessor())})
    raw_feeds = {"text": tf.constant(TEXTS), "tabular": tf.constant(feeds["tabular"], "float32")}
    predicted = keras.ops.convert_to_numpy(raw(raw_feeds))
    np.testing.assert_allclose(predicted, keras.ops.convert_to_numpy(model(feeds)),
                               rtol=1e-6, atol=1e-6)
    raw.save(tmp_path / "raw.keras")
    reloaded = keras.saving.load_model(tmp_path / "raw.keras")
    assert reloaded.input["text"].dtype == "string"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(raw_feeds)), predicted)


def test_image_branch_reloads_identically(tmp_path):
    branch = hub.hub_image_encoder(resnet(), taps=[1, 2])
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    branch.save(tmp_path / "image.keras")
    reloaded = keras.saving.load_model(tmp_path / "image.keras")
    for tap, value in numpy_out(branch, images).items():
        np.testing.assert_array_equal(numpy_out(reloaded, images)[tap], value)


def test_preset_route_without_download(monkeypatch):
    """A preset name goes to keras-hub's `from_preset` (replaced here by a
    tiny backbone so nothing is downloaded)."""
    asked = []
    tiny = bert(1)

    def from_preset(preset, **kwargs):
        asked.append(preset)
        return tiny

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", from_preset)
    branch = hub.hub_text_encoder(preset="bert_tiny_en_uncased", sequence_length=LENGTH)
    assert asked == ["bert_tiny_en_uncased"] and list(tap_shapes(branch)) == ["layer_1", "vector"]
    monkeypatch.setattr(keras_hub.models.TextClassifierPreprocessor, "from_preset",
                        lambda preset, **kwargs: asked.append((preset, kwargs)) or preprocessor())
    layer = hub.hub_text_preprocessor(preset="bert_tiny_en_uncased", sequence_length=LENGTH)
    assert asked[-1] == ("bert_tiny_en_uncased", {"sequence_length": LENGTH})
    assert keras.ops.convert_to_numpy(layer(tf.constant(["red hat"]))).tolist() == [
        [2, 5, 8, 3, 0, 0, 0]]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="either a keras-hub backbone or a preset"):
        hub.hub_text_encoder()
    with pytest.raises(ValueError, match="either a keras-hub backbone or a preset"):
        hub.hub_image_encoder(resnet(), preset="resnet_18_imagenet")
    with pytest.raises(ValueError, match=r"tap 'layer_4' is index 4; the valid indices are 0 to"):
        hub.hub_text_encoder(bert(), taps=[4])
    with pytest.raises(ValueError, match=r"has inputs \['images'\]; expected token_ids"):
        hub.hub_text_encoder(keras_hub.models.ViTBackbone(
            image_shape=(8, 8, 3), patch_size=4, num_layers=1, num_heads=1, hidden_dim=4,
            mlp_dim=8))
    with pytest.raises(ValueError, match="no 'encoder_features' input"):
        hub.hub_audio_encoder(bert())
    with pytest.raises(ValueError, match="tap 'stage_0' is index 0; the valid indices are 1 to 3"):
        hub.hub_image_encoder(resnet(), taps=[0])
    with pytest.raises(ValueError, match="either a keras-hub preprocessor or a preset"):
        hub.hub_text_preprocessor()
