"""Tri-modal digits: images, spoken digits and short texts (number words in
English, French, Spanish, German, numerals, additions and subtractions), each
degraded or corrupted half of the time.

    python -m recipes.av_text_digits --fusion gmu --epochs 8
    python -m recipes.av_text_digits --modalities text
"""

from mmfusion.recipes import train

NAME = "av_text_digits"


def main(argv=None):
    """`python -m recipes.av_text_digits ...`; returns the metrics dict."""
    return train.main(NAME, argv, prog=f"python -m recipes.{NAME}")


if __name__ == "__main__":
    main()
