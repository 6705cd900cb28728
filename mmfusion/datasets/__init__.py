"""Multimodal datasets: synthetic tasks and real data loaders."""

from mmfusion.datasets.av_digits import AVDigits, load_av_digits  # noqa: E402
from mmfusion.datasets.fsdd import FSDDData, load_fsdd  # noqa: E402
from mmfusion.datasets.pipelines import make_dataset, wav_dataset  # noqa: E402
from mmfusion.datasets.presence import presence_from  # noqa: E402

__all__ = ["AVDigits", "FSDDData", "load_av_digits", "load_fsdd", "make_dataset", "presence_from",
           "wav_dataset"]
