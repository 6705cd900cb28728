"""A tiny FSDD-like folder of generated WAV files (no network, no real data)."""

import os

import numpy as np

from mmfusion.datasets.fsdd import write_wav

SPEAKERS = ("ana", "bo", "cy")


def write_fake_fsdd(folder, speakers=SPEAKERS, indices=range(7), seed=0):
    """Writes `{digit}_{speaker}_{index}.wav` for every digit, speaker and index:
    a tone whose pitch encodes the digit, of random length (300-900 samples).

    Returns:
        `{file name: written samples}`.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    written = {}
    for digit in range(10):
        for speaker in speakers:
            for index in indices:
                n = int(rng.integers(300, 900))
                t = np.arange(n) / 8000.0
                samples = 0.5 * np.sin(2 * np.pi * (200 + 150 * digit) * t) \
                    + 0.01 * rng.normal(size=n)
                name = f"{digit}_{speaker}_{index}.wav"
                write_wav(os.path.join(folder, name), samples)
                written[name] = samples
    return written
