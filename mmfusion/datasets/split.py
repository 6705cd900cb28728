"""One split of a standard multimodal dataset, as the loaders return it, and
where the loaders look for their files."""

import os
from dataclasses import dataclass, field

import numpy as np

from mmfusion.datasets.fsdd import DATA_ENV

__all__ = ["Split", "dataset_folder", "split_indices"]


def dataset_folder(name, data_dir=None, how_to_get=""):
    """`<data_dir>/<name>`, the folder of one dataset's files.

    Args:
        name: the dataset's folder name (e.g. `"avmnist"`).
        data_dir: folder of datasets (None: the `MMFUSION_DATA` environment
            variable).
        how_to_get: a sentence for the error message (where the files come from).

    Raises:
        ValueError: if the folder does not exist (the message says where it
            was looked for and how to get the files).

    Example:

    >>> root = getfixture("tmp_path")
    >>> (root / "avmnist").mkdir()
    >>> dataset_folder("avmnist", str(root)) == str(root / "avmnist")
    True
    >>> dataset_folder("mmimdb", str(root), "Run download_mmimdb().")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Dataset 'mmimdb' not found: no folder ...mmimdb. Run download_mmimdb().
    """
    data_dir = data_dir or os.environ.get(DATA_ENV) or None
    if data_dir is None:
        raise ValueError(f"Dataset '{name}' not found: give data_dir= or set ${DATA_ENV} to the "
                         f"folder that holds '{name}/'. {how_to_get}".rstrip())
    folder = os.path.join(data_dir, name)
    if not os.path.isdir(folder):
        raise ValueError(f"Dataset '{name}' not found: no folder {folder}. {how_to_get}".rstrip())
    return folder


@dataclass
class Split:
    """One split of a dataset: aligned modality arrays, labels and ids.

    Attributes:
        inputs: dict modality -> array, first axis the examples.
        labels: `(n,)` class ids, `(n, k)` multi-label 0/1 targets or
            `(n,)` regression targets (see each loader).
        ids: `(n,)` the dataset's own id of each example (file name,
            IMDb id, video segment id, ...).
        extras: dict name -> `(n, ...)` array of further per-example fields
            (e.g. sequence lengths); `take` keeps them aligned.

    Example:

    >>> data = Split({"image": np.zeros((3, 2, 2, 1)), "text": np.array(["a", "b", "c"])},
    ...              np.array([0, 1, 1]), ids=np.array(["x", "y", "z"]))
    >>> part = data.take(data.labels == 1)
    >>> len(part), part.ids.tolist(), part.inputs["text"].tolist()
    (2, ['y', 'z'], ['b', 'c'])
    """

    inputs: dict
    labels: np.ndarray
    ids: np.ndarray = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.labels)
        if self.ids is None:
            self.ids = np.arange(n)
        for kind, arrays in (("modality", self.inputs), ("field", {"ids": self.ids, **self.extras})):
            for name, x in arrays.items():
                if len(x) != n:
                    raise ValueError(f"Split: {kind} '{name}' has {len(x)} examples, "
                                     f"the labels have {n}.")

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        """The examples at `index` (an index array, mask or slice), as a `Split`."""
        return Split({m: x[index] for m, x in self.inputs.items()}, self.labels[index],
                     self.ids[index], {k: v[index] for k, v in self.extras.items()})


def split_indices(n, validation=0.15, test=0.15, seed=0, stratify=None):
    """Seeded train / validation / test index arrays over `n` examples.

    The three parts are disjoint and cover every example. With `stratify`
    (e.g. class ids), each class is split in the same proportions (rounded),
    so small classes appear in every part when they can.

    Args:
        n: number of examples.
        validation: fraction of the examples in the validation part.
        test: fraction in the test part (`validation + test < 1`).
        seed: seed of the shuffle.
        stratify: optional `(n,)` array of group labels to split per group.

    Returns:
        A dict `"train"`, `"validation"`, `"test"` -> sorted index arrays.

    Example:

    >>> parts = split_indices(20, validation=0.2, test=0.3, seed=0)
    >>> [len(parts[k]) for k in ("train", "validation", "test")]
    [10, 4, 6]
    >>> sorted(np.concatenate(list(parts.values())).tolist()) == list(range(20))
    True
    >>> labels = np.array([0] * 10 + [1] * 10)
    >>> parts = split_indices(20, 0.2, 0.2, seed=1, stratify=labels)
    >>> int(labels[parts["test"]].sum()), len(parts["test"])  # 2 of each class
    (2, 4)
    """
    for key, value in (("validation", validation), ("test", test)):
        if not 0 <= value < 1:
            raise ValueError(f"split_indices: `{key}` must be a fraction in [0, 1); got {value}.")
    if validation + test >= 1:
        raise ValueError(f"split_indices: validation + test must be below 1 (no training "
                         f"examples left); got {validation} + {test}.")
    rng = np.random.default_rng(seed)
    groups = np.zeros(n, int) if stratify is None else np.asarray(stratify)
    if len(groups) != n:
        raise ValueError(f"split_indices: `stratify` has {len(groups)} entries for {n} examples.")
    parts = {"train": [], "validation": [], "test": []}
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        n_test = int(round(test * len(members)))
        n_validation = int(round(validation * len(members)))
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test:n_test + n_validation])
        parts["train"].append(members[n_test + n_validation:])
    return {k: np.sort(np.concatenate(v)).astype(int) for k, v in parts.items()}
