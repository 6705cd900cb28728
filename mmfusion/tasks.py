"""Tasks by name: a data loader, the branches of its modalities and its head.

A `Task` is the one definition of a task that recipes, the search, the
`mmfusion` command, notebooks and benchmarks share. `Task.data` loads it and
returns train / validation / test splits (the validation split is carved out
of the training data, never the test split); `Task.branches` gives fresh,
untrained branch models for those splits.

    >>> import mmfusion.tasks as tasks
    >>> tasks.available()  # doctest: +NORMALIZE_WHITESPACE
    ['av_digits', 'av_text_digits', 'avmnist', 'cmu_mosei', 'cmu_mosi', 'easy_vqa',
     'hateful_memes', 'mmimdb', 'synthetic']

A new task is one `register(Task(...))` call, in this module or in your own
code (see `Task`).
"""

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

HEADS = ("classification", "regression", "multilabel")

__all__ = ["HEADS", "Task", "TaskData", "available", "get", "register"]

_REGISTRY = {}


@dataclass
class TaskData:
    """A loaded task.

    Attributes:
        splits: dict `"train"`, `"validation"`, `"test"` -> `(inputs, labels)`,
            `inputs` a dict modality -> array (text already as token ids).
        test: the loader's own test split (with its extra fields, e.g. which
            examples were degraded), aligned with `splits["test"]`.
        preprocessors: dict modality -> the callable that turned that
            modality's raw inputs into the arrays of `splits` (e.g. a
            `TextVectorization` adapted on the training split); empty if none.

    Example:

    >>> data = get("synthetic").data(seed=0)
    >>> {split: len(y) for split, (_, y) in data.splits.items()}
    {'train': 1600, 'validation': 400, 'test': 1000}
    >>> bool((data.splits["test"][1] == data.test.labels).all())
    True
    """

    splits: dict
    test: object
    preprocessors: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A named task: how to load it, its branches and its head.

    Args:
        name: the task's name (`tasks.get(name)`, `mmfusion train NAME`).
        load: `load(data_dir=None, seed=0, **options) -> (train, test)`, two
            splits with `.inputs` (dict modality -> array), `.labels` and
            `take(index)`. `data_dir` is the folder of datasets (see
            `mmfusion.datasets.fsdd.fsdd_folder`); generated tasks ignore it.
        branches: `branches(data, width=1) -> dict modality -> keras.Model`,
            fresh untrained branches for a `TaskData`; `width` multiplies
            their filters and units.
        num_outputs: number of classes (or of regression targets / labels).
        head: `"classification"`, `"regression"` or `"multilabel"`.
        modalities: the modalities `branches` returns, in model input order.
        options: dict option name -> `(default, help)` of the keyword
            arguments of `load` the command line offers (`--p-degrade`).
        preprocess: optional `preprocess(train_inputs) -> dict modality ->
            callable`, learned on the training split and applied to every
            split (e.g. text vectorization).
        breakdown: optional `breakdown(test, outputs) -> dict` of extra
            test metrics, `test` the loader's test split and `outputs` the
            model's test predictions: class probabilities `(n, classes)`,
            label probabilities `(n, labels)` (multilabel) or values
            `(n, targets)` (regression).
        description: one line for `--help`.
        defaults: training settings this task's recipe starts from (keyword
            arguments of `mmfusion.recipes.train.train_task`, e.g. `epochs`).

    Example:

    A task of your own (here two noisy copies of a binary label):

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> from mmfusion.datasets.synthetic import SyntheticData
    >>> def load(data_dir=None, seed=0, n=100):
    ...     rng = np.random.default_rng(seed)
    ...     y = rng.integers(2, size=2 * n).astype("int32")
    ...     x = {m: (y[:, None] + rng.normal(size=(2 * n, 3))).astype("float32")
    ...          for m in ("a", "b")}
    ...     data = SyntheticData(x, y, switch=np.zeros(2 * n, "int32"))
    ...     return data.take(slice(0, n)), data.take(slice(n, None))
    >>> task = Task("two_copies", load,
    ...             lambda data, width=1: {m: tabular_mlp(3, units=(8 * width,), name=m)
    ...                                    for m in ("a", "b")},
    ...             num_outputs=2, modalities=("a", "b"), options={"n": (100, "examples per split")})
    >>> data = task.data(seed=1, n=50)
    >>> {split: len(y) for split, (_, y) in data.splits.items()}
    {'train': 40, 'validation': 10, 'test': 50}
    >>> sorted(task.branches(data))
    ['a', 'b']
    """

    name: str
    load: Callable
    branches: Callable
    num_outputs: int
    head: str = "classification"
    modalities: tuple = ()
    options: dict = field(default_factory=dict)
    preprocess: Callable = None
    breakdown: Callable = None
    description: str = ""
    defaults: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"Task '{self.name}': unknown head '{self.head}'; "
                             f"choose one of {', '.join(HEADS)}.")

    def data(self, data_dir=None, seed=0, validation_fraction=0.2, limit=None, **options):
        """Loads the task and splits it into train / validation / test.

        Args:
            data_dir: folder of datasets (None: `$MMFUSION_DATA`, then
                Keras's cache; see `mmfusion.datasets.fsdd.fsdd_folder`).
            seed: seed of the data, of `limit`'s subsets and of the
                validation split.
            validation_fraction: share of the training data held out for
                validation (the test split is never used for it).
            limit: keep only `limit` random training and `limit` random test
                examples (smoke tests); None keeps all.
            **options: more keyword arguments of `load` (see `options`).

        Returns:
            A `TaskData`.
        """
        train, test = self.load(data_dir=data_dir, seed=seed, **options)
        if limit is not None:  # random subsets, so that every class is there
            rng = np.random.default_rng(seed)
            train, test = (split.take(rng.permutation(len(split))[:limit])
                           for split in (train, test))
        order = np.random.default_rng(seed).permutation(len(train))
        cut = int(len(train) * (1 - validation_fraction))
        fit, validation = train.take(order[:cut]), train.take(order[cut:])
        preprocessors = self.preprocess(fit.inputs) if self.preprocess else {}

        def arrays(split):
            inputs = {m: _apply(preprocessors[m], x) if m in preprocessors else x
                      for m, x in split.inputs.items()}
            return inputs, split.labels

        splits = {"train": arrays(fit), "validation": arrays(validation), "test": arrays(test)}
        return TaskData(splits, test, preprocessors)


def _apply(preprocessor, x):
    import keras

    return keras.ops.convert_to_numpy(preprocessor(np.asarray(x).astype(str)))


def register(task):
    """Adds a `Task` to the registry (a name can be registered once).

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> from mmfusion.datasets.synthetic import load_gmu_synthetic
    >>> task = register(Task("tiny_synthetic",
    ...                      lambda data_dir=None, seed=0: load_gmu_synthetic(20, 10, seed=seed),
    ...                      lambda data, width=1: {}, num_outputs=2))
    >>> get("tiny_synthetic") is task
    True
    >>> _ = _REGISTRY.pop("tiny_synthetic")
    """
    if task.name in _REGISTRY:
        raise ValueError(f"Task '{task.name}' is already registered.")
    _REGISTRY[task.name] = task
    return task


def available():
    """The names of the registered tasks, sorted.

    Example:

    >>> "synthetic" in available()
    True
    """
    return sorted(_REGISTRY)


def get(name):
    """The registered `Task` called `name`.

    Raises:
        ValueError: for an unknown name (the message lists the choices).

    Example:

    >>> get("av_digits").num_outputs
    10
    >>> get("gmu")
    Traceback (most recent call last):
    ...
    ValueError: Unknown task 'gmu'; available: av_digits, av_text_digits, avmnist, cmu_mosei, \
cmu_mosi, easy_vqa, hateful_memes, mmimdb, synthetic.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown task '{name}'; available: {', '.join(available())}.")
    return _REGISTRY[name]


# The tasks of this library.

def _load_synthetic(data_dir=None, seed=0, n_train=2000, n_test=1000, dim=2):
    from mmfusion.datasets.synthetic import load_gmu_synthetic

    return load_gmu_synthetic(n_train=n_train, n_test=n_test, seed=seed, dim=dim)


def _synthetic_branches(data, width=1):
    from mmfusion.branches import tabular_mlp

    return {m: tabular_mlp(x.shape[1], units=(32 * width, 16 * width, 16), name=m)
            for m, x in data.splits["train"][0].items()}


def _by_switch(test, outputs):
    correct = outputs.argmax(axis=-1) == test.labels
    return {"test_accuracy_by_switch": {
        f"{m}_carries_signal": float(np.mean(correct[test.switch == s]))
        for m, s in (("visual", 1), ("textual", 0))}}


AUDIO_LENGTH = 6000
TEXT_LENGTH = 8


def _load_av(text):
    def load(data_dir=None, seed=0, p_degrade=0.5, fsdd=None):
        from mmfusion.datasets.av_digits import load_av_digits

        return load_av_digits(data_dir=data_dir, fsdd=fsdd, audio_length=AUDIO_LENGTH,
                              p_degrade=p_degrade, text=text, text_corruption=p_degrade,
                              seed=seed)

    return load


def _av_branches(data, width=1):
    from mmfusion.branches import audio_cnn, image_cnn, text_lstm

    inputs = data.splits["train"][0]
    branches = {
        "image": image_cnn(inputs["image"].shape[1:], filters=(16 * width, 32 * width),
                           embedding_dim=64, dropout=0.2, name="image"),
        "audio": audio_cnn(inputs["audio"].shape[1], filters=(16 * width, 32 * width, 32 * width),
                           embedding_dim=64, dropout=0.2, name="audio"),
    }
    if "text" in inputs:
        branches["text"] = text_lstm(data.preprocessors["text"].vocabulary_size(),
                                     sequence_length=TEXT_LENGTH, embedding_dim=32,
                                     units=(32 * width,), name="text")
    return branches


def _text_vectorizer(inputs):
    from mmfusion.branches import text_vectorizer

    return {"text": text_vectorizer(inputs["text"], sequence_length=TEXT_LENGTH)}


def _by_degraded(test, outputs):
    """Test accuracy per set of degraded modalities (`"none"`, `"audio"`, `"audio+image"`, ...)."""
    groups = {}
    for i, ok in enumerate(outputs.argmax(axis=-1) == test.labels):
        key = "+".join(m for m in sorted(test.degraded) if test.degraded[m][i]) or "none"
        groups.setdefault(key, []).append(ok)
    return {"test_accuracy_by_degraded": {k: float(np.mean(v)) for k, v in sorted(groups.items())}}


QUESTION_LENGTH = 10


def _load_easy_vqa(data_dir=None, seed=0, image_size=32, max_questions=0):
    from mmfusion.datasets.easy_vqa import load_easy_vqa

    return tuple(load_easy_vqa(split, data_dir=data_dir, image_size=image_size,
                               max_questions=max_questions, seed=seed)
                 for split in ("train", "test"))


def _easy_vqa_branches(data, width=1):
    from mmfusion.branches import image_cnn, text_lstm

    images = data.splits["train"][0]["image"]
    return {
        "image": image_cnn(images.shape[1:], filters=(16 * width, 32 * width, 32 * width),
                           embedding_dim=64, normalize_embedding=True, name="image"),
        "question": text_lstm(data.preprocessors["question"].vocabulary_size(),
                              sequence_length=QUESTION_LENGTH, embedding_dim=32,
                              units=(32 * width,), name="question"),
    }


def _question_vectorizer(inputs):
    from mmfusion.branches import text_vectorizer

    return {"question": text_vectorizer(inputs["question"], sequence_length=QUESTION_LENGTH)}


def _by_answer_kind(test, outputs):
    """Test accuracy on yes/no, shape and colour questions."""
    from mmfusion.datasets.easy_vqa import ANSWERS

    kinds = {"yes/no": ("yes", "no"), "shape": ("circle", "rectangle", "triangle")}
    kind = np.array([next((k for k, a in kinds.items() if ANSWERS[label] in a), "colour")
                     for label in test.labels])
    correct = outputs.argmax(axis=-1) == test.labels
    return {"test_accuracy_by_answer_kind": {k: float(np.mean(correct[kind == k]))
                                             for k in ("yes/no", "shape", "colour")}}


_AV_DEFAULTS = {"fusion": "concat", "epochs": 8, "head_dropout": 0.2}
_P_DEGRADE = {"p_degrade": (0.5, "probability that each modality of an example is degraded")}

register(Task(
    "synthetic", _load_synthetic, _synthetic_branches, num_outputs=2,
    modalities=("visual", "textual"), defaults={"fusion": "gmu", "epochs": 30, "head_units": (16,)},
    options={"n_train": (2000, "training examples (a fifth of them validate)"),
             "n_test": (1000, "test examples"), "dim": (2, "features per modality")},
    breakdown=_by_switch,
    description="the GMU paper's synthetic task: a hidden switch picks the modality that "
                "carries the class"))
register(Task(
    "av_digits", _load_av(text=False), _av_branches, num_outputs=10,
    modalities=("image", "audio"), options=_P_DEGRADE, defaults=_AV_DEFAULTS, breakdown=_by_degraded,
    description="digit images + spoken digits (FSDD), each degraded half of the time"))
register(Task(
    "av_text_digits", _load_av(text=True), _av_branches, num_outputs=10,
    modalities=("image", "audio", "text"), options=_P_DEGRADE, defaults=_AV_DEFAULTS,
    preprocess=_text_vectorizer, breakdown=_by_degraded,
    description="digit images, spoken digits and short texts naming the digit"))
register(Task(
    "easy_vqa", _load_easy_vqa, _easy_vqa_branches, num_outputs=13,
    modalities=("image", "question"), defaults={"fusion": "concat", "epochs": 3},
    options={"image_size": (32, "images are resized to this size (64: the originals)"),
             "max_questions": (0, "random questions kept per split (0: all)")},
    preprocess=_question_vectorizer, breakdown=_by_answer_kind,
    description="easy-VQA: questions about generated shape images, 13 answers"))


# Standard multimodal datasets read from their distributed files (nothing is
# downloaded: see each loader's module for where the files come from).

def _load_avmnist(data_dir=None, seed=0):
    from mmfusion.datasets.avmnist import load_avmnist

    return tuple(load_avmnist(split, data_dir=data_dir) for split in ("train", "test"))


def _avmnist_branches(data, width=1):
    from mmfusion.branches import image_cnn

    return {"image": image_cnn((28, 28, 1), filters=(16 * width, 32 * width), embedding_dim=64,
                               dropout=0.2, name="image"),
            "audio": image_cnn((112, 112, 1), filters=(16 * width, 32 * width, 32 * width),
                               embedding_dim=64, dropout=0.2, name="audio")}


def _load_mmimdb(data_dir=None, seed=0, poster="vgg_features", plot="features"):
    from mmfusion.datasets.mmimdb import load_mmimdb

    return tuple(load_mmimdb(split, data_dir=data_dir, poster=poster, plot=plot)
                 for split in ("train", "test"))


def _mmimdb_branches(data, width=1):
    from mmfusion.branches import image_cnn, tabular_mlp, text_lstm

    inputs = data.splits["train"][0]
    poster, plot = inputs["poster"], inputs["plot"]
    branches = {"poster": image_cnn(poster.shape[1:], filters=(16 * width, 32 * width, 32 * width),
                                    pooling="avg", embedding_dim=128, name="poster")
                if poster.ndim == 4 else
                tabular_mlp(poster.shape[1], units=(256 * width, 128), dropout=0.3, name="poster")}
    if plot.dtype.kind == "i":  # word ids
        branches["plot"] = text_lstm(int(plot.max()) + 1, sequence_length=plot.shape[1],
                                     embedding_dim=64, units=(64 * width,), name="plot")
    else:
        branches["plot"] = tabular_mlp(plot.shape[1], units=(256 * width, 128), dropout=0.3,
                                       name="plot")
    return branches


def _mmimdb_f1(test, outputs):
    """Micro / macro / weighted / samples F1 of the genres (`outputs`: probabilities)."""
    from mmfusion.datasets.mmimdb import multilabel_f1

    return {"test_f1": multilabel_f1(test.labels, outputs)}


def _load_sentiment(name):
    def load(data_dir=None, seed=0, file="aligned_50.pkl"):
        from mmfusion.datasets import cmu_mosi

        loader = getattr(cmu_mosi, f"load_{name}")
        return loader("train", data_dir, file), loader("test", data_dir, file)

    return load


def _sentiment_branches(data, width=1):
    import keras

    from mmfusion.branches import from_model

    branches = {}
    for m, x in data.splits["train"][0].items():
        inputs = keras.Input(x.shape[1:])
        h = keras.layers.LSTM(32 * width, name=f"{m}_lstm")(keras.layers.Masking()(inputs))
        branches[m] = from_model(keras.Model(inputs, h), name=m)
    return branches


def _sentiment_metrics(test, outputs):
    """MAE, correlation, 2-class (Has0 / Non0), 5- and 7-class accuracy (`outputs`: scores)."""
    from mmfusion.datasets.cmu_mosi import sentiment_metrics

    return {"test_sentiment": sentiment_metrics(test.labels, np.ravel(outputs))}


def _load_hateful_memes(data_dir=None, seed=0, image_size=64, test_split="dev_seen",
                        max_examples=0):
    from mmfusion.datasets.hateful_memes import load_hateful_memes

    return tuple(load_hateful_memes(split, data_dir, image_size=image_size,
                                    max_examples=max_examples, seed=seed)
                 for split in ("train", test_split))


def _hateful_memes_branches(data, width=1):
    from mmfusion.branches import image_cnn, text_lstm

    images = data.splits["train"][0]["image"]
    return {"image": image_cnn(images.shape[1:], filters=(16 * width, 32 * width, 64 * width),
                               pooling="avg", embedding_dim=64, name="image"),
            "text": text_lstm(data.preprocessors["text"].vocabulary_size(),
                              sequence_length=MEME_TEXT_LENGTH, embedding_dim=64,
                              units=(64 * width,), name="text")}


MEME_TEXT_LENGTH = 24


def _meme_vectorizer(inputs):
    from mmfusion.branches import text_vectorizer

    return {"text": text_vectorizer(inputs["text"], sequence_length=MEME_TEXT_LENGTH)}


def _hateful_memes_auroc(test, outputs):
    """AUROC and accuracy of the hateful-class probability."""
    from mmfusion.datasets.hateful_memes import hateful_memes_metrics

    return {"test_hateful_memes": hateful_memes_metrics(test.labels, outputs)}


register(Task(
    "avmnist", _load_avmnist, _avmnist_branches, num_outputs=10, modalities=("image", "audio"),
    defaults={"fusion": "concat", "epochs": 8, "head_dropout": 0.2},
    description="AV-MNIST (MultiBench's .npy files): digit images + spoken-digit spectrograms"))
register(Task(
    "mmimdb", _load_mmimdb, _mmimdb_branches, num_outputs=23, head="multilabel",
    modalities=("poster", "plot"), breakdown=_mmimdb_f1,
    defaults={"fusion": "gmu", "epochs": 20, "head_dropout": 0.3},
    options={"poster": ("vgg_features", "poster input: vgg_features or images"),
             "plot": ("features", "plot input: features (word2vec mean) or sequences")},
    description="MM-IMDb (multimodal_imdb.hdf5): 23 movie genres from posters and plots"))
for _name, _title in (("cmu_mosi", "CMU-MOSI"), ("cmu_mosei", "CMU-MOSEI")):
    register(Task(
        _name, _load_sentiment(_name), _sentiment_branches, num_outputs=1, head="regression",
        modalities=("text", "audio", "vision"), breakdown=_sentiment_metrics,
        defaults={"fusion": "concat", "epochs": 20},
        options={"file": ("aligned_50.pkl", "feature pickle in <data_dir>/" + _name)},
        description=f"{_title} (MultiBench / MMSA feature pickles): sentiment in [-3, 3]"))
del _name, _title
register(Task(
    "hateful_memes", _load_hateful_memes, _hateful_memes_branches, num_outputs=2,
    modalities=("image", "text"), preprocess=_meme_vectorizer, breakdown=_hateful_memes_auroc,
    defaults={"fusion": "concat", "epochs": 8},
    options={"image_size": (64, "images are resized to this size"),
             "test_split": ("dev_seen", "annotation file used as the test split"),
             "max_examples": (0, "random memes kept per split (0: all)")},
    description="Hateful Memes (jsonl + img/): hateful or not, AUROC"))
