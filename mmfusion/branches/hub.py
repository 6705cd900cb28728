"""keras-hub encoders as branches: a BERT-family text encoder, an image
backbone (ResNet, EfficientNet, ... or ViT) and Whisper's audio encoder.

Each function takes a keras-hub backbone object or a preset name and returns
a branch (`from_model` over the backbone's functional graph) whose taps are
the encoder's layers, cut after the deepest tap. keras-hub is an optional
dependency (`pip install "mmfusion[hub]"`); a preset name downloads the
weights when called (from Kaggle or Hugging Face, under the model's own
licence), so the examples here build tiny random-weight backbones instead.
"""

import keras
from keras import ops

from mmfusion.branches.adapters import from_model
from mmfusion.keras_internals import producer

__all__ = ["HubTokenIds", "TransformerFeeds", "hub_audio_encoder", "hub_image_encoder",
           "hub_text_encoder", "hub_text_preprocessor"]

TEXT_INPUTS = ("token_ids", "padding_mask", "segment_ids")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError("mmfusion.branches.hub needs keras-hub: "
                          "pip install \"mmfusion[hub]\" (or keras-hub).") from error
    return keras_hub


def _backbone(what, backbone, preset):
    """`backbone`, or the backbone of `preset` (downloaded by keras-hub)."""
    if (backbone is None) == (preset is None):
        raise ValueError(f"{what}: give either a keras-hub backbone or a preset name "
                         f"(received backbone={backbone!r}, preset={preset!r}).")
    if backbone is None:
        backbone = _keras_hub().models.Backbone.from_preset(preset)
    return backbone


def _numbered_taps(what, taps, prefix, layers):
    """Tap dict with integer entries resolved to layer names.

    `layers` maps each valid index to a layer name (0: the embeddings, if
    any). `taps` is a dict tap name -> index or layer name, or a list of
    those (an index `i` is named `{prefix}_{i}`); None: every index but 0."""
    if taps is None:
        taps = [i for i in layers if i]
    if isinstance(taps, (list, tuple)):
        taps = {f"{prefix}_{tap}" if isinstance(tap, int) else tap: tap for tap in taps}
    resolved = {}
    for tap, layer in taps.items():
        if isinstance(layer, int):
            if layer not in layers:
                raise ValueError(f"{what}: tap '{tap}' is index {layer}; the valid indices are "
                                 f"{min(layers)} to {max(layers)}.")
            layer = layers[layer]
        resolved[tap] = layer
    return resolved


def _encoder_layers(embeddings, layer_prefix, count):
    """Index -> layer name of an encoder: 0 the embeddings, i the i-th layer."""
    return {0: embeddings, **{i: f"{layer_prefix}{i - 1}" for i in range(1, count + 1)}}


@keras.saving.register_keras_serializable(package="mmfusion")
class TransformerFeeds(keras.layers.Layer):
    """Token ids -> the inputs of a keras-hub BERT-family backbone.

    Args:
        padding_id: the token id of padding (BERT's `[PAD]`: 0).
        segment_ids: also return `segment_ids` (all zeros: one segment), for
            backbones that take them (BERT; not RoBERTa or DistilBERT).
        **kwargs: standard layer arguments (`name`, ...).

    Call arguments:
        inputs: int token ids `(batch, T)`.

    Returns:
        A dict: `token_ids` (the inputs), `padding_mask` (`(batch, T)` int32,
        1 where the id is not `padding_id`) and, with `segment_ids=True`,
        `segment_ids` (int32 zeros).

    Example:

    >>> import numpy as np
    >>> feeds = TransformerFeeds()(np.array([[2, 7, 3, 0]]))
    >>> {k: keras.ops.convert_to_numpy(v).tolist() for k, v in feeds.items()}
    {'token_ids': [[2, 7, 3, 0]], 'padding_mask': [[1, 1, 1, 0]], 'segment_ids': [[0, 0, 0, 0]]}
    """

    def __init__(self, padding_id=0, segment_ids=True, **kwargs):
        super().__init__(**kwargs)
        self.padding_id = int(padding_id)
        self.segment_ids = bool(segment_ids)

    def call(self, inputs):
        if len(inputs.shape) != 2:
            raise ValueError(f"TransformerFeeds '{self.name}': expected token ids (batch, T); "
                             f"received shape {tuple(inputs.shape)}.")
        ids = ops.cast(inputs, "int32")
        feeds = {"token_ids": ids,
                 "padding_mask": ops.cast(ops.not_equal(ids, self.padding_id), "int32")}
        if self.segment_ids:
            feeds["segment_ids"] = ops.zeros_like(ids)
        return feeds

    def compute_output_spec(self, inputs):
        names = TEXT_INPUTS if self.segment_ids else TEXT_INPUTS[:2]
        return {name: keras.KerasTensor(inputs.shape, dtype="int32") for name in names}

    def get_config(self):
        config = super().get_config()
        config.update(padding_id=self.padding_id, segment_ids=self.segment_ids)
        return config


def hub_text_encoder(backbone=None, preset=None, taps=None, vector="avg", sequence_length=None,
                     padding_id=0, trainable=True, name="text"):
    """A keras-hub BERT-family encoder as a text branch over token ids.

    The branch takes int token ids `(batch, sequence_length)`, what
    `hub_text_preprocessor` (or the backbone's own keras-hub preprocessor)
    makes from strings, with `padding_id` as padding; it derives the
    backbone's `padding_mask` (and `segment_ids`, one segment) from them.
    Every sequence tap carries the padding as its Keras mask, so
    `build_fusion_model`'s sequence fusion layers and pooling ignore padded
    positions, and `vector` pools over the real tokens only.

    Taps: `layer_i` (i = 1..num_layers) is the output of transformer layer i
    (keras-hub's `transformer_layer_{i-1}`), `(batch, T, hidden_dim)`;
    index 0 is the embeddings. The branch is cut after the deepest tap.

    Args:
        backbone: a keras-hub backbone with inputs `token_ids`,
            `padding_mask` (and `segment_ids`) and layers named
            `transformer_layer_{i}` (BERT, RoBERTa, DistilBERT, ELECTRA, ...).
        preset: instead of `backbone`, a keras-hub preset name, e.g.
            `"bert_tiny_en_uncased"` (`keras_hub.models.Backbone.from_preset`:
            downloads the weights).
        taps: dict tap name -> layer index (0..num_layers) or layer name, or
            a list of indices / layer names. None: every transformer layer.
        vector: `"avg"` (mean over real tokens), `"max"` (maximum over real
            tokens) or a Keras layer applied to the deepest tap (it receives
            the padding as its Keras mask).
        sequence_length: length of the id sequences (None: any length).
        padding_id: the token id of padding (the tokenizer's `pad_token_id`).
        trainable: False freezes the encoder.
        name: name of the input (the modality); the model is `{name}_branch`.

    Returns:
        A functional `keras.Model` from token ids to the dict of taps.

    Example:

    >>> import keras_hub, numpy as np
    >>> bert = keras_hub.models.BertBackbone(vocabulary_size=10, num_layers=2, num_heads=1,
    ...                                      hidden_dim=4, intermediate_dim=8,
    ...                                      max_sequence_length=5)
    >>> branch = hub_text_encoder(bert, taps=[1, 2], sequence_length=5)
    >>> {k: tuple(v.shape) for k, v in branch(np.array([[2, 7, 3, 0, 0]])).items()}
    {'layer_1': (1, 5, 4), 'layer_2': (1, 5, 4), 'vector': (1, 4)}
    >>> branch = hub_text_encoder(preset="bert_tiny_en_uncased")  # doctest: +SKIP
    """
    what = "hub_text_encoder"
    backbone = _backbone(what, backbone, preset)
    names = sorted(t.name for t in backbone.inputs)
    if not {"token_ids", "padding_mask"} <= set(names) <= set(TEXT_INPUTS):
        raise ValueError(f"{what}: backbone '{backbone.name}' has inputs {names}; expected "
                         f"token_ids, padding_mask and optionally segment_ids (a BERT-family "
                         "encoder).")
    count = getattr(backbone, "num_layers", None)
    if count is None:
        raise ValueError(f"{what}: backbone '{backbone.name}' has no `num_layers`; "
                         "expected a keras-hub BERT-family backbone.")
    taps = _numbered_taps(what, taps, "layer",
                          _encoder_layers("embeddings_dropout", "transformer_layer_", count))
    feeds = TransformerFeeds(padding_id, segment_ids="segment_ids" in names, name=f"{name}_feeds")
    return from_model(backbone, taps=taps, vector=vector, preprocess=feeds,
                      input_shape=(sequence_length,), input_dtype="int32", padding="padding_mask",
                      trainable=trainable, name=name)


@keras.saving.register_keras_serializable(package="mmfusion")
class HubTokenIds(keras.layers.Layer):
    """Strings -> token ids, by a keras-hub text preprocessor (tokenizer,
    `[CLS]`/`[SEP]` and padding to its `sequence_length`).

    The keras-hub preprocessor returns a dict (`token_ids`, `padding_mask`,
    `segment_ids`); this layer keeps `token_ids`, the input of a
    `hub_text_encoder` branch, so that `with_raw_text` (TensorFlow backend)
    or a `tf.data` map can put it in front of a model. Saved with the model:
    the preprocessor's config and vocabulary travel in the `.keras` file.

    Args:
        preprocessor: a keras-hub text preprocessor, e.g.
            `keras_hub.models.BertTextClassifierPreprocessor`.
        **kwargs: standard layer arguments (`name`, ...).

    Call arguments:
        inputs: strings `(batch,)` (a list, object array or `tf.string` tensor).

    Returns:
        int32 token ids `(batch, sequence_length)`.

    Example:

    >>> import keras_hub, tensorflow as tf
    >>> tokenizer = keras_hub.models.BertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hat"])
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=4)
    >>> layer = HubTokenIds(preprocessor)
    >>> keras.ops.convert_to_numpy(layer(tf.constant(["hat", "a hat"]))).tolist()  # "a": [UNK]
    [[2, 5, 3, 0], [2, 1, 5, 3]]
    """

    def __init__(self, preprocessor, **kwargs):
        super().__init__(**kwargs)
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor

    def build(self, input_shape):
        """Builds nothing: the preprocessor builds on its first call, since
        its packer reads the tokenizer's special token ids, which a reloaded
        model only has once its assets are loaded (after its graph is
        built)."""

    def call(self, inputs):
        features = self.preprocessor(inputs)
        if not isinstance(features, dict) or "token_ids" not in features:
            raise ValueError(f"HubTokenIds '{self.name}': the preprocessor "
                             f"'{self.preprocessor.name}' must return a dict with 'token_ids'.")
        return features["token_ids"]

    def compute_output_spec(self, inputs):
        length = getattr(self.preprocessor, "sequence_length", None)
        return keras.KerasTensor((inputs.shape[0], length), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(preprocessor=keras.saving.serialize_keras_object(self.preprocessor))
        return config


def hub_text_preprocessor(preprocessor=None, preset=None, sequence_length=None):
    """The strings -> token ids layer for a `hub_text_encoder` branch.

    Put it in front of a model with `with_raw_text(model, {"text": layer})`
    (TensorFlow backend; the model then takes raw strings and saves its
    tokenizer with it) or map it over a `tf.data` pipeline (any backend).

    Args:
        preprocessor: a keras-hub text preprocessor, e.g.
            `keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
            sequence_length=...)`.
        preset: instead, a keras-hub preset name:
            `keras_hub.models.TextClassifierPreprocessor.from_preset`
            (downloads the vocabulary).
        sequence_length: with `preset`, the length of the id sequences
            (default: the preset's).

    Returns:
        A `HubTokenIds` layer.

    Example:

    >>> import keras_hub, tensorflow as tf
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "shoe"]
    >>> tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary)
    >>> layer = hub_text_preprocessor(
    ...     keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=5))
    >>> ids = layer(tf.constant(["red shoe"]))  # [CLS] red shoe [SEP] [PAD]
    >>> keras.ops.convert_to_numpy(ids).tolist()
    [[2, 5, 6, 3, 0]]
    >>> layer = hub_text_preprocessor(preset="bert_tiny_en_uncased")  # doctest: +SKIP
    """
    if (preprocessor is None) == (preset is None):
        raise ValueError("hub_text_preprocessor: give either a keras-hub preprocessor or a "
                         f"preset name (received preprocessor={preprocessor!r}, "
                         f"preset={preset!r}).")
    if preprocessor is None:
        kwargs = {} if sequence_length is None else {"sequence_length": sequence_length}
        preprocessor = _keras_hub().models.TextClassifierPreprocessor.from_preset(preset, **kwargs)
    return HubTokenIds(preprocessor, name="hub_token_ids")


def hub_image_encoder(backbone=None, preset=None, taps=None, vector="avg", preprocess=None,
                      input_shape=None, trainable=True, name="image"):
    """A keras-hub image backbone (ResNet, EfficientNet, MobileNet, ... or
    ViT) as an image branch.

    Taps: for backbones with `pyramid_outputs` (the feature pyramid of
    convolutional families), `stage_i` is the i-th pyramid level (e.g.
    ResNet's `P2`..`P5`, shallow to deep), `(batch, H_i, W_i, C_i)`; any
    backbone can be tapped by layer names. The branch is cut after the
    deepest tap (an early stage keeps only the stem and that stage).

    keras-hub image backbones expect preprocessed pixels: give the
    preset's `keras_hub.layers.ImageConverter` (resizing and rescaling) as
    `preprocess`, or rescale before.

    Args:
        backbone: a keras-hub image backbone (a functional model from
            images `(batch, H, W, C)`).
        preset: instead of `backbone`, a keras-hub preset name, e.g.
            `"resnet_18_imagenet"` (downloads the weights).
        taps: dict tap name -> pyramid level index (1-based) or layer name,
            or a list of those. None: every pyramid level (backbones without
            one: no intermediate taps, `vector` from the backbone's output).
        vector: `"avg"`, `"max"` (global pooling), `"flatten"` or a Keras
            layer applied to the deepest tap.
        preprocess: optional Keras layer applied to the images first (e.g.
            an `ImageConverter`).
        input_shape: the branch's image shape (default: the backbone's).
        trainable: False freezes the backbone (BatchNormalization then runs
            in inference mode).
        name: name of the input (the modality); the model is `{name}_branch`.

    Returns:
        A functional `keras.Model` from images to the dict of taps.

    Example:

    >>> import keras_hub, numpy as np
    >>> resnet = keras_hub.models.ResNetBackbone(
    ...     input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8],
    ...     stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
    ...     image_shape=(16, 16, 3))
    >>> branch = hub_image_encoder(resnet)
    >>> {k: tuple(v.shape) for k, v in branch(np.zeros((1, 16, 16, 3))).items()}
    {'stage_1': (1, 4, 4, 64), 'stage_2': (1, 2, 2, 8), 'vector': (1, 8)}
    >>> branch = hub_image_encoder(preset="resnet_18_imagenet")  # doctest: +SKIP
    """
    what = "hub_image_encoder"
    backbone = _backbone(what, backbone, preset)
    pyramid = list(getattr(backbone, "pyramid_outputs", None) or {})
    if pyramid:
        levels = {i: producer(backbone.pyramid_outputs[level])[0].name
                  for i, level in enumerate(pyramid, start=1)}
        taps = _numbered_taps(what, taps, "stage", levels)
    elif taps is not None and any(isinstance(t, int) for t in
                                  (taps.values() if isinstance(taps, dict) else taps)):
        raise ValueError(f"{what}: backbone '{backbone.name}' has no pyramid_outputs to "
                         "number; name its layers as taps instead.")
    return from_model(backbone, taps=taps, vector=vector, preprocess=preprocess,
                      input_shape=input_shape, trainable=trainable, name=name)


def hub_audio_encoder(backbone=None, preset=None, taps=None, vector="avg", preprocess=None,
                      input_shape=None, trainable=True, name="audio"):
    """Whisper's encoder (of a keras-hub `WhisperBackbone`) as an audio branch.

    The branch keeps the encoder only: its input is the log-mel frames
    `(batch, frames, num_mels)` (the backbone's `encoder_features`; a
    `keras_hub.layers.WhisperAudioConverter` computes them from 16 kHz
    waveforms, and can be given as `preprocess`); the decoder and its inputs
    are cut away.

    Taps: `layer_i` (i = 1..num_layers) is the output of encoder layer i
    (keras-hub's `transformer_encoder_layer_{i-1}`), `(batch, frames / 2,
    hidden_dim)`; index 0 is the embeddings (after the two convolutions and
    the position embedding). The final `encoder_layer_norm` can be tapped by
    that name.

    Args:
        backbone: a keras-hub `WhisperBackbone`.
        preset: instead of `backbone`, a keras-hub preset name, e.g.
            `"whisper_tiny_en"` (downloads the weights).
        taps: dict tap name -> encoder layer index (0..num_layers) or layer
            name, or a list of those. None: every encoder layer.
        vector: `"avg"`, `"max"` (pooling over frames) or a Keras layer
            applied to the deepest tap.
        preprocess: optional Keras layer applied to the input first (e.g. a
            `WhisperAudioConverter`; then give `input_shape`).
        input_shape: the branch input's shape (default: the encoder's).
        trainable: False freezes the encoder.
        name: name of the input (the modality); the model is `{name}_branch`.

    Returns:
        A functional `keras.Model` from log-mel frames to the dict of taps.

    Example:

    >>> import keras_hub, numpy as np
    >>> whisper = keras_hub.models.WhisperBackbone(
    ...     vocabulary_size=10, num_layers=2, num_heads=1, hidden_dim=4, intermediate_dim=8,
    ...     num_mels=6, max_encoder_sequence_length=8, max_decoder_sequence_length=4)
    >>> branch = hub_audio_encoder(whisper)
    >>> {k: tuple(v.shape) for k, v in branch(np.zeros((1, 8, 6))).items()}
    {'layer_1': (1, 4, 4), 'layer_2': (1, 4, 4), 'vector': (1, 4)}
    >>> branch.count_params() < whisper.count_params()  # the decoder is cut away
    True
    >>> branch = hub_audio_encoder(preset="whisper_tiny_en")  # doctest: +SKIP
    """
    what = "hub_audio_encoder"
    backbone = _backbone(what, backbone, preset)
    if "encoder_features" not in [t.name for t in backbone.inputs]:
        raise ValueError(f"{what}: backbone '{backbone.name}' has no 'encoder_features' input; "
                         "expected a keras-hub WhisperBackbone.")
    taps = _numbered_taps(what, taps, "layer", _encoder_layers(
        "encoder_embeddings_dropout", "transformer_encoder_layer_", backbone.num_layers))
    return from_model(backbone, taps=taps, vector=vector, preprocess=preprocess,
                      input_shape=input_shape, trainable=trainable, name=name)
