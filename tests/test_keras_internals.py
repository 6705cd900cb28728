"""The adapter over Keras's private graph attributes: what each function
returns on small graphs whose structure is known, including the cases the
inspector relies on (nested models, shared layers, masks, non-graph models)."""

import keras
import numpy as np
import pytest

from mmfusion import keras_internals


def test_call_arguments_is_the_first_call_in_this_models_graph():
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    shared = keras.layers.Dense(3, name="shared")
    first, second = shared(a), shared(b)
    model = keras.Model([a, b], keras.layers.Add()([first, second]))
    args, kwargs = keras_internals.call_arguments(model, shared)
    assert args[0] is a and kwargs == {}
    # A model using only the second call sees that call as its first.
    only_b = keras.Model(b, second)
    assert keras_internals.call_arguments(only_b, shared)[0][0] is b


def test_call_arguments_keeps_keyword_tensors_and_nested_models():
    x, p = keras.Input((3,), name="x"), keras.Input((3,), name="p")
    inner_x = keras.Input((3,), name="inner_x")
    inner = keras.Model(inner_x, keras.layers.Dense(2, name="d")(inner_x), name="inner")
    attention = keras.layers.Attention(name="attention")
    q = keras.layers.Reshape((1, 3))(x)
    v = keras.layers.Reshape((1, 3))(p)
    attended = attention([q, v], use_causal_mask=False)
    model = keras.Model([x, p], [inner(x), attended])
    args, kwargs = keras_internals.call_arguments(model, attention)
    assert [t.shape for t in args[0]] == [(None, 1, 3), (None, 1, 3)]
    assert kwargs == {"use_causal_mask": False}
    assert keras_internals.call_arguments(model, inner)[0][0] is x


def test_call_arguments_rejects_layers_outside_the_graph():
    x = keras.Input((2,))
    model = keras.Model(x, keras.layers.Dense(1)(x))
    with pytest.raises(ValueError, match="'stranger' is not called in the graph"):
        keras_internals.call_arguments(model, keras.layers.Dense(1, name="stranger"))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, name="dense")

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(np.ones((1, 2)))
    with pytest.raises(ValueError, match="only functional models"):
        keras_internals.call_arguments(subclassed, subclassed.dense)


def test_producer_names_the_operation_output_index_and_arguments():
    x = keras.Input((4,), name="x")
    branch_in = keras.Input((4,), name="x")
    branch = keras.Model(branch_in, {"first": keras.layers.Dense(2)(branch_in),
                                     "second": keras.layers.Dense(3)(branch_in)}, name="branch")
    taps = branch(x)
    op, index, (args, kwargs) = keras_internals.producer(taps["second"])
    assert op is branch and index == 1 and args[0] is x and not keras_internals.keras_tensors(kwargs)
    assert keras_internals.producer(taps["first"])[1] == 0
    op, index, arguments = keras_internals.producer(x)
    assert isinstance(op, keras.layers.InputLayer) and arguments is None
    summed = keras.ops.add(taps["first"], 1.0)
    assert keras_internals.producer(summed)[2][0][0] is taps["first"]


def test_keras_tensors_flattens_and_deduplicates():
    a, b = keras.Input((2,)), keras.Input((2,))
    found = keras_internals.keras_tensors(({"x": [a, b], "again": a}, {"n": 3, "t": None}))
    assert len(found) == 2 and {id(t) for t in found} == {id(a), id(b)}


def test_keras_mask_is_a_graph_tensor_that_computes_the_padding():
    ids = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(10, 3, mask_zero=True)(ids)
    sequence = keras.layers.LSTM(2, return_sequences=True)(embedded)
    mask = keras_internals.keras_mask(sequence)
    assert keras_internals.keras_mask(ids) is None
    assert keras_internals.keras_mask(keras.layers.Dense(2)(ids)) is None
    values = np.array([[3, 1, 0, 0, 0], [0, 2, 0, 4, 0]], "int32")
    computed = keras.ops.convert_to_numpy(keras.Model(ids, mask)(values))
    np.testing.assert_array_equal(computed, values != 0)
