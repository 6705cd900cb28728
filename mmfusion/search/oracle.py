"""`MFASOracle`: sequential model-based fusion-architecture search (MFAS) in KerasTuner.

The search follows Pérez-Rúa et al., "MFAS: Multimodal Fusion Architecture
Search", CVPR 2019 (algorithm 1), with the authors' defaults. It runs in
*steps*, each a set of architectures trained before the next step starts:

1. **First step**: every one-layer architecture, when that is at most half
   of `max_trials`; otherwise a *stratified share* of `max_trials // 3`
   (at least 2) of them: every choice (each modality's tap, the fusion type,
   the activation) is used as evenly as the share allows, values shuffled
   independently per choice (a Latin-hypercube design over the choices).
2. **Progressive steps** (iteration 1): step `l` (`l = 2 .. max_layers`)
   extends each architecture the previous step trained by every possible
   layer `l`; the surrogate scores these candidates and `K` of them
   (`samples_per_step`) are drawn without replacement with probability
   `p_i ∝ (a_i / Σ_j a_j) ** (1 / T)`, `a_i` the predicted scores.
3. **Refining iterations** (2, 3, ...): the previous step's full-length
   architectures get layer `l = 1 .. max_layers` replaced by every possible
   layer `l`, scored and sampled the same way.

The surrogate (`mmfusion.search.surrogate.Surrogate`) is one model for the
whole search, trained before each sampling step on every observation so far.
The temperature goes geometrically from `temperature` (10) to
`min_temperature` (0.2) over the search's sampling steps (their number
follows from `max_trials`, the first step's size and `K`). The sampling rule
needs positive merits `a`: a maximized objective (an accuracy, an AUC) is
its own merit, a minimized one (a loss, an MSE) has merit `1 / loss`
(`MFASOracle.log_merits`); predictions at or below 0 are shifted to be
positive first. When a step has fewer unseen candidates than
it needs, random unseen architectures of the same length fill it (of any
length once those run out), so the search runs exactly `max_trials` trials
unless the whole space is exhausted, and every architecture of the space can
be reached. An architecture is never proposed twice. Our extension of MFAS:
each layer also chooses its fusion type. Other hyperparameters (units,
learning rate) are drawn at random for each trial (search them in every
oracle or in none when comparing oracles).

A step starts once every trial of the previous one has ended; a worker
asking meanwhile gets status `"IDLE"` (`MFASTuner` waits and asks again).

State: the observations are the base class's completed trials (in
`end_order`); the pending ones are its `ongoing_trials`; `get_state` adds
only the steps made so far, the random generator and the surrogate, so a
search killed at any moment resumes (`overwrite=False`) without repeating or
losing a finished trial. Files are written atomically
(`mmfusion.search.state.CrashSafeOracle`).
"""

import math

import keras_tuner
import numpy as np

from mmfusion.search.baselines import kerastuner_seed
from mmfusion.search.space import architecture_key
from mmfusion.search.state import CrashSafeOracle
from mmfusion.search.surrogate import Surrogate

__all__ = ["MFASOracle"]

_STATUS = keras_tuner.engine.trial.TrialStatus
_ENUMERABLE = 200_000  # spaces up to this size are enumerated to fill a step


class MFASOracle(CrashSafeOracle, keras_tuner.Oracle):
    """Multimodal fusion architecture search as a KerasTuner `Oracle`.

    Args:
        space: a `mmfusion.search.FusionSpace` (taps, fusion types,
            activations, maximum number of fusion layers).
        objective: the KerasTuner objective (e.g. `"val_accuracy"`).
        max_trials: the number of trials (required: it sizes the steps).
        initial_samples: size of the first step (default: every one-layer
            architecture when that is at most half the budget, else a
            stratified share of `max_trials // 3`).
        samples_per_step: `K`, architectures sampled per later step
            (default: the authors' 15, fewer when the budget would otherwise
            allow fewer than `max_layers + 1` sampling steps).
        temperature: temperature of the first sampling step (authors: 10).
        min_temperature: temperature of the last sampling step (authors: 0.2).
        surrogate_units: LSTM size of the surrogate.
        surrogate_epochs: surrogate training steps before each sampling step
            (authors: 50).
        seed: random seed (0 is a seed; None picks one).
        **kwargs: other `keras_tuner.Oracle` arguments.

    Example:

    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]},
    ...                     fusions=["concat"], activations=["relu"], max_layers=2)
    >>> oracle = MFASOracle(space, objective="val_accuracy", max_trials=10, seed=1)
    >>> oracle.initial_step_size(), oracle.step_size(), oracle.sampling_steps()
    (2, 2, 4)
    >>> [round(oracle.temperature_at(s), 2) for s in range(4)]
    [10.0, 2.71, 0.74, 0.2]
    """

    def __init__(self, space, objective=None, max_trials=None, initial_samples=None,
                 samples_per_step=None, temperature=10.0, min_temperature=0.2,
                 surrogate_units=32, surrogate_epochs=50, seed=None, **kwargs):
        if not max_trials:
            raise ValueError("MFASOracle needs `max_trials` (the search budget sizes its steps); "
                             f"received max_trials={max_trials!r}.")
        super().__init__(objective=objective, max_trials=max_trials,
                         seed=kerastuner_seed(seed), **kwargs)
        self.space = space
        self.initial_samples = initial_samples
        self.samples_per_step = samples_per_step
        self.temperature = temperature
        self.min_temperature = min_temperature
        self.surrogate = Surrogate(surrogate_units, surrogate_epochs, seed=self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._steps = []  # {"iteration", "position", "temperature", "architectures"}

    # ------------------------------------------------------------- schedule
    def initial_step_size(self):
        """How many one-layer architectures the first step trains."""
        n = len(self.space.layer_options(1))
        if self.initial_samples is not None:
            return min(int(self.initial_samples), n)
        return n if n <= self.max_trials // 2 else min(n, max(2, self.max_trials // 3))

    def step_size(self):
        """`K`, the architectures of each sampling step."""
        if self.samples_per_step is not None:
            return int(self.samples_per_step)
        left = self.max_trials - self.initial_step_size()
        return min(15, max(2, left // (self.space.max_layers + 1)))

    def sampling_steps(self):
        """How many sampling steps the budget allows (the temperature schedule's length)."""
        return max(1, math.ceil((self.max_trials - self.initial_step_size()) / self.step_size()))

    def temperature_at(self, step):
        """Temperature of the `step`-th sampling step (0-based): geometric from
        `temperature` to `min_temperature` over `sampling_steps()`."""
        last = self.sampling_steps() - 1
        fraction = min(step, last) / last if last else 0.0
        return self.temperature * (self.min_temperature / self.temperature) ** fraction

    # --------------------------------------------------------------- search
    def observations(self):
        """`[(architecture, score)]` of the completed trials, in the order they
        ended (scores negated for minimized objectives: higher is better)."""
        sign = 1.0 if self.objective.direction == "max" else -1.0
        found = []
        for trial_id in self.end_order:
            trial = self.trials[trial_id]
            if trial.status == _STATUS.COMPLETED and np.isfinite(trial.score):
                found.append((self.space.architecture(trial.hyperparameters.values),
                              sign * float(trial.score)))
        return found

    def best_architecture(self):
        """The best architecture evaluated so far (None before any result)."""
        observed = self.observations()
        return max(observed, key=lambda o: o[1])[0] if observed else None

    def _proposed(self):
        return {architecture_key(self.space.architecture(t.hyperparameters.values))
                for t in self.trials.values()}

    def populate_space(self, trial_id):
        proposed = self._proposed()
        queue = [a for a in (self._steps[-1]["architectures"] if self._steps else [])
                 if architecture_key(a) not in proposed]
        if not queue:
            if self.ongoing_trials:
                return {"status": _STATUS.IDLE}
            queue = self._next_step(proposed)
        if not queue:
            return {"status": _STATUS.STOPPED}
        return {"status": _STATUS.RUNNING, "values": self._values(queue[0])}

    def _values(self, architecture):
        """Hyperparameter values: the architecture's, then random active others."""
        values = self.space.values(architecture)
        for hp in self.hyperparameters.space:
            if hp.name not in values and all(c.is_active(values) for c in hp.conditions):
                values[hp.name] = hp.random_sample(int(self._rng.integers(2**31)))
        return values

    def _next_step(self, proposed):
        """Makes the next step (recorded in `_steps`); returns its architectures."""
        visited = proposed | {architecture_key(a) for s in self._steps for a in s["architectures"]}
        left = self.max_trials - len(self.trials)
        if left <= 0:
            return []
        temperature = None
        if not self._steps:
            iteration, position = 0, 1
            chosen = self._stratified(self.initial_step_size())
        else:
            last = self._steps[-1]
            iteration, position = last["iteration"], last["position"] + 1
            if position > self.space.max_layers:
                iteration, position = iteration + 1, 1
            candidates = [c for c in self._candidates(last, iteration, position)
                          if architecture_key(c) not in visited]
            k = min(self.step_size(), left)
            temperature = self.temperature_at(len(self._steps) - 1)
            chosen = self._sample(candidates, k, temperature)
            length = self.space.max_layers if iteration else position
            chosen += self._fill(length, k - len(chosen),
                                 visited | {architecture_key(a) for a in chosen})
        chosen = chosen[:left]
        self._steps.append({"iteration": iteration, "position": position,
                            "temperature": temperature, "architectures": chosen})
        return chosen

    def _candidates(self, last, iteration, position):
        """Every extension (iteration 0) or every change of layer `position`
        (later iterations) of the architectures the last step trained."""
        observed = {architecture_key(a) for a, _ in self.observations()}
        parents = ([a for a in last["architectures"] if architecture_key(a) in observed]
                   or last["architectures"])
        options = self.space.layer_options(position)
        if iteration == 0:
            return [parent + [option] for parent in parents for option in options
                    if len(parent) == position - 1]
        return [parent[:position - 1] + [option] + parent[position:]
                for parent in parents for option in options]

    def _stratified(self, n):
        """`n` distinct one-layer architectures using every choice's values evenly."""
        options = self.space.layer_options(1)
        if n >= len(options):
            return [[options[i]] for i in self._rng.permutation(len(options))]
        choices = [self.space.taps[m] for m in self.space.modalities]
        choices += [self.space.layer_fusions(1), self.space.activations]
        columns = [[values[i % len(values)] for i in self._rng.permutation(n)]
                   for values in choices]
        chosen, keys = [], set()
        for layer in zip(*columns):
            if architecture_key([layer]) not in keys:
                chosen.append([list(layer)])
                keys.add(architecture_key([layer]))
        return chosen + self._fill(1, n - len(chosen), keys)

    def _sample(self, candidates, k, temperature):
        """`k` candidates drawn without replacement with `p ∝ a ** (1 / T)`
        (Gumbel-top-k on `log(a) / T`: exact successive sampling)."""
        if k <= 0 or not candidates:
            return []
        observed = self.observations()
        if not observed:
            order = self._rng.permutation(len(candidates))
        else:
            logits = self.log_merits(self.predict(candidates, observed)) / temperature
            order = np.argsort(-(logits + self._rng.gumbel(size=len(candidates))))
        return [candidates[i] for i in order[:k]]

    def log_merits(self, predicted):
        """`log a` of the sampling rule `p ∝ a ** (1 / T)`, for surrogate
        predictions `predicted` (higher is better, as `observations`).

        A maximized objective (an accuracy) is its own merit: `a = score`.
        A minimized one (a loss or an error, non-negative) has merit `a = 1 /
        loss`, so halving a loss counts as doubling an accuracy and the rule
        does not depend on the loss's units. Values the surrogate predicts at
        or below 0 (extrapolation) are shifted to be positive first.

        Example:

        >>> from mmfusion.search import FusionSpace
        >>> space = FusionSpace({"a": ["vector"], "b": ["vector"]}, fusions=["concat"])
        >>> oracle = MFASOracle(space, "val_loss", max_trials=4, seed=0)
        >>> oracle.objective.direction, np.round(oracle.log_merits(-np.array([0.5, 2.0])), 3)
        ('min', array([ 0.693, -0.693]))
        """
        sign = 1.0 if self.objective.direction == "max" else -1.0
        values = sign * np.asarray(predicted, "float64")  # scores, or losses
        if values.min() <= 0:
            values = values - values.min() + 1e-3 * (np.ptp(values) or 1.0)
        return sign * np.log(values)

    def _fill(self, length, n, visited):
        """Up to `n` random unseen architectures, of `length` layers first."""
        found = []
        lengths = [length] + [x for x in range(1, self.space.max_layers + 1) if x != length]
        for size in lengths:
            if len(found) >= n:
                break
            keys = visited | {architecture_key(a) for a in found}
            count = self.space.count(size)
            if count <= _ENUMERABLE:
                for index in self._rng.permutation(count):
                    if len(found) >= n:
                        break
                    architecture = self.space.architecture_at(size, int(index))
                    if architecture_key(architecture) not in keys:
                        found.append(architecture)
            else:  # far more architectures than trials: collisions are rare
                for _ in range(100 * n):
                    architecture = self.space.architecture_at(size, int(self._rng.integers(count)))
                    if architecture_key(architecture) not in keys:
                        found.append(architecture)
                        keys.add(architecture_key(architecture))
                        if len(found) >= n:
                            break
        return found

    def predict(self, architectures, observed=None):
        """Surrogate-predicted scores of `architectures` (higher is better),
        after training the surrogate on the observations (`observed`, default
        every completed trial)."""
        observed = self.observations() if observed is None else observed
        self.surrogate.fit(self.space.encode([a for a, _ in observed]), [s for _, s in observed])
        return self.surrogate.predict(self.space.encode(architectures))

    # ---------------------------------------------------------------- state
    def get_state(self):
        state = super().get_state()
        state["mfas"] = {"steps": self._steps, "rng": self._rng.bit_generator.state,
                         "surrogate": self.surrogate.get_state()}
        return state

    def set_state(self, state):
        super().set_state(state)
        mfas = state["mfas"]
        self._steps = mfas["steps"]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = mfas["rng"]
        self.surrogate.set_state(mfas["surrogate"])
