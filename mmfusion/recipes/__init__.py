"""Recipes: end-to-end training runs, installed with the package.

- `mmfusion.recipes.train`: a fusion model on any registered task
  (`mmfusion.tasks`), as `mmfusion train TASK` and `python -m recipes.TASK`
  (from a checkout) run it.
- `mmfusion.recipes.config`: a fusion model on your own table (CSV or
  parquet: numeric columns, image paths, texts, a label) described by a TOML
  file, as `mmfusion train --config FILE` runs it.
- `mmfusion.recipes.data_parallel`: the same model trained on one device,
  with TensorFlow's `MirroredStrategy` or with JAX on several processes.
"""

__all__ = []
