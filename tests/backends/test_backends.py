"""Every registered fusion layer trains, saves and reloads under TensorFlow,
JAX and PyTorch, and a model saved under TensorFlow predicts the same under
the other backends. Each backend runs in its own subprocess."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mmfusion import fusion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def run_worker(backend, directory):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-m", "tests.backends.backend_worker", directory],
                   env=env, cwd=ROOT, check=True, timeout=900, capture_output=True)
    with open(os.path.join(directory, f"{backend}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("backends"))
    # TensorFlow first: it writes the models the other backends load.
    out = {}
    for backend, module in BACKEND_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            out[backend] = run_worker(backend, directory)
    return out


@pytest.mark.xdist_group("backends")  # one run of the module fixture
@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKEND_MODULES))
def test_every_layer_trains_and_reloads(backend, results):
    if backend not in results:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    assert sorted(results[backend]) == fusion.available()
    for name, r in results[backend].items():
        assert r["last_loss"] < r["first_loss"], (backend, name, r)
        if backend == "tensorflow":
            assert r["reload_max_error"] == 0.0, (name, r)
        else:
            # Saved under TensorFlow, loaded and predicted under `backend`.
            assert r["cross_backend_max_error"] < 1e-3, (backend, name, r)
