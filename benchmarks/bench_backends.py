"""Training throughput of every fusion layer, and of a composed model, on the
TensorFlow, JAX and PyTorch backends, with `jit_compile` on and off.

    python benchmarks/bench_backends.py [--rounds 2] [--steps 30]

Each backend runs in its own subprocess (the backend is fixed at import);
rounds alternate the backend order and the fastest round is kept. Prints one
JSON line per (model, backend, jit) with milliseconds per training step, and
one line per model with ratios to TensorFlow without jit.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b)]


def step_time(model, feeds, target, jit, steps):
    """Milliseconds per training step: one epoch of `steps` batches, after a
    first `fit` that traces and compiles (the train function is kept)."""
    import keras
    import numpy as np

    batch = len(target)
    model.compile(optimizer="adam", loss="mse", jit_compile=jit)
    model.fit(feeds, target, epochs=1, batch_size=batch, verbose=0)  # trace / compile
    repeat = keras.tree.map_structure(lambda x: np.concatenate([x] * steps), feeds)
    start = time.perf_counter()
    model.fit(repeat, np.concatenate([target] * steps), epochs=1, batch_size=batch, verbose=0,
              shuffle=False)
    elapsed = time.perf_counter() - start
    keras.backend.clear_session()
    return 1000 * elapsed / steps


def worker(steps):
    """Times every model under the current backend; prints a JSON dict."""
    import keras
    import numpy as np

    from mmfusion import fusion
    from mmfusion.branches import tabular_mlp
    from mmfusion.compose import build_fusion_model

    rng = np.random.default_rng(0)
    batch = 128
    target = rng.normal(size=(batch, 1)).astype("float32")
    jits = (False, True) if keras.backend.backend() != "torch" else (False,)
    results = {}
    for name in fusion.available():
        rank = fusion.get_class(name).input_rank
        shapes = [(64,), (32,)] if rank == 2 else [(10, 64), (12, 32)]
        feeds = [rng.normal(size=(batch,) + s).astype("float32") for s in shapes]
        for jit in jits:
            keras.utils.set_random_seed(0)
            inputs = [keras.Input(shape=s) for s in shapes]
            fused = fusion.get(name, units=64)(inputs)
            if len(fused.shape) > 2:
                fused = keras.layers.Flatten()(fused)
            model = keras.Model(inputs, keras.layers.Dense(1)(fused))
            results[f"{name}|{jit}"] = step_time(model, feeds, target, jit, steps)
    feeds = {"a": rng.normal(size=(batch, 64)).astype("float32"),
             "b": rng.normal(size=(batch, 32)).astype("float32")}
    for jit in jits:
        keras.utils.set_random_seed(0)
        model = build_fusion_model(
            {"a": tabular_mlp(64, units=(128, 64), name="a"),
             "b": tabular_mlp(32, units=(128, 64), name="b")},
            "gmu", head="regression", num_outputs=1, units=64)
        results[f"composed_gmu|{jit}"] = step_time(model, feeds, target, jit, steps)
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
        return
    best = {}
    for r in range(args.rounds):
        order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
        for backend in order:
            env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
            out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(args.steps)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for key, ms in json.loads(out.strip().splitlines()[-1]).items():
                best[(backend, key)] = min(ms, best.get((backend, key), float("inf")))
    for (backend, key), ms in sorted(best.items()):
        name, jit = key.split("|")
        print(json.dumps({"model": name, "backend": backend, "jit": jit == "True",
                          "ms_per_step": round(ms, 3)}))
    for name in sorted({k.split("|")[0] for _, k in best}):
        reference = best[("tensorflow", f"{name}|False")]
        ratios = {f"{b}{'+jit' if j else ''}": round(best[(b, f'{name}|{j}')] / reference, 2)
                  for b in BACKENDS for j in (False, True) if (b, f"{name}|{j}") in best}
        print(json.dumps({"model": name, "time_vs_tensorflow": ratios}))


if __name__ == "__main__":
    main()
