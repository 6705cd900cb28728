"""Text branch: token embedding and (bi)LSTM layers; tokenization stays in tf.data."""

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from mmfusion.branches.common import VECTOR_TAP

__all__ = ["standardize_text", "text_lstm", "text_vectorizer"]


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


def text_vectorizer(texts=None, vocabulary=None, max_tokens=None, sequence_length=16):
    """A `keras.layers.TextVectorization` to map strings to token ids in a
    `tf.data` pipeline (see `mmfusion.datasets.pipelines.make_dataset`).

    Strings are standardized by `standardize_text` and split on whitespace;
    id 0 is padding, 1 the out-of-vocabulary token.

    Args:
        texts: optional iterable of strings to learn the vocabulary from.
        vocabulary: optional fixed vocabulary (instead of `texts`).
        max_tokens: maximum vocabulary size (None: unlimited).
        sequence_length: every output is padded or truncated to this many ids.

    Returns:
        An adapted `TextVectorization` layer; `vocabulary_size()` gives the
        `vocab_size` for `text_lstm`.

    Example:

    >>> vectorizer = text_vectorizer(["two plus Three", "SIEBEN"], sequence_length=4)
    >>> vectorizer.vocabulary_size()
    6
    >>> ids = vectorizer(["Sieben PLUS zwei"]).numpy()  # "zwei": out of vocabulary
    >>> ids.shape, ids[0, 2:].tolist()
    ((1, 4), [1, 0])
    """
    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize=standardize_text,
        output_sequence_length=sequence_length, vocabulary=vocabulary,
    )
    if texts is not None:
        layer.adapt(tf.constant(list(texts)))
    return layer


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
