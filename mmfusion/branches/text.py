"""Text branch: token embedding and (bi)LSTM layers, and the text
preprocessor that maps raw strings to token ids in a `tf.data` pipeline
(any backend) or inside a saved model (TensorFlow backend)."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from mmfusion.branches.common import VECTOR_TAP

__all__ = ["TextPreprocessor", "standardize_text", "text_lstm", "text_vectorizer", "with_raw_text"]


@keras.saving.register_keras_serializable(package="mmfusion")
def standardize_text(texts):
    """Unicode NFKC normalization and case folding (`tensorflow-text`), then
    every character that is not a letter, digit, `+ - * / =` or space becomes a
    space. Works on any language's script (e.g. "Fünf" -> "fünf").

    Args:
        texts: string tensor.

    Returns:
        A string tensor of the same shape.

    Example:

    >>> [s.decode() for s in standardize_text(["Fünf, PLUS zwei!", "x=3*4"]).numpy()]
    ['fünf  plus zwei ', 'x=3*4']
    """
    texts = tf_text.case_fold_utf8(tf_text.normalize_utf8(texts, "NFKC"))
    return tf.strings.regex_replace(texts, r"[^\p{L}\p{N}+\-*/=\s]", " ")


def _string_tensor(texts):
    """Strings as a `tf.string` tensor (a NumPy array, list or tensor)."""
    if isinstance(texts, (tf.Tensor, tf.RaggedTensor)):
        return texts
    texts = np.asarray(texts)
    # Object arrays hold Python `str` or `bytes`; `tf.constant` encodes `str` as UTF-8.
    return tf.constant(texts.tolist() if texts.dtype.kind == "O" else texts, dtype=tf.string)


@keras.saving.register_keras_serializable(package="mmfusion")
class TextPreprocessor(keras.layers.TextVectorization):
    """A `TextVectorization` that standardizes with `standardize_text` (NFKC +
    case folding) as TensorFlow ops before splitting and looking up tokens.

    A plain `TextVectorization(standardize=some_function)` hands the function
    NumPy arrays on the JAX and PyTorch backends, which fails inside a
    `tf.data` pipeline (there the strings are symbolic `tf.Tensor`s that have
    no NumPy value: "Cannot convert a symbolic tf.Tensor"). The built-in
    string standardizations stay TensorFlow ops on every backend, which is
    why a plain `TextVectorization` works there. This layer runs its
    standardization as TensorFlow ops too and passes `standardize=None` to
    `TextVectorization`, so it tokenizes inside `tf.data` on the TensorFlow,
    JAX and PyTorch backends, and its config holds nothing unregistered: a
    model containing it saves and reloads. Inside a model (raw string
    inputs, see `with_raw_text`) it needs the TensorFlow backend, the only
    one with string tensors; a SavedModel exported from such a model needs
    `import tensorflow_text` where it is served (its normalization ops).

    Args:
        **kwargs: the arguments of `keras.layers.TextVectorization`
            (`max_tokens`, `output_sequence_length`, `vocabulary`, ...),
            except `standardize`, which is fixed.

    Call arguments:
        inputs: strings `(batch,)` or `(batch, 1)`: a NumPy array, list or
            `tf.string` tensor.

    Returns:
        Token ids as `TextVectorization` returns them (0: padding, 1: OOV).

    Example:

    >>> layer = TextPreprocessor(output_sequence_length=3)
    >>> layer.adapt(["Straße", "STRASSE straße"])
    >>> [str(token) for token in layer.get_vocabulary()]  # "ß" case-folds to "ss"
    ['', '[UNK]', 'strasse']
    >>> layer(["Strasse STRASSE?", "Rue"]).numpy().tolist()
    [[2, 2, 0], [1, 0, 0]]
    """

    def __init__(self, **kwargs):
        if kwargs.pop("standardize", None) is not None:
            raise ValueError(
                f"TextPreprocessor '{kwargs.get('name')}': `standardize` is fixed "
                "(mmfusion.branches.standardize_text); do not pass it."
            )
        super().__init__(standardize=None, **kwargs)

    def update_state(self, data):
        super().update_state(standardize_text(_string_tensor(data)))

    def call(self, inputs):
        with tf.device("CPU:0"):
            inputs = standardize_text(_string_tensor(inputs))
        return super().call(inputs)


def text_vectorizer(texts=None, vocabulary=None, max_tokens=None, sequence_length=16):
    """A `TextPreprocessor` mapping strings to token ids, in a `tf.data`
    pipeline (`mmfusion.datasets.pipelines.make_dataset`, any backend) or
    inside a model taking raw strings (`with_raw_text`, TensorFlow backend).

    Strings are standardized by `standardize_text` and split on whitespace;
    id 0 is padding, 1 the out-of-vocabulary token.

    Args:
        texts: optional iterable of strings to learn the vocabulary from.
        vocabulary: optional fixed vocabulary (instead of `texts`).
        max_tokens: maximum vocabulary size (None: unlimited).
        sequence_length: every output is padded or truncated to this many ids.

    Returns:
        An adapted `TextPreprocessor` layer; `vocabulary_size()` gives the
        `vocab_size` for `text_lstm`.

    Example:

    >>> vectorizer = text_vectorizer(["two plus Three", "SIEBEN"], sequence_length=4)
    >>> vectorizer.vocabulary_size()
    6
    >>> ids = vectorizer(["Sieben PLUS zwei"]).numpy()  # "zwei": out of vocabulary
    >>> ids.shape, ids[0, 2:].tolist()
    ((1, 4), [1, 0])
    """
    layer = TextPreprocessor(max_tokens=max_tokens, output_sequence_length=sequence_length,
                             vocabulary=vocabulary)
    if texts is not None:
        layer.adapt(_string_tensor(list(texts)))
    return layer


def with_raw_text(model, preprocessors, name=None):
    """Wraps a model so that the given inputs take raw strings: each goes
    through its preprocessor (e.g. a `TextPreprocessor`) inside the model, so
    the preprocessing is saved, reloaded and exported with it.

    Needs the TensorFlow backend (string tensors); on JAX and PyTorch, map
    the same preprocessors over the `tf.data` pipeline instead. Give
    `predict` the strings as an object array (`np.array(texts, dtype=object)`)
    or a `tf.string` tensor: Keras refuses NumPy `str`/`bytes` arrays there.

    Args:
        model: a functional model whose inputs are named (e.g. from
            `mmfusion.compose.build_fusion_model`); its token-id inputs are
            the ones named in `preprocessors`.
        preprocessors: dict input name -> layer mapping `(batch,)` strings
            to that input's token ids.
        name: name of the new model (default: `{model.name}_raw_text`).

    Returns:
        A `keras.Model` with the same input names; the preprocessed ones are
        `(batch,)` strings.

    Example:

    >>> vectorizer = text_vectorizer(["red shoe", "blue hat"], sequence_length=4)
    >>> ids = keras.Input((4,), dtype="int32", name="text")
    >>> model = keras.Model(ids, keras.layers.Embedding(10, 2)(ids))
    >>> raw = with_raw_text(model, {"text": vectorizer})
    >>> raw.input.dtype, tuple(raw(np.array(["RED hat"])).shape)
    ('string', (1, 4, 2))
    """
    names = [t.name for t in model.inputs]
    unknown = sorted(set(preprocessors) - set(names))
    if unknown:
        raise ValueError(
            f"with_raw_text: model '{model.name}' has no inputs {unknown}; its inputs are {names}."
        )
    inputs, feeds = {}, {}
    for tensor in model.inputs:
        key = tensor.name
        if key in preprocessors:
            inputs[key] = keras.Input(shape=(), dtype="string", name=key)
            feeds[key] = preprocessors[key](inputs[key])
        else:
            inputs[key] = keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=key)
            feeds[key] = inputs[key]
    single = len(model.inputs) == 1
    outputs = model(feeds[names[0]] if single else feeds)
    return keras.Model(inputs[names[0]] if single else inputs, outputs,
                       name=name or f"{model.name}_raw_text")


def text_lstm(vocab_size, sequence_length=16, embedding_dim=32, units=(32,),
              bidirectional=True, dropout=0.0, name="text"):
    """An embedding + (bi)LSTM text branch whose layers are named taps.

    The input is token ids `(batch, sequence_length)` with 0 as padding (what
    `text_vectorizer` produces in the input pipeline); padding is masked.

    Taps (the model's outputs, a dict name -> tensor):
    - `embedding`: `(batch, sequence_length, embedding_dim)`.
    - `lstm_i` (i = 1..len(units)): `(batch, sequence_length, k * units[i-1])`,
      the full sequence of layer i (`k = 2` if bidirectional, else 1).
    - `vector`: `(batch, k * units[-1])`, the last layer's final state(s)
      (forward and backward concatenated if bidirectional).

    Args:
        vocab_size: number of token ids (including padding and OOV).
        sequence_length: length of the id sequences.
        embedding_dim: size of the token embeddings.
        units: units of each LSTM layer (its length is the depth).
        bidirectional: wrap each LSTM in `keras.layers.Bidirectional`.
        dropout: dropout rate on each LSTM layer's inputs (0: none).
        name: name of the input (the modality); the model is `{name}_branch`.

    Returns:
        A functional `keras.Model` from token ids to the dict of taps.

    Example:

    >>> import numpy as np
    >>> branch = text_lstm(vocab_size=20, sequence_length=5, embedding_dim=4, units=(3, 2))
    >>> {k: tuple(v.shape) for k, v in branch(np.ones((2, 5), "int32")).items()}
    {'embedding': (2, 5, 4), 'lstm_1': (2, 5, 6), 'lstm_2': (2, 5, 4), 'vector': (2, 4)}
    """
    if not units:
        raise ValueError("text_lstm: `units` needs at least one LSTM size.")
    inputs = keras.Input(shape=(sequence_length,), dtype="int32", name=name)
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True,
                               name=f"{name}_embedding")(inputs)
    taps = {"embedding": x}
    for i, n in enumerate(units, start=1):
        layer = keras.layers.LSTM(n, return_sequences=True, return_state=True, dropout=dropout,
                                  name=f"{name}_lstm_{i}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"{name}_bilstm_{i}")
            x, h_forward, _, h_backward, _ = layer(x)
            state = [h_forward, h_backward]
        else:
            x, h, _ = layer(x)
            state = [h]
        taps[f"lstm_{i}"] = x
    if len(state) > 1:
        state = keras.layers.Concatenate(name=f"{name}_final_state")(state)
    else:
        state = keras.layers.Identity(name=f"{name}_final_state")(state[0])
    taps[VECTOR_TAP] = state
    return keras.Model(inputs, taps, name=f"{name}_branch")
