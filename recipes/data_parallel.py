"""Data-parallel training on one device, TensorFlow's MirroredStrategy or JAX
processes: `python -m recipes.data_parallel --help` (see
`mmfusion.recipes.data_parallel`)."""

from mmfusion.recipes.data_parallel import main

if __name__ == "__main__":
    main()
