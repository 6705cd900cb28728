"""Runnable recipes from a checkout: `python -m recipes.NAME [--help]`.

Each file is a thin entry point; the logic is in `mmfusion.recipes` (installed
with the package), and `mmfusion train TASK` runs the same training.
"""
