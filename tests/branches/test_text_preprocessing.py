"""Text preprocessing that travels with the model: the registered
standardizer, `TextPreprocessor` saved inside a model taking raw strings
(`.keras` and SavedModel export), and tokenization in `tf.data` under the
TensorFlow, JAX and PyTorch backends (one subprocess each).

Expected token ids come from an independent Python tokenizer
(`unicodedata` NFKC, `str.casefold`, `re`), not from TensorFlow."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import unicodedata

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmfusion.branches import (TextPreprocessor, standardize_text, text_lstm, text_vectorizer,
                               with_raw_text)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = ["Red SHOE, size 42!", "blue hat", "Ｆｕｌｌ-width ＲＥＤ hat", "Straße shoe",
         "STRASSE: blue, blue", "green scarf 42", "red hat?", "BLUE shoe"]
LABELS = [0, 1, 1, 0, 1, 0, 1, 0]
VOCABULARY = ["red", "blue", "hat", "shoe", "strasse", "42"]


def python_tokens(text):
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^\w+\-*/=\s]|_", " ", text).split()


def python_ids(text, vocabulary, length):
    table = {token: i for i, token in enumerate(["", "[UNK]"] + list(vocabulary))}
    ids = [table.get(token, 1) for token in python_tokens(text)][:length]
    return ids + [0] * (length - len(ids))


EXPECTED = [python_ids(t, VOCABULARY, 6) for t in TEXTS]


def test_independent_tokenizer_sees_what_we_expect():
    assert python_tokens("Ｆｕｌｌ-width ＲＥＤ hat") == ["full-width", "red", "hat"]
    assert EXPECTED[3] == [6, 5, 0, 0, 0, 0]  # "straße" case-folds to "strasse"


def test_standardize_text_is_registered_and_reloads_in_plain_vectorizer(tmp_path):
    assert keras.saving.get_registered_name(standardize_text) == "mmfusion>standardize_text"
    layer = keras.layers.TextVectorization(standardize=standardize_text, vocabulary=VOCABULARY,
                                           output_sequence_length=6)
    inputs = keras.Input((), dtype="string")
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "plain.keras")
    reloaded = keras.saving.load_model(tmp_path / "plain.keras")
    assert reloaded.predict(np.array(TEXTS, dtype=object), verbose=0).tolist() == EXPECTED


def test_text_preprocessor_matches_independent_tokenizer():
    vectorizer = text_vectorizer(vocabulary=VOCABULARY, sequence_length=6)
    assert isinstance(vectorizer, TextPreprocessor)
    assert vectorizer(np.array(TEXTS, dtype=object)).numpy().tolist() == EXPECTED
    adapted = text_vectorizer(TEXTS)
    tokens = {t for text in TEXTS for t in python_tokens(text)}
    assert set(adapted.get_vocabulary()[2:]) == tokens
    with pytest.raises(ValueError, match="standardize"):
        TextPreprocessor(standardize="lower")


def raw_text_model():
    keras.utils.set_random_seed(0)
    vectorizer = text_vectorizer(vocabulary=VOCABULARY, sequence_length=6)
    branch = text_lstm(vectorizer.vocabulary_size(), sequence_length=6, embedding_dim=4,
                       units=(5,))
    model = keras.Model(branch.input, keras.layers.Dense(3)(branch.output["vector"]))
    return model, with_raw_text(model, {"text": vectorizer})


def test_keras_round_trip_predicts_on_raw_strings(tmp_path):
    model, raw = raw_text_model()
    expected = model.predict(np.array(EXPECTED), verbose=0)
    got = raw.predict(np.array(TEXTS, dtype=object), verbose=0)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(expected).max() > 1e-3
    raw.save(tmp_path / "raw.keras")
    reloaded = keras.saving.load_model(tmp_path / "raw.keras")
    assert reloaded.input.dtype == "string"
    np.testing.assert_array_equal(reloaded.predict(np.array(TEXTS, dtype=object), verbose=0), expected)


@pytest.mark.slow
def test_exported_model_serves_raw_strings(tmp_path):
    model, raw = raw_text_model()
    raw.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    got = served.serve(tf.constant(TEXTS)).numpy()
    np.testing.assert_allclose(got, model.predict(np.array(EXPECTED), verbose=0), atol=1e-6)


def test_with_raw_text_keeps_other_inputs_and_names_unknown_ones():
    vectorizer = text_vectorizer(vocabulary=VOCABULARY, sequence_length=2)
    ids = keras.Input((2,), dtype="int32", name="text")
    price = keras.Input((1,), name="price")
    total = keras.layers.Concatenate()([keras.ops.cast(ids, "float32"), price])
    model = keras.Model({"text": ids, "price": price}, total)
    raw = with_raw_text(model, {"text": vectorizer})
    out = raw.predict({"text": np.array(["hat RED", "tie"], dtype=object), "price": np.array([[2.5], [1.0]])},
                      verbose=0)
    np.testing.assert_array_equal(out, [[4, 2, 2.5], [1, 0, 1.0]])
    with pytest.raises(ValueError, match="no inputs \\['image'\\]"):
        with_raw_text(model, {"image": vectorizer})


@pytest.fixture(scope="module")
def backend_results(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("text_backends"))
    with open(os.path.join(directory, "texts.json"), "w") as f:
        json.dump({"train": TEXTS, "labels": LABELS, "vocabulary": VOCABULARY}, f)
    results = {}
    for backend in ("tensorflow", "jax", "torch"):
        if importlib.util.find_spec(backend) is None:
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-m", "tests.branches.text_worker", directory],
                              env=env, cwd=ROOT, timeout=600, capture_output=True, text=True)
        assert done.returncode == 0, (backend, done.stderr[-3000:])
        with open(os.path.join(directory, f"{backend}.json")) as f:
            results[backend] = json.load(f)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_tokenization_in_tf_data_on_every_backend(backend, backend_results):
    if backend not in backend_results:
        pytest.skip(f"{backend} is not installed")
    r = backend_results[backend]
    for route in ("make_dataset", "map", "eager", "rebuilt"):
        assert r[route] == EXPECTED, (backend, route)
    assert set(r["adapted_vocabulary"][2:]) == {t for text in TEXTS for t in python_tokens(text)}
    losses = r["losses"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], (backend, losses)
