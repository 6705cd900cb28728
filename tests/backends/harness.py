"""The backend tests of one share of the registered fusion layers.

Every registered fusion layer passes the fusion-layer contract
(`mmfusion.testing`), trains, saves and reloads under TensorFlow, JAX and
PyTorch, and a model saved under TensorFlow predicts the same under the
other backends. Each backend runs in its own subprocess. The layers are
split into `SHARES` interleaved shares, one test module each
(`test_backends_share0.py`, ...), so that pytest-xdist (`--dist loadfile`)
runs the shares' subprocesses on different workers at the same time.
"""

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
SHARES = 2


def layers_of(share):
    """The registered fusion layers of `share` (0 ≤ share < SHARES), sorted;
    vector and sequence layers are dealt out in turn, for shares of about
    equal cost."""
    by_kind = sorted(fusion.available(), key=lambda n: (fusion.get_class(n).input_rank, n))
    return sorted(by_kind[share::SHARES])


def run_worker(backend, directory, share):
    """`{layer: results}` for the layers of `share`; share 0 adds the
    unimodal-loss report under `UNIMODAL`."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    unimodal = ["--unimodal"] if share == 0 else []
    subprocess.run([sys.executable, "-m", "tests.backends.backend_worker", directory,
                    *unimodal, *layers_of(share)],
                   env=env, cwd=ROOT, check=True, timeout=1200, capture_output=True)
    with open(os.path.join(directory, f"{backend}.json")) as f:
        out = json.load(f)
    if share == 0:
        with open(os.path.join(directory, f"{backend}-unimodal.json")) as f:
            out[UNIMODAL] = json.load(f)
    return out


def _results_for(results, backend):
    if backend not in results:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    return results[backend]


def backend_tests(share):
    """`(results fixture, test functions...)` for the layers of `share`, to
    be bound to names starting with `test_` in a test module."""
    layers = layers_of(share)

    @pytest.fixture(scope="module")
    def results(tmp_path_factory):
        directory = str(tmp_path_factory.mktemp("backends"))
        # TensorFlow first: it writes the models the other backends load.
        out = {}
        for backend, module in BACKEND_MODULES.items():
            if importlib.util.find_spec(module) is not None:
                out[backend] = run_worker(backend, directory, share)
        return out

    @pytest.mark.slow
    @pytest.mark.parametrize("backend", sorted(BACKEND_MODULES))
    def test_every_layer_trains_and_reloads(backend, results):
        found = dict(_results_for(results, backend))
        found.pop(UNIMODAL, None)
        assert sorted(found) == layers
        for name, r in found.items():
            assert r["last_loss"] < r["first_loss"], (backend, name, r)
            if backend == "tensorflow":
                assert r["reload_max_error"] == 0.0, (name, r)
            else:
                # Saved under TensorFlow, loaded and predicted under `backend`.
                tolerance = CROSS_BACKEND_TOLERANCE.get(name, 1e-3)
                assert r["cross_backend_max_error"] < tolerance, (backend, name, r)

    def contract_cases():
        for backend in ("jax", "torch"):
            for name in layers:
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

    return results, test_every_layer_trains_and_reloads, test_contract


# Bound to `test_*` names by share 0's module (its worker writes the
# unimodal-loss report; `results` is that module's fixture).
@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKEND_MODULES))
def unimodal_losses_in_each_backends_training_step(backend, results):
    check_loss_report(_results_for(results, backend)[UNIMODAL])


def known_failures_name_real_cases():
    real = {(b, n, c) for b in BACKEND_MODULES for n in fusion.available() for c in CHECKS}
    assert not sorted(set(KNOWN_FAILURES) - real)


def shares_cover_every_layer():
    assert sorted(sum((layers_of(s) for s in range(SHARES)), [])) == fusion.available()
