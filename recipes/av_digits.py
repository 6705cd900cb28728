"""Audio-visual digits: handwritten digit images + spoken digits (FSDD), each
degraded half of the time, so that only fusion does well.

    python -m recipes.av_digits --fusion gmu --epochs 8
    python -m recipes.av_digits --modalities image          # one modality alone
    python -m recipes.av_digits --placement late --fusion weighted
"""

from mmfusion.recipes import train

NAME = "av_digits"


def main(argv=None):
    """`python -m recipes.av_digits ...`; returns the metrics dict."""
    return train.main(NAME, argv, prog=f"python -m recipes.{NAME}")


if __name__ == "__main__":
    main()
