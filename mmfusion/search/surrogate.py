"""The MFAS surrogate: an LSTM over per-layer one-hot codes predicting a score."""

import base64

import keras
import numpy as np

__all__ = ["Surrogate"]


class Surrogate:
    """Predicts the score of fusion architectures from `FusionSpace.encode` codes.

    As in MFAS (Pérez-Rúa et al., 2019, section 3.3) the surrogate is a small
    recurrent network reading an architecture layer by layer: a `Masking`
    layer (padding layers are all-zero), an `LSTM` and a linear output,
    trained with an L1 loss on scores standardized to zero mean and unit
    variance. As in the authors' search, one surrogate is kept for the whole
    search: every `fit` continues training it (weights and Adam state) for
    `epochs` full-batch steps on all the data given. `get_state` /
    `set_state` carry it through JSON (a resumed search continues with the
    same surrogate).

    Args:
        units: LSTM size.
        epochs: full-batch training epochs per `fit`.
        learning_rate: Adam learning rate.
        seed: seed of the weight initializers.

    Example:

    >>> import numpy as np
    >>> codes = np.eye(4, dtype="float32")[:, None, :]  # 4 one-layer archs
    >>> model = Surrogate(units=4, epochs=5).fit(codes, np.arange(4.0))
    >>> model.predict(codes).shape
    (4,)
    >>> again = Surrogate(units=4, epochs=5)
    >>> again.set_state(model.get_state())
    >>> bool(np.allclose(again.predict(codes), model.predict(codes)))
    True
    """

    def __init__(self, units=32, epochs=50, learning_rate=0.01, seed=0):
        self.units = units
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed
        self.model = None

    def _build(self, shape):
        init = keras.initializers.GlorotUniform
        inputs = keras.Input(shape=shape)
        x = keras.layers.Masking(0.0)(inputs)
        x = keras.layers.LSTM(
            self.units, kernel_initializer=init(seed=self.seed),
            recurrent_initializer=keras.initializers.Orthogonal(seed=self.seed + 1))(x)
        outputs = keras.layers.Dense(1, kernel_initializer=init(seed=self.seed + 2))(x)
        model = keras.Model(inputs, outputs, name="mfas_surrogate")
        optimizer = keras.optimizers.Adam(self.learning_rate)
        model.compile(optimizer, loss="mean_absolute_error")
        optimizer.build(model.trainable_variables)
        return model

    def _variables(self):
        return self.model.variables + self.model.optimizer.variables

    def fit(self, codes, scores):
        """Trains on `codes` `(n, layers, features)` and `scores` `(n,)`; returns self."""
        scores = np.asarray(scores, "float32")
        self.mean = float(scores.mean())
        self.scale = float(scores.std()) or 1.0
        if self.model is None:
            self.model = self._build(codes.shape[1:])
        elif self.model.input_shape[1:] != codes.shape[1:]:
            raise ValueError(f"Surrogate: codes of shape {codes.shape[1:]} given to a surrogate "
                             f"built for {self.model.input_shape[1:]}.")
        # One epoch over `epochs` copies: full-batch steps without per-epoch overhead.
        self.model.fit(np.tile(codes, (self.epochs, 1, 1)),
                       np.tile((scores - self.mean) / self.scale, self.epochs),
                       batch_size=len(scores), shuffle=False, verbose=0)
        return self

    def get_state(self):
        """JSON-serializable state (None before the first `fit`)."""
        if self.model is None:
            return None
        return {"shape": list(self.model.input_shape[1:]), "mean": self.mean,
                "scale": self.scale,
                "variables": [[str(v.dtype), base64.b64encode(np.asarray(v).tobytes()).decode()]
                              for v in self._variables()]}

    def set_state(self, state):
        """Restores a state from `get_state`."""
        self.model = None
        if state is None:
            return
        self.model = self._build(tuple(state["shape"]))
        self.mean, self.scale = state["mean"], state["scale"]
        variables = self._variables()
        if len(variables) != len(state["variables"]):
            raise ValueError(f"Surrogate state holds {len(state['variables'])} variables; this "
                             f"surrogate (units={self.units}) has {len(variables)}.")
        for variable, (dtype, data) in zip(variables, state["variables"]):
            value = np.frombuffer(base64.b64decode(data), dtype=dtype)
            variable.assign(value.reshape(tuple(variable.shape)))

    def predict(self, codes):
        """Predicted scores `(n,)` of `codes`, in the units of the training scores."""
        z = self.model.predict(codes, batch_size=1024, verbose=0)[:, 0]
        return z * self.scale + self.mean
