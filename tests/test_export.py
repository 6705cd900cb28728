"""A composed multimodal model exports to a SavedModel that serves one named
input per modality (plus `presence`) and predicts what `model.predict` does."""

import numpy as np
import tensorflow as tf

from mmfusion.branches import tabular_mlp
from mmfusion.compose import build_fusion_model


def test_export_serves_named_modalities_and_missing_ones(tmp_path):
    branches = {"audio": tabular_mlp(3, units=(4,), name="audio"),
                "image": tabular_mlp(5, units=(4,), name="image")}
    model = build_fusion_model(branches, "gmu", num_outputs=3, units=8, presence=True)
    path = str(tmp_path / "served")
    model.export(path, verbose=False)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    _, specs = serve.structured_input_signature
    assert {name: tuple(spec.shape) for name, spec in specs.items()} == {
        "audio": (None, 3), "image": (None, 5), "presence": (None, 2)}

    rng = np.random.default_rng(0)
    request = {"audio": rng.normal(size=(4, 3)).astype("float32"),
               "image": rng.normal(size=(4, 5)).astype("float32"),
               "presence": np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")}
    served = serve(**request)["output_0"].numpy()
    np.testing.assert_allclose(served, model.predict(request, verbose=0), rtol=1e-5, atol=1e-6)

    # Row 1 has no image: the served prediction must ignore whatever image it is sent.
    other = dict(request, image=request["image"] + 10.0)
    served_other = serve(**other)["output_0"].numpy()
    np.testing.assert_allclose(served_other[1], served[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(served_other[0], served[0])
