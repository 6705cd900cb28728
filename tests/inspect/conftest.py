"""Two small fused models trained on the synthetic task with TensorBoard +
FusionInspector, shared by the inspection tests.

With `p_switch=1.0` only `visual` carries the label; `textual` is noise.
- `"gmu"`: a GMU whose model has a `presence` input (ablation through it).
- `"sum_attention"`: a WeightedSum and a CoAttention over the inputs
  as length-2 sequences (ablation by zeroing inputs; attention maps as images).
"""

import keras
import numpy as np
import pytest

from mmfusion.datasets.synthetic import MODALITIES, load_gmu_synthetic
from mmfusion.fusion import GMU, CoAttention, WeightedSum
from mmfusion.inspect import FusionInspector

EPOCHS = 4


def gmu_model():
    inputs = {m: keras.Input((2,), name=m) for m in MODALITIES}
    presence = keras.Input((2,), name="presence")
    fused = GMU(8, modalities=list(MODALITIES), name="gmu")(inputs, presence=presence)
    output = keras.layers.Dense(1, activation="sigmoid")(fused)
    return keras.Model({**inputs, "presence": presence}, output)


def sum_attention_model():
    inputs = {m: keras.Input((2,), name=m) for m in MODALITIES}
    summed = WeightedSum(8, modalities=list(MODALITIES), name="weighted_sum")(inputs)
    sequences = {m: keras.layers.Reshape((2, 1))(x) for m, x in inputs.items()}
    attended = CoAttention(4, modalities=list(MODALITIES), name="co_attention")(sequences)
    joined = keras.layers.Concatenate()([summed, attended])
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(joined))


def with_presence(data):
    return {**data.inputs, "presence": np.ones((len(data), 2), "float32")}


def train(model, x, y, x_val, y_val, log_dir, **inspector_kwargs):
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, validation_data=(x_val, y_val), epochs=EPOCHS, batch_size=64, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(log_dir),
                         FusionInspector(log_dir, (x_val, y_val), **inspector_kwargs)])
    return model


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """dict name -> log directory of the trained runs."""
    train_data, val = load_gmu_synthetic(n_train=800, n_test=400, seed=0, p_switch=1.0)
    root = tmp_path_factory.mktemp("inspect_logs")
    keras.utils.set_random_seed(0)
    train(gmu_model(), with_presence(train_data), train_data.labels, with_presence(val),
          val.labels, str(root / "gmu"))
    train(sum_attention_model(), train_data.inputs, train_data.labels, val.inputs, val.labels,
          str(root / "sum_attention"), freq=2)
    return {"gmu": str(root / "gmu"), "sum_attention": str(root / "sum_attention")}
