"""Every registered fusion layer passes the fusion-layer contract
(`mmfusion.testing`), trains, saves and reloads under TensorFlow, JAX and
PyTorch, and a model saved under TensorFlow predicts the same under the
other backends. Each backend runs in its own subprocess."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mmfusion import fusion
from mmfusion.testing import CHECKS
from tests.test_unimodal import check_loss_report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

# (backend, layer, check) -> why it fails today. Strict: a triple that passes
# fails the run until its entry is removed. (TensorFlow's contract is checked
# in tests/fusion/test_every_layer.py.)
KNOWN_FAILURES = {}
# Largest |difference| of a model saved under TensorFlow and predicted under
# another backend. MCB's exact signed square root magnifies the float32
# round-off of two different FFT implementations near zero (measured 2.1e-3
# on PyTorch).
CROSS_BACKEND_TOLERANCE = {"mcb": 5e-3}
UNIMODAL = "unimodal loss"


def run_worker(backend, directory):
    """`{layer: results}`, plus the unimodal-loss report under `UNIMODAL`."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-m", "tests.backends.backend_worker", directory],
                   env=env, cwd=ROOT, check=True, timeout=1200, capture_output=True)
    with open(os.path.join(directory, f"{backend}.json")) as f:
        layers = json.load(f)
    with open(os.path.join(directory, f"{backend}-unimodal.json")) as f:
        return {**layers, UNIMODAL: json.load(f)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("backends"))
    # TensorFlow first: it writes the models the other backends load.
    out = {}
    for backend, module in BACKEND_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            out[backend] = run_worker(backend, directory)
    return out


def _results_for(results, backend):
    if backend not in results:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    return results[backend]


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKEND_MODULES))
def test_every_layer_trains_and_reloads(backend, results):
    found = dict(_results_for(results, backend))
    found.pop(UNIMODAL)
    assert sorted(found) == fusion.available()
    for name, r in found.items():
        assert r["last_loss"] < r["first_loss"], (backend, name, r)
        if backend == "tensorflow":
            assert r["reload_max_error"] == 0.0, (name, r)
        else:
            # Saved under TensorFlow, loaded and predicted under `backend`.
            tolerance = CROSS_BACKEND_TOLERANCE.get(name, 1e-3)
            assert r["cross_backend_max_error"] < tolerance, (backend, name, r)


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKEND_MODULES))
def test_unimodal_losses_in_each_backends_training_step(backend, results):
    check_loss_report(_results_for(results, backend)[UNIMODAL])


def contract_cases():
    for backend in ("jax", "torch"):
        for name in fusion.available():
            for check in CHECKS:
                if check == "keras_mask" and fusion.get_class(name).input_rank != 3:
                    continue
                reason = KNOWN_FAILURES.get((backend, name, check))
                marks = [pytest.mark.xfail(strict=True, reason=f"{check}: {reason}")] \
                    if reason else []
                yield pytest.param(backend, name, check, marks=marks,
                                   id=f"{backend}-{name}-{check}")


@pytest.mark.slow
@pytest.mark.parametrize("backend, name, check", list(contract_cases()))
def test_contract(backend, name, check, results):
    assert _results_for(results, backend)[name]["contract"][check] == "passed"


def test_known_failures_name_real_cases():
    real = {(b, n, c) for b in BACKEND_MODULES for n in fusion.available() for c in CHECKS}
    assert not sorted(set(KNOWN_FAILURES) - real)
