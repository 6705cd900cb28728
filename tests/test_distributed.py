"""Data-parallel training gives the same losses as one process on one device
(the JAX route with a text modality tokenized in the tf.data pipeline)."""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recipe_command(*args):
    return [sys.executable, "-m", "recipes.data_parallel", *args]


def run_recipe(*args, backend="tensorflow"):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    out = subprocess.run(recipe_command(*args), env=env, cwd=ROOT, check=True,
                         timeout=300, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["losses"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device():
    single = run_recipe("--strategy", "none")
    mirrored = run_recipe("--strategy", "mirrored", "--devices", "2")
    assert single[-1] < single[0]
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_two_jax_processes_match_one_process():
    single = run_recipe("--strategy", "none", "--text", backend="jax")
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    processes = [
        subprocess.Popen(
            recipe_command("--strategy", "jax", "--text", "--coordinator", coordinator,
                           "--num-processes", "2", "--process-id", str(i)),
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
            p.wait()
    assert [p.returncode for p in processes] == [0, 0]
    for out in outputs:
        losses = json.loads(out.strip().splitlines()[-1])["losses"]
        np.testing.assert_allclose(losses, single, rtol=1e-5)
