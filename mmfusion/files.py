"""Atomic file writes: every file a long job writes goes through `atomic_write`.

A temporary file in the same folder is written completely, flushed to disk
and then moved over the target with `os.replace`, so a process killed at any
moment leaves either the old file or the new one, never a partial one.
"""

import json
import os
import tempfile

__all__ = ["atomic_write", "save_model", "write_json", "write_text"]


def atomic_write(path, write, suffix=""):
    """Writes a file atomically: `write(temporary_path)`, then `os.replace`.

    Args:
        path: the final file (its folder is created if needed).
        write: callable writing the whole file at the path it is given.
        suffix: ending of the temporary name (some writers need one, e.g.
            `".weights.h5"` or `".keras"`).

    Example:

    >>> path = os.path.join(str(getfixture("tmp_path")), "a.txt")
    >>> atomic_write(path, lambda tmp: open(tmp, "w").write("done"))
    >>> open(path).read(), os.listdir(os.path.dirname(path))
    ('done', ['a.txt'])
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                                         dir=folder)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb+") as f:  # on disk before it replaces the old file
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_text(path, text):
    """Writes `text` to `path` atomically.

    Example:

    >>> path = os.path.join(str(getfixture("tmp_path")), "table.md")
    >>> write_text(path, "| a |")
    >>> open(path).read()
    '| a |'
    """
    def write(temporary):
        with open(temporary, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path, value, indent=2):
    """Writes `value` as JSON atomically.

    Example:

    >>> path = os.path.join(str(getfixture("tmp_path")), "metrics.json")
    >>> write_json(path, {"test_accuracy": 0.5})
    >>> json.load(open(path))
    {'test_accuracy': 0.5}
    """
    write_text(path, json.dumps(value, indent=indent))


def save_model(model, path):
    """`model.save(path)` atomically (`path` ends in `.keras`).

    Example:

    >>> import keras
    >>> path = os.path.join(str(getfixture("tmp_path")), "model.keras")
    >>> save_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), path)
    >>> keras.saving.load_model(path).count_params()
    3
    """
    atomic_write(path, model.save, suffix=".keras")
