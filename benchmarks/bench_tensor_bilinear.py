"""Tensor and bilinear fusion layers against independent NumPy references: parity and speed.

For each layer, at a small size (inputs 16 + 16 -> 16, batch 32) and at a
paper size (inputs 2048 + 2400 -> 3000, batch 64, the layers' paper
defaults), one JSON line with:
- `max_abs_diff` / `max_rel_diff`: our float32 output against a float64 NumPy
  reference written from the papers' equations (count sketch by scatter-add
  and FFT convolution, outer products, Tucker cores by einsum, exact signed
  square root), on the same weights, with one modality absent in half the rows;
- `ms`: forward + backward time per batch (loss `sum(y²)`, gradients of every
  trainable weight) under the backend configuration of the run, and
  `numpy_forward_ms`, the reference's forward time.
Then `lmf_layout` (LMF's one matmul per modality against the previous
`(rank, d + 1, units)` einsum, same weights) and `dropout` (Keras `Dropout`
against a uniform-mask formulation, with and without XLA) lines.

Run: `python benchmarks/bench_tensor_bilinear.py` runs the three
configurations (`tf`, `tf_xla`, `jax`) in subprocesses, prints their lines
with time ratios to `tf`, and writes `benchmarks/tensor_bilinear_results.json`;
`--config tf_xla` (etc.) runs one configuration, `--sizes small` the small size only.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmfusion import fusion
from mmfusion.files import write_json
from mmfusion.fusion.base import mask_inputs
from mmfusion.fusion.tensor import append_one

CONFIGS = {"tf": ("tensorflow", False), "tf_xla": ("tensorflow", True), "jax": ("jax", False)}
SIZES = {
    "small": dict(dims=(16, 16), units=16, batch=32),
    "paper": dict(dims=(2048, 2400), units=3000, batch=64),
}
# name -> (small kwargs, paper kwargs); None: not run at that size.
LAYERS = {
    "tfn": ({}, None),  # Π (d_m + 1) · units = 14.7e9 weights at the paper size
    "lmf": (dict(rank=4), dict(rank=4)),
    "mcb": (dict(sketch_size=1024), {}),
    "mlb": (dict(rank=64), {}),
    "mfb": (dict(dropout=0.0), dict(dropout=0.0)),
    "mfh": (dict(dropout=0.0), dict(dropout=0.0)),
    "mutan": (dict(hidden_size=32, core_size=32, rank=5), {}),
    "tucker": (dict(hidden_size=16, core_size=16), {}),
    "block": (dict(hidden_size=64, chunks=4, rank=4), {}),
    "block_vqa": (dict(hidden_size=64, chunks=5, rank=4), dict(chunks=18)),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tensor_bilinear_results.json")


def emit(**record):
    print(json.dumps(record), flush=True)


def median_ms(step, repeats):
    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * float(sorted(times)[len(times) // 2])


# ------------------------------------------------- NumPy float64 references
def ref_ssqrt(x):
    return np.sign(x) * np.sqrt(np.abs(x))


def ref_l2(x):
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def dense(w, z):
    return z @ w["output_projection/kernel"] + w.get("output_projection/bias", 0.0)


def hidden(w, xs, p, fill, act=lambda h: h, tag=""):
    """Per modality `act(x W + b)`, `fill` where absent (the layers' documented semantics)."""
    out = []
    for m, x in enumerate(xs):
        h = act(x @ w[f"kernel{tag}_modality_{m}"] + w.get(f"bias{tag}_modality_{m}", 0.0))
        out.append(np.where(p[:, m:m + 1] > 0, h, fill))
    return out


def ref_tfn(layer, w, xs, p):
    """y = vec(⊗_m [x_m; 1]) W + b (Zadeh et al., eq. 1-2)."""
    zs = [np.concatenate([np.where(p[:, m:m + 1] > 0, x, 0.0), np.ones((len(x), 1))], 1)
          for m, x in enumerate(xs)]
    outer = np.einsum("bi,bj->bij", *zs).reshape(len(xs[0]), -1)
    return outer @ w["kernel"] + w["bias"]


def ref_lmf(layer, w, xs, p):
    """y = Σ_i λ_i Π_m ([x_m; 1] W_m^(i)) + b (Liu et al., eq. 6)."""
    r, u = layer.rank, layer.units
    product = 1.0
    for m, x in enumerate(xs):
        z = np.concatenate([np.where(p[:, m:m + 1] > 0, x, 0.0), np.ones((len(x), 1))], 1)
        factor = w[f"factor_modality_{m}"].reshape(-1, r, u)  # [j, i, k] = W_m^(i)[j, k]
        product = product * np.einsum("bj,jik->bik", z, factor, optimize=True)
    return np.einsum("bik,i->bk", product, w["rank_weights"]) + w["bias"]


def ref_mcb(layer, w, xs, p):
    """Ψ(x)[h(j)] += s(j) x[j]; Φ = FFT⁻¹(Π FFT(Ψ_m)); signed sqrt, L2, dense (Fukui et al.)."""
    d = layer.sketch_size
    spectrum = 1.0
    for m, x in enumerate(xs):
        sketch = np.zeros((len(x), d))
        np.add.at(sketch.T, w[f"sketch_index_modality_{m}"].astype(int),
                  (x * w[f"sketch_sign_modality_{m}"]).T)
        sketch = np.where(p[:, m:m + 1] > 0, sketch, np.eye(d)[0])
        spectrum = spectrum * np.fft.rfft(sketch)
    return dense(w, ref_l2(ref_ssqrt(np.fft.irfft(spectrum, n=d))))


def ref_mlb(layer, w, xs, p):
    """y = (tanh(x_1 U_1) ∘ tanh(x_2 U_2)) P (Kim et al., eq. 4)."""
    return dense(w, np.prod(hidden(w, xs, p, 1.0, np.tanh), axis=0))


def ref_mfb(layer, w, xs, p):
    """z = SumPool(U_1ᵀx ∘ U_2ᵀy, k); signed sqrt; L2 (Yu et al. 2017, eq. 3)."""
    product = np.prod(hidden(w, xs, p, 1.0), axis=0)
    return ref_l2(ref_ssqrt(product.reshape(len(product), -1, layer.factor).sum(-1)))


def ref_mfh(layer, w, xs, p):
    """z_i = MFB(e_i), e_i = e_{i−1} ∘ (U_1^iᵀx ∘ U_2^iᵀy); concatenation (Yu et al. 2018)."""
    expanded, outs = 1.0, []
    for i in range(layer.order):
        product = np.prod(hidden(w, xs, p, 1.0, tag=f"_{i}"), axis=0)
        expanded = expanded * product
        outs.append(ref_l2(ref_ssqrt(expanded.reshape(len(product), -1, layer.factor).sum(-1))))
    return np.concatenate(outs, -1)


def ref_tucker(layer, w, xs, p):
    """y = norm((T_c ×_1 q̃) ×_2 ṽ) W_o, q̃ = tanh(q W_q) (Ben-younes et al. 2017,
    eq. 4-6; `norm`: the layer's default signed sqrt + L2, not in the paper)."""
    q, v = hidden(w, xs, p, 1 / math.sqrt(layer.hidden_size), np.tanh)
    z = np.einsum("bi,bj,ijk->bk", q, v, w["core"], optimize=True)
    return dense(w, ref_l2(ref_ssqrt(z)))


def ref_mutan(layer, w, xs, p):
    """z = Σ_r (q̃ M_r + a_r) ∘ (ṽ N_r + c_r), the rank-R core slices
    (Ben-younes et al. 2017, eq. 8-10) with the layer's default merge biases
    and signed sqrt + L2 (the authors' code has the biases, not the paper)."""
    q, v = hidden(w, xs, p, 1 / math.sqrt(layer.hidden_size), np.tanh)
    m = w["core_factor_modality_0"].reshape(layer.hidden_size, layer.rank, -1)
    n = w["core_factor_modality_1"].reshape(layer.hidden_size, layer.rank, -1)
    a = w["core_factor_bias_modality_0"].reshape(layer.rank, -1)
    c = w["core_factor_bias_modality_1"].reshape(layer.rank, -1)
    z = sum((q @ m[:, r] + a[r]) * (v @ n[:, r] + c[r]) for r in range(layer.rank))
    return dense(w, ref_l2(ref_ssqrt(z)))


def ref_block(layer, w, xs, p):
    """Block-term core: chunk c gives z_c = Σ_r (x̃_c M_cr) ∘ (ỹ_c N_cr), signed sqrt + L2
    per chunk, concatenation, W_o (Ben-younes et al. 2019, eq. 7-9)."""
    q, v = hidden(w, xs, p, 1 / math.sqrt(layer.hidden_size))
    kernels = [[], []]
    for m in range(2):
        for g in range(len(layer.groups)):
            kernels[m].extend(w[f"block_kernel{'' if g == 0 else f'_{g}'}_modality_{m}"])
    outs, start = [], 0
    for c, size in enumerate(layer.sizes):
        part = slice(start, start + size)
        start += size
        a = (q[:, part] @ kernels[0][c]).reshape(-1, layer.rank, size)
        b = (v[:, part] @ kernels[1][c]).reshape(-1, layer.rank, size)
        outs.append(ref_l2(ref_ssqrt((a * b).sum(1))))
    return dense(w, np.concatenate(outs, -1))


REFERENCES = dict(tfn=ref_tfn, lmf=ref_lmf, mcb=ref_mcb, mlb=ref_mlb,
                  mfb=ref_mfb, mfh=ref_mfh, tucker=ref_tucker,
                  mutan=ref_mutan, block=ref_block, block_vqa=ref_block)


# ------------------------------------------------------------------ timing
def fwd_bwd_step(layer, xs, jit):
    """A `() -> None` running one forward + backward pass of `layer` on `xs`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tensors = [tf.constant(x) for x in xs]

        @tf.function(jit_compile=jit)
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(layer(tensors)))
            return tape.gradient(loss, layer.trainable_weights)

        return lambda: [g.numpy() for g in step()]
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, fixed, xs):
        y, _ = layer.stateless_call(trainable, fixed, xs)
        return jax.numpy.sum(jax.numpy.square(y))

    grad = jax.jit(jax.grad(loss))
    arrays = [jax.numpy.asarray(x) for x in xs]
    return lambda: jax.block_until_ready(grad(trainable, fixed, arrays))


def weights_of(layer):
    return {v.path.split("/", 1)[1]: np.asarray(ops.convert_to_numpy(v), "float64")
            for v in layer.weights}


def make(name, units, kwargs):
    return fusion.get("block" if name == "block_vqa" else name, units=units, **kwargs)


def bench_layers(config, jit, sizes, repeats):
    for size in sizes:
        spec = SIZES[size]
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(spec["batch"], d)).astype("float32") for d in spec["dims"]]
        presence = np.ones((spec["batch"], 2), "float32")
        presence[::2, 0] = 0.0  # one modality absent in half the rows
        for name, variants in LAYERS.items():
            kwargs = variants[0] if size == "small" else variants[1]
            if kwargs is None:
                continue
            keras.utils.set_random_seed(0)
            layer = make(name, spec["units"], kwargs)
            ours = ops.convert_to_numpy(layer(xs, presence=presence)).astype("float64")
            w = weights_of(layer)
            start = time.perf_counter()
            reference = REFERENCES[name](layer, w, [x.astype("float64") for x in xs], presence)
            numpy_ms = 1000 * (time.perf_counter() - start)
            ms = median_ms(fwd_bwd_step(layer, xs, jit), repeats[size])
            emit(bench="layer", config=config, layer=name, size=size, kwargs=kwargs,
                 dims=spec["dims"], units=spec["units"], batch=spec["batch"],
                 params=int(sum(np.prod(v.shape) for v in layer.trainable_weights)),
                 ms=round(ms, 3), numpy_forward_ms=round(numpy_ms, 3),
                 max_abs_diff=float(np.abs(ours - reference).max()),
                 max_rel_diff=float(np.abs(ours - reference).max() / np.abs(reference).max()))


class StoredEinsumLMF(fusion.LMF):
    """The previous LMF exactly: `(rank, d + 1, units)` variables and one einsum each."""

    def build_fusion(self, shapes):
        self.factors = [self.add_kernel(f"factor_{i}", (self.rank, s[-1] + 1, self.units))
                        for i, s in enumerate(shapes)]
        self.rank_weights = self.add_weight(name="rank_weights", shape=(self.rank,),
                                            initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def fuse(self, inputs, presence, training=None):
        product = None
        for x, factor in zip(mask_inputs(inputs, presence), self.factors):
            term = ops.einsum("bd,rdu->bru", append_one(x), factor)
            product = term if product is None else product * term
        return ops.sum(product * ops.reshape(self.rank_weights, (1, -1, 1)), axis=1) + self.bias, {}


def bench_lmf_layout(config, jit, repeats):
    for dims, units, rank, batch in (((16, 16), 16, 4, 32), ((128, 128), 128, 8, 64),
                                     ((2048, 2400), 3000, 4, 64)):
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(batch, d)).astype("float32") for d in dims]
        keras.utils.set_random_seed(0)
        new, old = fusion.LMF(units=units, rank=rank), StoredEinsumLMF(units=units, rank=rank)
        new(xs), old(xs)
        for variable, by_rank in zip(new.factors, old.factors):
            value = ops.convert_to_numpy(variable)
            by_rank.assign(value.reshape(value.shape[0], rank, units).transpose(1, 0, 2))
        old.rank_weights.assign(new.rank_weights)
        old.bias.assign(new.bias)
        diff = float(np.abs(ops.convert_to_numpy(new(xs)) - ops.convert_to_numpy(old(xs))).max())
        new_ms = median_ms(fwd_bwd_step(new, xs, jit), repeats)
        old_ms = median_ms(fwd_bwd_step(old, xs, jit), repeats)
        emit(bench="lmf_layout", config=config, dims=dims, units=units, rank=rank, batch=batch,
             matmul_ms=round(new_ms, 3), einsum_ms=round(old_ms, 3),
             einsum_over_matmul=round(old_ms / new_ms, 2), max_abs_diff=diff)


class UniformDropout(keras.layers.Layer):
    """Inverted dropout from one `keras.random.uniform` mask."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator(1)

    def call(self, x, training=None):
        keep = keras.random.uniform(ops.shape(x), seed=self.seed_generator) >= self.rate
        return ops.where(keep, x / (1.0 - self.rate), ops.zeros_like(x))


def bench_dropout(config, jit, repeats):
    if keras.backend.backend() != "tensorflow":
        return
    x = tf.constant(np.random.default_rng(0).normal(size=(64, 5000)).astype("float32"))
    ms = {}
    for label, layer in (("keras_dropout", keras.layers.Dropout(0.1)),
                         ("uniform_mask", UniformDropout(0.1))):
        step = tf.function(lambda: layer(x, training=True), jit_compile=jit)
        ms[label] = median_ms(lambda: step().numpy(), repeats)
    emit(bench="dropout", config=config, shape=[64, 5000], rate=0.1,
         keras_dropout_ms=round(ms["keras_dropout"], 3),
         uniform_mask_ms=round(ms["uniform_mask"], 3))


def run_one(config, sizes):
    bench_layers(config, CONFIGS[config][1], sizes, {"small": 10, "paper": 3})
    bench_lmf_layout(config, CONFIGS[config][1], 5)
    bench_dropout(config, CONFIGS[config][1], 10)


def run_all(sizes):
    records = []
    for config, (backend, _) in CONFIGS.items():
        env = dict(os.environ, KERAS_BACKEND=backend)
        out = subprocess.run([sys.executable, __file__, "--config", config, "--sizes", *sizes],
                             env=env, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
                print(line, flush=True)
        write_results(records)  # after each configuration, so a cut run keeps its results
    base = {(r["layer"], r["size"]): r["ms"] for r in records
            if r["bench"] == "layer" and r["config"] == "tf"}
    for r in records:
        if r["bench"] == "layer" and r["config"] != "tf":
            r["ratio_to_tf"] = round(r["ms"] / base[(r["layer"], r["size"])], 2)
            emit(bench="ratio", config=r["config"], layer=r["layer"], size=r["size"],
                 ratio_to_tf=r["ratio_to_tf"])
    write_results(records)


def write_results(records):
    machine = dict(date=datetime.date.today().isoformat(), platform=platform.platform(),
                   cpus=os.cpu_count(), keras=keras.__version__)
    write_json(RESULTS, {"machine": machine, "records": records}, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS))
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "paper"])
    args = parser.parse_args()
    if args.config:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        run_one(args.config, args.sizes)
    else:
        run_all(args.sizes)
