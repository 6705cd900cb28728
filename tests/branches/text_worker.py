"""Tokenizes text in `tf.data` and trains a small text model under the
backend of `KERAS_BACKEND`.

`python -m tests.branches.text_worker DIR` reads `DIR/texts.json`
(`{"train": [...], "labels": [...], "vocabulary": [...]}`) and writes
`DIR/<backend>.json`: the token ids produced by `make_dataset(...,
text_vectorizers=...)`, by `ds.map(vectorizer)`, by a vectorizer rebuilt from
its serialized config, the vocabulary learned by `adapt`, and the losses of a
`fit` on the tokenized dataset.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from mmfusion.branches import text_lstm, text_vectorizer
from mmfusion.datasets.pipelines import make_dataset


def ids_of(ds):
    return [row for batch in ds for row in np.asarray(batch).tolist()]


def main(directory):
    with open(os.path.join(directory, "texts.json")) as f:
        spec = json.load(f)
    texts = np.array(spec["train"], dtype=object)
    labels = np.array(spec["labels"])
    vectorizer = text_vectorizer(vocabulary=spec["vocabulary"], sequence_length=6)
    result = {
        "make_dataset": ids_of(make_dataset({"text": texts}, batch_size=3,
                                            text_vectorizers={"text": vectorizer}).map(
            lambda x: x["text"])),
        "map": ids_of(tf.data.Dataset.from_tensor_slices(texts.astype(str)).batch(3)
                      .map(vectorizer)),
        "eager": np.asarray(vectorizer(texts)).tolist(),
    }
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vectorizer))
    result["rebuilt"] = ids_of(tf.data.Dataset.from_tensor_slices(texts.astype(str)).batch(3)
                               .map(rebuilt))
    result["adapted_vocabulary"] = [str(t) for t in text_vectorizer(texts).get_vocabulary()]

    keras.utils.set_random_seed(0)
    branch = text_lstm(vectorizer.vocabulary_size(), sequence_length=6, embedding_dim=8,
                       units=(8,))
    model = keras.Model(branch.input, keras.layers.Dense(2)(branch.output["vector"]))
    model.compile(keras.optimizers.Adam(0.03),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = make_dataset({"text": texts}, labels, batch_size=4, shuffle=True, seed=0,
                      text_vectorizers={"text": vectorizer})
    history = model.fit(ds.map(lambda x, y: (x["text"], y)), epochs=15, verbose=0)
    result["losses"] = [float(v) for v in history.history["loss"]]
    path = os.path.join(directory, f"{keras.backend.backend()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main(sys.argv[1])
