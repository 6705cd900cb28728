"""Tri-modal digits: images, spoken digits and short texts (number words in
English, French, Spanish, German, numerals, additions and subtractions), each
degraded or corrupted half of the time.

    python -m recipes.av_text_digits --fusion gmu --epochs 8
    python -m recipes.av_text_digits --modalities text
"""

from recipes.av_digits import run

NAME = "av_text_digits"


def main(argv=None):
    """`python -m recipes.av_text_digits ...`; returns the metrics dict."""
    return run(NAME, argv, text=True, description=__doc__)


if __name__ == "__main__":
    main()
