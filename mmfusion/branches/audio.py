"""Audio branch: raw waveform -> log-mel spectrogram -> convolutional network."""

import keras

from mmfusion.branches.common import (VECTOR_TAP, batch_normalization, conv_blocks,
                                     presence_input, vector_tap)

__all__ = ["audio_cnn"]

# Floor of the mel power before the dB conversion (-60 dB).
MIN_POWER = 1e-6


def audio_cnn(num_samples=6000, sampling_rate=8000, frame_length=256, frame_step=192,
              num_mel_bins=32, filters=(16, 32, 32), kernel_size=3, pool_size=2,
              pooling="flatten", embedding_dim=None, dropout=0.0, presence=False, name="audio"):
    """A log-mel convolutional audio branch whose intermediate outputs are named taps.

    The input is a batch of raw mono waveforms of a fixed length
    `num_samples` (pad or crop beforehand, e.g. with
    `mmfusion.datasets.fsdd.pad_or_crop`: zeros appended to short clips, long
    clips cropped around their center). `keras.layers.MelSpectrogram`
    computes the mel power and converts it to decibels itself
    (`power_to_db=True`), so no further `log` is taken (that would give NaN
    on negative dB values). Its `top_db` clipping is computed over the whole
    batch, which would make an example's features depend on its batch mates;
    it is disabled (set above the dynamic range) and the power is floored at
    `MIN_POWER` (-60 dB) instead. A `BatchNormalization` rescales the dB
    values per mel bin before the conv blocks
    (`Conv2D -> BatchNormalization -> ReLU -> MaxPooling2D` over
    (mel bin, frame)).

    Taps (the model's outputs, a dict name -> tensor):
    - `log_mel`: `(batch, num_mel_bins, frames, 1)`, the normalized dB spectrogram,
      with `frames = num_samples // frame_step + 1`.
    - `block_i` (i = 1..len(filters)): the conv blocks' outputs.
    - `vector`: `(batch, d)`, the pooled last block, followed by
      `Dense(embedding_dim, relu)` if `embedding_dim` is set.

    Args:
        num_samples: length of the input waveforms.
        sampling_rate: sampling rate in Hz (FSDD: 8000).
        frame_length: STFT window and FFT length in samples.
        frame_step: hop between STFT frames in samples.
        num_mel_bins: number of mel bands.
        filters: filters of each conv block (its length is the depth).
        kernel_size: convolution kernel size.
        pool_size: max-pooling size after each block (1: no pooling).
        pooling: how the last block becomes a vector: `"flatten"`, `"avg"` or `"max"`.
        embedding_dim: optional size of a dense embedding on top.
        dropout: dropout rate before the embedding (0: none).
        presence: if True, the branch also takes the modality's presence, a
            `(batch, 1)` 0/1 input named `{name}_presence` (the inputs are
            then a dict), and every BatchNormalization's statistics exclude
            absent rows (see `mmfusion.branches.image_cnn`).
        name: name of the input (the modality); the model is `{name}_branch`.

    Returns:
        A functional `keras.Model` from `(batch, num_samples)` waveforms (and
        presence) to the dict of taps.

    Example:

    >>> import numpy as np
    >>> branch = audio_cnn(num_samples=1024, frame_length=128, frame_step=64,
    ...                    num_mel_bins=16, filters=(4, 8))
    >>> {k: tuple(v.shape) for k, v in branch(np.zeros((2, 1024))).items()}
    {'log_mel': (2, 16, 17, 1), 'block_1': (2, 8, 9, 4), 'block_2': (2, 4, 5, 8), 'vector': (2, 160)}
    """
    inputs = keras.Input(shape=(num_samples,), name=name)
    mel = keras.layers.MelSpectrogram(
        fft_length=frame_length, sequence_stride=frame_step, sampling_rate=sampling_rate,
        num_mel_bins=num_mel_bins, min_freq=20.0, power_to_db=True,
        min_power=MIN_POWER, top_db=1000.0, name=f"{name}_mel_db",
    )(inputs)
    x = keras.layers.Reshape((*mel.shape[1:], 1), name=f"{name}_add_channel")(mel)
    present = presence_input(name) if presence else None
    x = batch_normalization(x, present, name=f"{name}_db_norm", axis=1)
    taps = {"log_mel": x}
    x, blocks = conv_blocks(x, filters, kernel_size, pool_size, prefix=name, presence=present)
    taps.update(blocks)
    taps[VECTOR_TAP] = vector_tap(x, pooling, embedding_dim, dropout, prefix=name)
    model_inputs = {name: inputs, present.name: present} if presence else inputs
    return keras.Model(model_inputs, taps, name=f"{name}_branch")
