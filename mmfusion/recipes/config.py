"""Training a fusion model on your own files, described by a TOML file.

A table (CSV, or parquet when pandas or pyarrow is installed) holds one row
per example: numeric columns, image file paths (relative to the table's
folder), texts and a label. The configuration names the columns of each
modality, the branches' sizes, the fusion and the training settings:

```toml
data = "listings.csv"          # relative to the configuration file
label = "category"
task = "classification"        # or "regression"
[modalities.tabular]           # kind = the section name unless `kind = ...`
columns = ["price", "weight"]
[modalities.image]
column = "image_path"
size = [32, 32]
[modalities.text]
column = "description"
[model]
fusion = "gmu"
modality_dropout = 0.3
[training]
epochs = 5
output = "runs/listings"
```

Rows without an image (empty cell, missing file), without a text (empty
cell) or with a non-finite number are marked absent in the model's
`presence` input (`mmfusion.datasets.presence_from`); the model is built with
`build_fusion_model(..., presence=True)`, so absent rows' placeholders never
reach a branch. Numeric columns are standardized with the training rows'
statistics, texts tokenized by a `text_vectorizer` adapted on the training
rows. The output folder receives `model.keras`, `metrics.json` (validation
and test metrics, test accuracy per presence pattern), `preprocessing.json`
(class names, standardization statistics, text vocabularies) and `logs/`.
"""

import csv
import os
import sys

import numpy as np

from mmfusion.datasets.presence import PRESENCE, is_missing, presence_from
from mmfusion.datasets.split import split_indices
from mmfusion.files import write_json

__all__ = ["KINDS", "load_config", "prepare_data", "train_from_config"]

_REQUIRED = object()


def _text(value):
    if not isinstance(value, str) or not value:
        raise TypeError("must be a non-empty string")
    return value


def _texts(value):
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise TypeError("must be a non-empty list of column names")
    return list(value)


def _whole(minimum, what):
    """A check for ints >= `minimum` (`what` names them in the error)."""
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise TypeError(f"must be a {what} integer")
        return value
    return check


_integer = _whole(1, "positive")
_seed = _whole(0, "non-negative")


def _integers(value):
    if not isinstance(value, list) or not value:
        raise TypeError("must be a non-empty list of positive integers")
    return [_integer(v) for v in value]


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise TypeError("must be a positive number")
    return float(value)


def _weight(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise TypeError("must be a number >= 0")
    return float(value)


def _rate(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise TypeError("must be a fraction in [0, 1)")
    return float(value)


def _fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise TypeError("must be a fraction in (0, 1)")
    return float(value)


def _flag(value):
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _choice(*names):
    def check(value):
        if value not in names:
            raise TypeError(f"must be one of {', '.join(map(repr, names))}")
        return value
    return check


# Keys of each modality kind: key -> (check, default).
KINDS = {
    "tabular": {"columns": (_texts, _REQUIRED), "units": (_integers, [64, 32]),
                "dropout": (_rate, 0.0)},
    "image": {"column": (_text, _REQUIRED), "size": (_integers, [32, 32]),
              "color_mode": (_choice("rgb", "grayscale"), "rgb"),
              "filters": (_integers, [16, 32]), "pooling": (_choice("flatten", "avg", "max"), "flatten"),
              "embedding_dim": (_integer, None), "dropout": (_rate, 0.0)},
    "text": {"column": (_text, _REQUIRED), "sequence_length": (_integer, 16),
             "max_tokens": (_integer, None), "embedding_dim": (_integer, 32),
             "units": (_integers, [32]), "bidirectional": (_flag, True), "dropout": (_rate, 0.0)},
}
_TOP = {"data": (_text, _REQUIRED), "label": (_text, _REQUIRED),
        "task": (_choice("classification", "regression"), "classification")}
_MODEL = {"fusion": (_text, "concat"), "placement": (_choice("early", "intermediate", "late"),
                                                     "intermediate"),
          "units": (_integer, 64), "modality_dropout": (_rate, 0.0),
          "unimodal_loss": (_weight, 0.0), "unimodal_fallback": (_flag, False),
          "head_units": (_integers, [64]), "head_dropout": (_rate, 0.0)}
_TRAINING = {"epochs": (_integer, 8), "batch_size": (_integer, 32), "learning_rate": (_number, 1e-3),
             "validation": (_fraction, 0.15), "test": (_fraction, 0.15), "seed": (_seed, 0),
             "output": (_text, None)}


def _section(values, schema, where, source, extra=()):
    """Checks one table of the configuration against its schema; fills defaults."""
    label = f"[{where}] " if where else ""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: {label.strip() or 'the file'} must be a table.")
    unknown = sorted(set(values) - set(schema) - set(extra))
    if unknown:
        raise ValueError(f"{source}: {label}unknown key(s) {', '.join(unknown)}; "
                         f"keys: {', '.join(sorted([*schema, *extra]))}.")
    out = {}
    for key, (check, default) in schema.items():
        if key not in values:
            if default is _REQUIRED:
                raise ValueError(f"{source}: {label}{key}: missing (required).")
            out[key] = default
            continue
        try:
            out[key] = check(values[key])
        except TypeError as error:
            raise ValueError(f"{source}: {label}{key}: {error}; got {values[key]!r}.") from None
    return out


def _read_toml(path):
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the configuration ({error.strerror}).") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error}).") from None


def _check_file(path, source):
    if not os.path.isfile(path):
        raise ValueError(f"{source}: data: no file {path}.")


def _read_columns(path, source):
    """The column names of a CSV file (its header row only) or a parquet file."""
    _check_file(path, source)
    if path.endswith((".parquet", ".pq")):
        return _read_table(path, source)[0]
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _read_table(path, source):
    """`(column names, dict column -> list of values)` of a CSV or parquet file."""
    _check_file(path, source)
    if path.endswith((".parquet", ".pq")):
        try:
            import pandas
        except ImportError:
            pandas = None
        if pandas is not None:
            frame = pandas.read_parquet(path)
            return list(frame.columns), {c: frame[c].tolist() for c in frame.columns}
        try:
            import pyarrow.parquet
        except ImportError:
            raise ValueError(f"{source}: data: reading parquet ({path}) needs pandas or pyarrow "
                             "(pip install pyarrow), or give a CSV file.") from None
        table = pyarrow.parquet.read_table(path).to_pydict()
        return list(table), table
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    return columns, {c: [row[c] for row in rows] for c in columns}


def load_config(path):
    """Reads and checks a training configuration (TOML).

    Every key is checked: unknown keys, wrong types, fractions outside
    (0, 1), unknown modality kinds or fusion layers, and columns that the
    data file does not have are `ValueError`s naming the file, the section
    and the key. Relative paths (`data`, `training.output`) are resolved
    against the configuration's folder.

    Args:
        path: the `.toml` file, or a dict of the same content (relative paths
            then resolved against the current folder).

    Returns:
        The checked configuration: a dict with every default filled in,
        `"source"` (the file), `"data"` and `"output"` as absolute paths, and
        `"modalities"` a dict name -> settings including its `"kind"`.

    Example:

    >>> root = getfixture("tmp_path")
    >>> _ = (root / "rows.csv").write_text("price,label\\n1.5,a\\n")
    >>> _ = (root / "run.toml").write_text(
    ...     'data = "rows.csv"\\nlabel = "label"\\n[modalities.tabular]\\ncolumns = ["price"]\\n'
    ...     '[training]\\nvalidation = 1.5\\n')
    >>> load_config(str(root / "run.toml"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...run.toml: [training] validation: must be a fraction in (0, 1); got 1.5.
    """
    if isinstance(path, dict):
        raw, source, folder = path, "<config>", os.getcwd()
    else:
        raw, source = _read_toml(path), str(path)
        folder = os.path.dirname(os.path.abspath(path))
    config = _section(raw, _TOP, "", source, extra=("modalities", "model", "training"))
    config.update(source=source, data=os.path.join(folder, config["data"]))
    config["model"] = _section(raw.get("model", {}), _MODEL, "model", source)
    config["training"] = _section(raw.get("training", {}), _TRAINING, "training", source)
    training = config["training"]
    if training["validation"] + training["test"] >= 1:
        raise ValueError(f"{source}: [training] validation, test: their sum must be below 1 "
                         f"(no training rows left); got {training['validation']} + "
                         f"{training['test']}.")
    name = os.path.splitext(os.path.basename(source))[0].strip("<>")
    training["output"] = os.path.join(folder, training["output"] or os.path.join("runs", name))

    modalities = raw.get("modalities")
    if not isinstance(modalities, dict) or not modalities:
        raise ValueError(f"{source}: modalities: missing; add at least one [modalities.NAME] "
                         f"section (kinds: {', '.join(KINDS)}).")
    columns = _read_columns(config["data"], source)
    config["modalities"] = {}
    for modality, values in modalities.items():
        where = f"modalities.{modality}"
        kind = values.get("kind", modality) if isinstance(values, dict) else modality
        if kind not in KINDS:
            raise ValueError(f"{source}: [{where}] kind: unknown modality kind '{kind}'; kinds: "
                             f"{', '.join(KINDS)} (the section name, or kind = ...).")
        settings = _section(values, KINDS[kind], where, source, extra=("kind",))
        for key in ("column", "columns"):
            wanted = settings.get(key)
            missing = [c for c in ([wanted] if isinstance(wanted, str) else wanted or [])
                       if c not in columns]
            if missing:
                raise ValueError(f"{source}: [{where}] {key}: no column {missing} in "
                                 f"{config['data']}; its columns: {', '.join(columns)}.")
        if kind == "image" and len(settings["size"]) != 2:
            raise ValueError(f"{source}: [{where}] size: must be [height, width]; "
                             f"got {settings['size']}.")
        config["modalities"][modality] = {"kind": kind, **settings}
    if config["label"] not in columns:
        raise ValueError(f"{source}: label: no column '{config['label']}' in {config['data']}; "
                         f"its columns: {', '.join(columns)}.")
    if len(config["modalities"]) > 1:
        from mmfusion.recipes.train import check_fusion

        try:
            check_fusion(config["model"]["fusion"], config["model"]["placement"])
        except ValueError as error:
            raise ValueError(f"{source}: [model] fusion: {error}") from None
    return config


def _numbers(values, column, source):
    def parse(value):
        if is_missing(value):
            return np.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: column '{column}' holds {value!r}, not a number.") from None
    return np.array([parse(v) for v in values], "float32")


def _images(paths, settings, root):
    """Images of the rows whose file exists (`None` elsewhere), scaled to [0, 1]."""
    import keras

    exists = presence_from({"path": np.array(paths, dtype=object)}, file_root=root)[PRESENCE][:, 0]
    images = []
    for path, ok in zip(paths, exists):
        if not ok:
            images.append(None)
            continue
        try:
            image = keras.utils.load_img(os.path.join(root, str(path)),
                                         color_mode=settings["color_mode"],
                                         target_size=tuple(settings["size"]))
        except Exception as error:  # PIL's errors are not ValueErrors
            raise ValueError(f"cannot read image {path!r} ({error}).") from None
        images.append(keras.utils.img_to_array(image, dtype="float32") / 255.0)
    return images


def _labels(values, task, column, source):
    """`(labels array, class names or None)`."""
    missing = [i for i, v in enumerate(values) if is_missing(v)]
    if missing:
        raise ValueError(f"{source}: label: column '{column}' is empty in data row(s) "
                         f"{[i + 1 for i in missing[:5]]}.")
    if task == "regression":
        return _numbers(values, column, source), None
    names = [str(v).strip() for v in values]
    try:
        classes = sorted(set(names), key=int)
        classes = [int(c) for c in classes]
        index = {str(c): i for i, c in enumerate(classes)}
        names = [str(int(v)) for v in names]
    except ValueError:
        classes = sorted(set(names))
        index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in names], "int32"), classes


def prepare_data(config):
    """Reads the data file of a checked configuration into model-ready splits.

    Args:
        config: the result of `load_config`.

    Returns:
        A dict with `"splits"` (`"train"`, `"validation"`, `"test"` ->
        `(inputs dict, labels)`: one array per modality, token ids for texts,
        standardized numbers, `[0, 1]` images, and the `"presence"` mask whose
        columns follow the modalities' order), `"preprocessing"` (what
        `preprocessing.json` holds) and `"vectorizers"` (modality ->
        adapted `TextPreprocessor`).

    Example:

    >>> root = getfixture("tmp_path")
    >>> rows = "".join(f"{i},{'red' if i % 2 else ''},{i % 2}\\n" for i in range(20))
    >>> _ = (root / "rows.csv").write_text("price,note,label\\n" + rows)
    >>> config = load_config({"data": str(root / "rows.csv"), "label": "label",
    ...                       "modalities": {"tabular": {"columns": ["price"]},
    ...                                      "text": {"column": "note"}}})
    >>> data = prepare_data(config)
    >>> x, y = data["splits"]["test"]
    >>> sorted(x), x["presence"][:, 1].tolist() == y.tolist()  # no note: label 0
    (['presence', 'tabular', 'text'], True)
    """
    source = config["source"]
    _, table = _read_table(config["data"], source)
    root = os.path.dirname(config["data"])
    labels, classes = _labels(table[config["label"]], config["task"], config["label"], source)
    columns = {}
    for name, settings in config["modalities"].items():
        if settings["kind"] == "tabular":
            columns[name] = np.stack([_numbers(table[c], c, source) for c in settings["columns"]],
                                     axis=1)
        elif settings["kind"] == "image":
            try:
                columns[name] = _images(table[settings["column"]], settings, root)
            except ValueError as error:
                raise ValueError(f"{source}: [modalities.{name}] column: {error}") from None
        else:
            columns[name] = np.array(["" if is_missing(v) else str(v)
                                      for v in table[settings["column"]]], dtype=object)
    clean = presence_from(columns, modalities=list(columns))
    training = config["training"]
    parts = split_indices(len(labels), training["validation"], training["test"], training["seed"],
                          stratify=labels if classes is not None else None)
    train, present = parts["train"], clean[PRESENCE]
    preprocessing = {"classes": classes, "modalities": list(columns), "standardize": {},
                     "text_vocabulary": {}}
    vectorizers = {}
    for i, (name, settings) in enumerate(config["modalities"].items()):
        rows = train[present[train, i] > 0]
        if settings["kind"] == "tabular":
            values = clean[name][rows] if len(rows) else np.zeros((1, clean[name].shape[1]))
            mean, std = values.mean(axis=0), values.std(axis=0)
            std = np.where(std > 1e-6, std, 1.0)
            clean[name] = np.where(present[:, i:i + 1] > 0, (clean[name] - mean) / std,
                                   0).astype("float32")
            preprocessing["standardize"][name] = {"columns": settings["columns"],
                                                  "mean": mean.tolist(), "std": std.tolist()}
        elif settings["kind"] == "text":
            import keras

            from mmfusion.branches import text_vectorizer

            vectorizers[name] = text_vectorizer(clean[name][rows].tolist() or [""],
                                                max_tokens=settings["max_tokens"],
                                                sequence_length=settings["sequence_length"])
            clean[name] = keras.ops.convert_to_numpy(
                vectorizers[name](clean[name].tolist())).astype("int32")
            preprocessing["text_vocabulary"][name] = [str(t) for t in
                                                      vectorizers[name].get_vocabulary()]
    splits = {part: ({k: v[index] for k, v in clean.items()}, labels[index])
              for part, index in parts.items()}
    return {"splits": splits, "preprocessing": preprocessing, "vectorizers": vectorizers}


def _branches(config, data):
    from mmfusion.branches import image_cnn, tabular_mlp, text_lstm

    branches = {}
    x = data["splits"]["train"][0]
    for name, s in config["modalities"].items():
        if s["kind"] == "tabular":
            branches[name] = tabular_mlp(x[name].shape[1], units=tuple(s["units"]),
                                         dropout=s["dropout"], name=name)
        elif s["kind"] == "image":
            branches[name] = image_cnn(x[name].shape[1:], filters=tuple(s["filters"]),
                                       pooling=s["pooling"], embedding_dim=s["embedding_dim"],
                                       dropout=s["dropout"], presence=True, name=name)
        else:
            branches[name] = text_lstm(data["vectorizers"][name].vocabulary_size(),
                                       s["sequence_length"], s["embedding_dim"],
                                       units=tuple(s["units"]), bidirectional=s["bidirectional"],
                                       dropout=s["dropout"], name=name)
    return branches


def _by_presence(model, inputs, labels, names, task):
    """Test metric (accuracy or MAE) per presence pattern, e.g. `"image+text"`."""
    predictions = np.asarray(model.predict(inputs, verbose=0))
    if task == "classification":
        scores = (predictions.argmax(axis=1) == labels).astype(float)
    else:
        scores = np.abs(predictions.reshape(len(labels)) - labels)
    patterns = ["+".join(n for n, p in zip(names, row) if p) or "none"
                for row in inputs[PRESENCE] > 0]
    metric = "accuracy" if task == "classification" else "mae"
    return {pattern: {"rows": int(sum(p == pattern for p in patterns)),
                      metric: float(np.mean([s for s, p in zip(scores, patterns) if p == pattern]))}
            for pattern in sorted(set(patterns))}


def train_from_config(config, verbose=2):
    """Trains, saves and evaluates a fusion model described by a configuration.

    Args:
        config: a `.toml` path or dict (see `load_config`), or the result of
            `load_config`.
        verbose: 0 silent, 1 a summary, 2 also one line per epoch.

    Returns:
        The metrics dict, also written to `OUTPUT/metrics.json`: the
        configuration, `validation_*` and `test_*` metrics (the validation
        rows are not test rows), `test_by_presence` (per pattern of present
        modalities: rows and accuracy, or MAE for regression), the per-epoch
        `history`, `parameters`, `train_seconds`, `rows` per split and
        `model_path`.

    Example:

    >>> root = getfixture("tmp_path")
    >>> rows = "".join(f"{i % 2 + 0.1 * (i % 3)},{'red' if i % 2 else 'blue'},{i % 2}\\n"
    ...                for i in range(60))
    >>> _ = (root / "rows.csv").write_text("price,note,label\\n" + rows)
    >>> _ = (root / "run.toml").write_text(
    ...     'data = "rows.csv"\\nlabel = "label"\\n[modalities.tabular]\\ncolumns = ["price"]\\n'
    ...     'units = [8]\\n[modalities.text]\\ncolumn = "note"\\nembedding_dim = 4\\nunits = [4]\\n'
    ...     '[model]\\nunits = 8\\nhead_units = [8]\\n[training]\\nepochs = 2\\n')
    >>> metrics = train_from_config(str(root / "run.toml"), verbose=0)
    >>> sorted(os.listdir(root / "runs" / "run"))
    ['logs', 'metrics.json', 'model.keras', 'preprocessing.json']
    >>> metrics["rows"], list(metrics["test_by_presence"])
    ({'train': 44, 'validation': 8, 'test': 8}, ['tabular+text'])
    """
    if not (isinstance(config, dict) and "source" in config):
        config = load_config(config)  # before Keras is imported: bad files fail at once
    import keras

    from mmfusion.compose import build_fusion_model
    from mmfusion.datasets.pipelines import make_dataset
    from mmfusion.recipes.train import fit_and_evaluate, write_metrics

    model_settings, training = config["model"], config["training"]
    keras.utils.set_random_seed(training["seed"])
    data = prepare_data(config)
    classes = data["preprocessing"]["classes"]
    names = list(config["modalities"])
    fusion = model_settings["fusion"] if len(names) > 1 else None
    model = build_fusion_model(
        _branches(config, data), fusion, head=config["task"],
        num_outputs=len(classes) if classes is not None else 1, units=model_settings["units"],
        placement=model_settings["placement"] if fusion else "intermediate",
        head_units=tuple(model_settings["head_units"]), head_dropout=model_settings["head_dropout"],
        presence=True, modality_dropout=model_settings["modality_dropout"],
        unimodal_loss=model_settings["unimodal_loss"] if fusion else 0.0,
        unimodal_fallback=model_settings["unimodal_fallback"] and bool(fusion),
        name=f"config_{fusion or 'unimodal'}")
    splits = data["splits"]
    datasets = {part: make_dataset(x, y, training["batch_size"] if part == "train" else 256,
                                   shuffle=part == "train", seed=training["seed"])
                for part, (x, y) in splits.items()}
    folder = training["output"]
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "preprocessing.json"), data["preprocessing"])
    metrics = {"config": dict(config), "rows": {
        part: int(len(y)) for part, (_, y) in splits.items()}}
    metrics.update(fit_and_evaluate(model, datasets, config["task"], folder,
                                    training["learning_rate"], training["epochs"], verbose))
    metrics["test_by_presence"] = _by_presence(model, *splits["test"], names, config["task"])
    write_metrics(folder, metrics, config["task"], verbose)
    return metrics
