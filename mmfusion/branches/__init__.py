"""Modality branches (backbones): functional models whose outputs are named taps.

Every branch is a `keras.Model` from one modality input (named after the
modality) to a dict tap name -> tensor: the candidate fusion points. The last
tap of every branch is `"vector"`, its final `(batch, d)` representation.
`tap_shapes(branch)` lists the taps; `mmfusion.compose.build_fusion_model`
picks taps by name.

>>> import numpy as np
>>> branch = tabular_mlp(3, units=(4, 2))
>>> tap_shapes(branch)
{'dense_1': (None, 4), 'vector': (None, 2)}
>>> sorted(branch(np.zeros((1, 3))))
['dense_1', 'vector']
"""

from mmfusion.branches.adapters import from_model
from mmfusion.branches.audio import audio_cnn
from mmfusion.branches.common import VECTOR_TAP
from mmfusion.branches.hub import (hub_audio_encoder, hub_image_encoder, hub_text_encoder,
                                  hub_text_preprocessor)
from mmfusion.branches.image import image_cnn
from mmfusion.branches.tabular import tabular_mlp
from mmfusion.branches.text import (TextPreprocessor, standardize_text, text_lstm,
                                   text_vectorizer, with_raw_text)

__all__ = [
    "VECTOR_TAP", "TextPreprocessor", "audio_cnn", "from_model", "hub_audio_encoder",
    "hub_image_encoder", "hub_text_encoder", "hub_text_preprocessor", "image_cnn",
    "standardize_text", "tabular_mlp", "tap_shapes", "text_lstm", "text_vectorizer",
    "with_raw_text",
]


def tap_shapes(branch):
    """`{tap name: shape}` of a branch, with `None` for the batch axis.

    Args:
        branch: a branch model (e.g. from `image_cnn`).

    Returns:
        A dict in the branch's tap order.

    Example:

    >>> tap_shapes(image_cnn((8, 8, 1), filters=(4,)))
    {'block_1': (None, 4, 4, 4), 'vector': (None, 64)}
    """
    if not isinstance(branch.output, dict):
        raise ValueError(
            f"Model '{branch.name}' is not a branch: its outputs must be a dict "
            f"tap name -> tensor; received {type(branch.output).__name__}."
        )
    return {name: tuple(t.shape) for name, t in branch.output.items()}
