"""Recipes: end-to-end training runs, installed with the package.

- `mmfusion.recipes.train`: a fusion model on any registered task
  (`mmfusion.tasks`), as `mmfusion train TASK` and `python -m recipes.TASK`
  (from a checkout) run it.
- `mmfusion.recipes.data_parallel`: the same model trained on one device,
  with TensorFlow's `MirroredStrategy` or with JAX on several processes.
"""

__all__ = []
