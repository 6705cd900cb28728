"""The GMU paper's synthetic task: two vector modalities, a hidden switch
decides which one carries the class.

    python -m recipes.synthetic --fusion gmu --epochs 30
"""

from mmfusion.recipes import train

NAME = "synthetic"


def main(argv=None):
    """`python -m recipes.synthetic ...`; returns the metrics dict."""
    return train.main(NAME, argv, prog=f"python -m recipes.{NAME}")


if __name__ == "__main__":
    main()
