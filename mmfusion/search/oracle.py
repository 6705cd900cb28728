"""`MFASOracle`: sequential model-based fusion-architecture search (MFAS) in KerasTuner.

The search (Pérez-Rúa et al., "MFAS: Multimodal Fusion Architecture Search",
CVPR 2019, algorithm 1) runs in *steps*. Step 1 evaluates one-layer
architectures (all of them, or `initial_samples` drawn at random). Step
`l + 1` extends each of the `top_k` best architectures of length `l` by one
more layer (every layer option), scores the unseen extensions with the
surrogate (`mmfusion.search.surrogate.Surrogate`, retrained on every
observation so far) and draws `samples_per_step` of them without replacement
with probability `softmax(z / T)`, `z` the standardized predictions
(Gumbel-top-k sampling). After length `max_layers` a new *round* starts again
at length 1, among the one-layer architectures not yet evaluated. The search stops when a whole
round finds nothing new (or at `max_trials`).

Temperature schedule: the `s`-th surrogate-guided step (`s = 0, 1, ...`,
counted over all rounds) samples with
`T_s = max(min_temperature, temperature * temperature_decay ** s)`: high
early (near-uniform exploration), then exploiting the surrogate's ranking.

Each trial's other hyperparameters (units, learning rate, ...) are drawn at
random from their declared ranges. An architecture is never proposed twice.
A step only starts once every trial of the previous step has ended; a worker
asking for a trial meanwhile gets status `"IDLE"` (see `MFASTuner`).

Resuming: `get_state` holds, as JSON, the queue of the current step, the
trials in flight, every visited architecture, the (architecture, score)
observations the surrogate trains on, the step / length / round counters and
the random generator state, so a search killed at any point resumes with
`overwrite=False` without repeating or losing a finished trial (a trial that
was running is run again under its own id).
"""

import keras_tuner
import numpy as np

from mmfusion.search.space import architecture_key
from mmfusion.search.surrogate import Surrogate

__all__ = ["MFASOracle"]

_STATUS = keras_tuner.engine.trial.TrialStatus


class MFASOracle(keras_tuner.Oracle):
    """Multimodal fusion architecture search as a KerasTuner `Oracle`.

    Args:
        space: a `mmfusion.search.FusionSpace` (taps, fusion types,
            activations, maximum number of fusion layers).
        objective: the KerasTuner objective (e.g. `"val_accuracy"`).
        max_trials: maximum number of trials.
        initial_samples: how many one-layer architectures the first step
            evaluates (None: all of them, as in MFAS).
        samples_per_step: architectures evaluated per later step.
        top_k: how many of the best architectures of length `l` are extended
            to length `l + 1`.
        temperature: sampling temperature of the first guided step.
        temperature_decay: factor applied to the temperature at every guided step.
        min_temperature: lower bound of the temperature.
        surrogate_units: LSTM size of the surrogate.
        surrogate_epochs: training epochs of the surrogate per step.
        seed: random seed (architecture sampling, other hyperparameters).
        **kwargs: other `keras_tuner.Oracle` arguments.

    Example:

    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]},
    ...                     fusions=["concat"], activations=["relu"], max_layers=2)
    >>> oracle = MFASOracle(space, objective="val_accuracy", max_trials=10, seed=1)
    >>> oracle.temperature_at(0), oracle.temperature_at(2)
    (1.0, 0.25)
    """

    def __init__(self, space, objective=None, max_trials=None, initial_samples=None,
                 samples_per_step=8, top_k=3, temperature=1.0, temperature_decay=0.5,
                 min_temperature=0.05, surrogate_units=32, surrogate_epochs=150,
                 seed=None, **kwargs):
        super().__init__(objective=objective, max_trials=max_trials, seed=seed, **kwargs)
        self.space = space
        self.initial_samples = initial_samples
        self.samples_per_step = samples_per_step
        self.top_k = top_k
        self.temperature = temperature
        self.temperature_decay = temperature_decay
        self.min_temperature = min_temperature
        self._rng = np.random.default_rng(self.seed)
        self._queue = []          # architectures of the current step, to propose
        self._pending = {}        # trial_id -> architecture, proposed and not ended
        self._visited = set()     # keys of every architecture ever queued
        self._observations = []   # [architecture, score] of completed trials
        self._length = 0          # architecture length of the current step
        self._round = 0           # how many times the lengths 1..max_layers were run
        self._guided_steps = 0    # surrogate-guided steps so far (temperature index)
        self.surrogate_units = surrogate_units
        self.surrogate_epochs = surrogate_epochs
        self.surrogate = None     # built on first use, with the (restored) seed

    def temperature_at(self, step):
        """The sampling temperature of the `step`-th surrogate-guided step."""
        return max(self.min_temperature, self.temperature * self.temperature_decay ** step)

    # ----------------------------------------------------------------- search
    def populate_space(self, trial_id):
        self._collect()
        if not self._queue:
            if self._pending:
                return {"status": _STATUS.IDLE}
            self._next_step()
        if not self._queue:
            return {"status": _STATUS.STOPPED}
        architecture = self._queue.pop(0)
        self._pending[trial_id] = architecture
        return {"status": _STATUS.RUNNING, "values": self._values(architecture)}

    def _collect(self):
        """Moves ended trials from `_pending` to the observations."""
        for trial_id in list(self._pending):
            trial = self.trials.get(trial_id)
            status = getattr(trial, "status", None)
            if status == _STATUS.COMPLETED and np.isfinite(trial.score):
                sign = 1.0 if self.objective.direction == "max" else -1.0
                self._observations.append([self._pending.pop(trial_id), sign * float(trial.score)])
            elif status == _STATUS.FAILED:
                del self._pending[trial_id]

    def score_trial(self, trial):
        super().score_trial(trial)
        self._collect()  # before `end_trial` saves the state

    def _values(self, architecture):
        """Hyperparameter values: the architecture's, then random active others."""
        values = self.space.values(architecture)
        for hp in self.hyperparameters.space:
            if hp.name not in values and all(c.is_active(values) for c in hp.conditions):
                values[hp.name] = hp.random_sample(int(self._rng.integers(2**31)))
        return values

    def _next_step(self):
        """Fills `_queue` with the next step's architectures (empty: exhausted)."""
        for _ in range(self.space.max_layers + 1):
            self._length += 1
            if self._length > self.space.max_layers:
                self._length, self._round = 1, self._round + 1
            candidates = [c for c in self._candidates(self._length)
                          if architecture_key(c) not in self._visited]
            if candidates:
                break
        else:
            return
        if self._round == 0 and self._length == 1:
            n = len(candidates) if self.initial_samples is None else self.initial_samples
            chosen = self._rng.permutation(len(candidates))[:n]
        else:
            chosen = self._sample(candidates)
        self._queue = [candidates[i] for i in chosen]
        self._visited.update(architecture_key(a) for a in self._queue)

    def _candidates(self, length):
        if length == 1:
            return [[option] for option in self.space.layer_options(1)]
        parents = sorted((o for o in self._observations if len(o[0]) == length - 1),
                         key=lambda o: -o[1])[:self.top_k]
        options = self.space.layer_options(length)
        return [parent + [option] for parent, _ in parents for option in options]

    def _sample(self, candidates):
        """Indices of `samples_per_step` candidates drawn without replacement,
        with probability `softmax(z / T)` (Gumbel-top-k: exact and stable at
        any temperature)."""
        n = min(self.samples_per_step, len(candidates))
        if not self._observations:
            return self._rng.permutation(len(candidates))[:n]
        predicted = self.predict(candidates)
        z = (predicted - predicted.mean()) / (predicted.std() or 1.0)
        logits = z / self.temperature_at(self._guided_steps)
        self._guided_steps += 1
        return np.argsort(-(logits + self._rng.gumbel(size=len(candidates))))[:n]

    def predict(self, architectures):
        """Surrogate-predicted scores of `architectures` (higher is better for
        both objective directions), after training it on the observations."""
        codes = [a for a, _ in self._observations]
        scores = [s for _, s in self._observations]
        if self.surrogate is None:
            self.surrogate = Surrogate(self.surrogate_units, self.surrogate_epochs,
                                       seed=self.seed)
        self.surrogate.fit(self.space.encode(codes), scores)
        return self.surrogate.predict(self.space.encode(architectures))

    def best_architecture(self):
        """The best architecture evaluated so far (None before any result)."""
        if not self._observations:
            return None
        return max(self._observations, key=lambda o: o[1])[0]

    # ------------------------------------------------------------------ state
    def get_state(self):
        state = super().get_state()
        state["mfas"] = {
            "queue": self._queue,
            "pending": self._pending,
            "visited": sorted(self._visited),
            "observations": self._observations,
            "length": self._length,
            "round": self._round,
            "guided_steps": self._guided_steps,
            "rng": self._rng.bit_generator.state,
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        mfas = state["mfas"]
        self._queue = mfas["queue"]
        self._pending = mfas["pending"]
        self._visited = set(mfas["visited"])
        self._observations = mfas["observations"]
        self._length = mfas["length"]
        self._round = mfas["round"]
        self._guided_steps = mfas["guided_steps"]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = mfas["rng"]
        self.surrogate = None
