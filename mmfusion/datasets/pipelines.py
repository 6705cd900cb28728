"""`tf.data` input pipelines feeding `model.fit`: batching, shuffling,
caching, prefetching, and text tokenization kept in the pipeline."""

import numpy as np
import tensorflow as tf

__all__ = ["make_dataset", "wav_dataset"]


def _tensor(values):
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        return tf.constant(values.astype(str))
    return values


def make_dataset(inputs, labels=None, batch_size=32, shuffle=False, seed=0, cache=True,
                 text_vectorizers=None):
    """A batched, prefetched `tf.data.Dataset` of `(inputs_dict, labels)`.

    Order: slices -> text vectorization (per example) -> `cache()` ->
    `shuffle` (reshuffled every epoch) -> `batch` -> `prefetch(AUTOTUNE)`.
    Token ids are computed once and cached, and `batch` is the last
    batch-changing step, so a multi-process `keras.distribution` fit can read
    the global batch size (it cannot through a `map` after `batch`).

    Args:
        inputs: dict name -> array with the examples on axis 0 (strings for
            text inputs).
        labels: optional `(n, ...)` array; None yields the inputs dict only.
        batch_size: batch size.
        shuffle: shuffle the examples each epoch (training).
        seed: shuffle seed.
        cache: cache the examples in memory after the first epoch.
        text_vectorizers: optional dict name -> callable (e.g. the
            `TextPreprocessor` from `mmfusion.branches.text_vectorizer`)
            mapping that input's strings (one example's) to token ids. It runs in
            the `tf.data` graph, so it must use TensorFlow ops on every
            backend (`TextPreprocessor` does; a `TextVectorization` with a
            Python `standardize` function fails on JAX and PyTorch).

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> ds = make_dataset({"x": np.zeros((5, 2))}, np.arange(5), batch_size=2)
    >>> [y.numpy().tolist() for _, y in ds]
    [[0, 1], [2, 3], [4]]
    """
    features = {k: _tensor(v) for k, v in inputs.items()}
    ds = tf.data.Dataset.from_tensor_slices(features if labels is None else (features, labels))
    if text_vectorizers:
        def vectorize(x, *y):
            x = {k: text_vectorizers[k](v) if k in text_vectorizers else v for k, v in x.items()}
            return (x, *y) if y else x

        ds = ds.map(vectorize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(next(iter(inputs.values()))), seed=seed,
                        reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def wav_dataset(filenames, length, cache=True):
    """Streams WAV files decoded by TensorFlow as fixed-length waveforms.

    Decoding (`tf.audio.decode_wav`, float32 in [-1, 1], channels averaged)
    and `pad_or_crop` happen once: with `cache=True` later epochs read the
    decoded audio from memory. Matches `mmfusion.datasets.fsdd.pad_or_crop`:
    zeros appended to short clips, long clips cropped around their center.

    Args:
        filenames: WAV file paths.
        length: samples per waveform.
        cache: cache the decoded waveforms in memory.

    Returns:
        An unbatched `tf.data.Dataset` of `(length,)` float32 waveforms.

    Example:

    >>> from mmfusion.datasets.fsdd import write_wav
    >>> folder = getfixture("tmp_path")
    >>> paths = [str(folder / "short.wav"), str(folder / "long.wav")]
    >>> write_wav(paths[0], np.full(3, 0.5))
    >>> write_wav(paths[1], np.linspace(-0.8, 0.8, 9))
    >>> [np.round(w.numpy().astype(float), 1).tolist() for w in wav_dataset(paths, length=5)]
    [[0.5, 0.5, 0.5, 0.0, 0.0], [-0.4, -0.2, 0.0, 0.2, 0.4]]
    """
    def decode(filename):
        audio, _ = tf.audio.decode_wav(tf.io.read_file(filename))
        samples = tf.reduce_mean(audio, axis=-1)
        n = tf.shape(samples)[0]
        start = tf.maximum(n - length, 0) // 2
        samples = samples[start:start + length]
        return tf.pad(samples, [[0, length - tf.shape(samples)[0]]])

    ds = tf.data.Dataset.from_tensor_slices(list(filenames)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.cache() if cache else ds
