"""Crash-safe search state: atomic writes, validated reads, consistent resumes.

Every file a search writes goes through `mmfusion.files.atomic_write` (a
temporary file in the same folder, flushed to disk, then `os.replace`), so a process killed at
any moment leaves either the old or the new file, never a partial one.
Readers (`read_json`, `load_weights`, `load_arrays`) turn a damaged file into
a `CorruptStateError` naming the file and how to recover.

`CrashSafeOracle` applies this to a KerasTuner oracle (its `oracle.json` and
every `trial.json`; KerasTuner's own `save_json` writes in place, and a kill
during a write leaves an empty file) and repairs the two windows a kill can
hit between its writes: a trial saved as finished while `oracle.json` still
lists it as running (it is not run again), and a trial saved as started
while `oracle.json` does not know it yet (its id is given to the next
trial, so it is neither lost nor counted twice).
"""

import json
import os

import keras_tuner

from mmfusion.files import atomic_write, write_json

__all__ = ["CorruptStateError", "CrashSafeOracle", "load_arrays", "load_weights", "read_json",
           "save_arrays", "save_weights"]

_STATUS = keras_tuner.engine.trial.TrialStatus


class CorruptStateError(RuntimeError):
    """A search file that cannot be read back (the message says how to recover).

    Example:

    >>> issubclass(CorruptStateError, RuntimeError)
    True
    """


def _corrupt(path, error, recovery):
    return CorruptStateError(f"Search state file '{path}' is damaged or incomplete "
                             f"({type(error).__name__}: {error}). {recovery}")


def read_json(path, recovery="Delete it (or start again with overwrite=True) to recover."):
    """Reads a JSON file written by `write_json`; a damaged file raises
    `CorruptStateError` naming it and `recovery`.

    Example:

    >>> import os
    >>> path = os.path.join(str(getfixture("tmp_path")), "empty.json")
    >>> _ = open(path, "w")
    >>> try:
    ...     read_json(path)
    ... except CorruptStateError as error:
    ...     print("empty.json' is damaged" in str(error))
    True
    """
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise _corrupt(path, error, recovery) from None


def save_weights(model, path):
    """`model.save_weights(path)`, atomically (`path` ends in `.weights.h5`).

    Example:

    >>> import os
    >>> from mmfusion.branches import tabular_mlp
    >>> path = os.path.join(str(getfixture("tmp_path")), "a.weights.h5")
    >>> save_weights(tabular_mlp(3, name="a"), path)
    >>> load_weights(tabular_mlp(3, name="a"), path)
    """
    atomic_write(path, model.save_weights, suffix=".weights.h5")


def load_weights(model, path, recovery="Delete it to train these weights again."):
    """`model.load_weights(path)`; a damaged file raises `CorruptStateError`.

    Example:

    >>> import os
    >>> from mmfusion.branches import tabular_mlp
    >>> path = os.path.join(str(getfixture("tmp_path")), "b.weights.h5")
    >>> _ = open(path, "wb").write(b"\\x89HDF")  # truncated
    >>> try:
    ...     load_weights(tabular_mlp(3, name="b"), path)
    ... except CorruptStateError as error:
    ...     print("Delete it" in str(error))
    True
    """
    try:
        model.load_weights(path)
    except Exception as error:  # h5py and Keras raise several types
        raise _corrupt(path, error, recovery) from None


def save_arrays(path, arrays):
    """Saves a dict of NumPy arrays as `.npz`, atomically.

    Example:

    >>> import os
    >>> import numpy as np
    >>> path = os.path.join(str(getfixture("tmp_path")), "x.npz")
    >>> save_arrays(path, {"a": np.arange(3)})
    >>> load_arrays(path)["a"].tolist()
    [0, 1, 2]
    """
    import numpy as np

    def write(temporary):
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_arrays(path, recovery="Delete it to compute it again."):
    """Reads every array of an `.npz` file; a damaged file raises `CorruptStateError`.

    Example:

    >>> import os
    >>> path = os.path.join(str(getfixture("tmp_path")), "bad.npz")
    >>> _ = open(path, "wb").write(b"PK\\x03\\x04")
    >>> try:
    ...     load_arrays(path)
    ... except CorruptStateError as error:
    ...     print("compute it again" in str(error))
    True
    """
    import numpy as np

    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except Exception as error:  # zipfile, pickle and value errors
        raise _corrupt(path, error, recovery) from None


class CrashSafeOracle:
    """Mixin (before the `keras_tuner.Oracle` class) writing the oracle's and
    trials' JSON atomically and reloading them validated and consistently.

    Example:

    >>> import keras_tuner
    >>> class SafeRandom(CrashSafeOracle, keras_tuner.oracles.RandomSearchOracle):
    ...     pass
    >>> oracle = SafeRandom(objective="val_accuracy", max_trials=2)
    >>> oracle._set_project_dir(str(getfixture("tmp_path")), "p")
    >>> oracle.save(); oracle.reload(); oracle.end_order
    []
    """

    _RECOVERY = ("Restore it from a backup, or start the search again with overwrite=True "
                 "(mmfusion search --overwrite).")

    def save(self):
        write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                   trial.get_state())

    def reload(self):
        project = self._project_dir
        saved = {}
        for name in sorted(os.listdir(project)):
            path = os.path.join(project, name, "trial.json")
            if name.startswith("trial_") and os.path.exists(path):
                trial = keras_tuner.engine.trial.Trial.from_state(
                    read_json(path, recovery=self._RECOVERY))
                saved[trial.trial_id] = trial
        fname = self._get_oracle_fname()
        state = read_json(fname, recovery=self._RECOVERY)
        missing = sorted(set(state["start_order"]) - set(saved))
        if missing:
            raise CorruptStateError(f"Search state file '{fname}' lists trials {missing} whose "
                                    f"trial.json is missing in '{project}'. {self._RECOVERY}")
        # A trial.json oracle.json does not know (killed between the two writes
        # of create_trial) is left out: the next trial gets its id and overwrites it.
        known = set(state["start_order"])
        self.trials = {i: t for i, t in saved.items() if i in known}
        try:
            self.set_state(state)
        except KeyError as error:
            raise CorruptStateError(f"Search state file '{fname}' lacks {error}: it was "
                                    f"written by another oracle. {self._RECOVERY}") from None
        ended = set(self.end_order)
        for tuner_id, trial in list(self.ongoing_trials.items()):
            del self.ongoing_trials[tuner_id]
            if trial.status in (_STATUS.COMPLETED, _STATUS.FAILED):
                if trial.trial_id not in ended:  # killed between the two writes of end_trial
                    self.end_order.append(trial.trial_id)
                    self._run_times[trial.trial_id] += 1
            elif trial.trial_id not in self._retry_queue:
                self._retry_queue.append(trial.trial_id)  # killed while it ran: run it again
