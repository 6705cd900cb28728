"""Tensor and bilinear fusion layers: time, size, and ratios against references.

Prints one JSON object per line:
- `layer`: forward+backward ms per batch (loss `sum(y²)`, gradients of every
  trainable weight) and trainable parameter count of each layer at a small and
  a large size; with `torch` importable, the same math in PyTorch on the same
  weights, its time, `ratio_vs_torch` (ours / torch) and the largest output
  difference (a check that the two compute the same thing).
- `lmf_vs_tfn`: LMF against TFN as the number of modalities and their size grow.
- `mcb_fft_vs_bruteforce`: MCB's FFT product against an explicit O(d²)
  circular convolution of the same count sketches (forward only).
- `count_sketch`: MCB with its segment-sum count sketch against a matmul with
  the dense (d_in, d) sketch matrix.

Both frameworks run single-threaded: in one process their thread pools
otherwise contend (PyTorch steps right after TensorFlow ones measured up to
100x slower on a 2-core machine), which would make the ratios meaningless.

Run: `python benchmarks/bench_tensor_bilinear.py` (TensorFlow backend, CPU).
"""

import datetime
import json
import math
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mmfusion import fusion
from mmfusion.fusion.bilinear import MCB, NORM_EPSILON, SQRT_EPSILON

try:
    import torch
except ImportError:  # the PyTorch comparison is skipped
    torch = None

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
if torch is not None:
    torch.set_num_threads(1)

BATCH = 32
REPEATS = 10
# name -> (small kwargs, large kwargs); "large" uses each layer's defaults.
SIZES = {"small": dict(dims=(16, 16), units=16), "large": dict(dims=(128, 128), units=128)}
CONFIGS = {
    "tfn": ({}, {}),
    "lmf": ({}, {}),
    "mcb": (dict(sketch_size=1024), {}),
    "mlb": (dict(rank=64), {}),
    "mfb": ({}, {}),
    "mfh": ({}, {}),
    "mutan": (dict(hidden_size=32, core_size=32, rank=5), {}),
    "tucker": (dict(hidden_size=16, core_size=16), {}),
    "block": (dict(hidden_size=64, chunks=4, rank=4), {}),
}


def emit(**record):
    print(json.dumps(record), flush=True)


def median_ms(step, repeats=REPEATS):
    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def inputs(dims, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, d)).astype("float32") for d in dims]


def keras_fwd_bwd_ms(layer, xs):
    xs = [tf.constant(x) for x in xs]
    layer(xs)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(xs)))
        return tape.gradient(loss, layer.trainable_weights)

    return median_ms(lambda: [g.numpy() for g in step()])


def trainable_params(layer):
    return int(sum(np.prod(w.shape) for w in layer.trainable_weights))


# ------------------------------------------------------- PyTorch references
def _t_project(w, xs, tag="", act=None):
    out = []
    for m, x in enumerate(xs):
        h = x @ w[f"kernel{tag}_modality_{m}"] + w[f"bias{tag}_modality_{m}"]
        out.append(act(h) if act else h)
    return out


def _t_output(w, z):
    return z @ w["output_kernel"] + w["output_bias"]


def _t_power_l2(z):
    z = z / (torch.sqrt(z.abs() + SQRT_EPSILON) + math.sqrt(SQRT_EPSILON))
    return z * torch.rsqrt(torch.clamp((z * z).sum(-1, keepdim=True), min=NORM_EPSILON))


def _t_prod(tensors):
    return math.prod(tensors[1:], start=tensors[0])


def _t_pool(x, k):
    return x.view(x.shape[0], -1, k).sum(-1)


def _t_with_one(x):
    return torch.cat([x, torch.ones(x.shape[0], 1)], -1)


def _t_tfn(w, xs, layer):
    tensor = _t_with_one(xs[0])
    for x in xs[1:]:
        tensor = torch.einsum("bi,bj->bij", tensor, _t_with_one(x)).reshape(x.shape[0], -1)
    return tensor @ w["kernel"] + w["bias"]


def _t_lmf(w, xs, layer):
    terms = [torch.einsum("bd,rdu->bru", _t_with_one(x), w[f"factor_modality_{m}"])
             for m, x in enumerate(xs)]
    return torch.einsum("bru,r->bu", _t_prod(terms), w["rank_weights"]) + w["bias"]


def _t_mcb(w, xs, layer):
    d = layer.sketch_size
    spectrum = 1.0
    for m, x in enumerate(xs):
        sketch = torch.zeros(x.shape[0], d).index_add_(
            1, w[f"sketch_index_modality_{m}"].long(), x * w[f"sketch_sign_modality_{m}"])
        spectrum = spectrum * torch.fft.rfft(sketch)
    return _t_output(w, _t_power_l2(torch.fft.irfft(spectrum, n=d)))


def _t_mlb(w, xs, layer):
    return _t_output(w, _t_prod(_t_project(w, xs, act=torch.tanh)))


def _t_mfb(w, xs, layer):
    return _t_power_l2(_t_pool(_t_prod(_t_project(w, xs)), layer.factor))


def _t_mfh(w, xs, layer):
    expanded, outputs = 1.0, []
    for i in range(layer.order):
        expanded = expanded * _t_prod(_t_project(w, xs, tag=f"_{i}"))
        outputs.append(_t_power_l2(_t_pool(expanded, layer.factor)))
    return torch.cat(outputs, -1)


def _t_tucker(w, xs, layer):
    q, v = _t_project(w, xs, act=torch.tanh)
    return _t_output(w, torch.einsum("bj,bjk->bk", v, torch.einsum("bi,ijk->bjk", q, w["core"])))


def _t_mutan(w, xs, layer):
    q, v = [(h @ w[f"core_factor_modality_{m}"]).view(h.shape[0], layer.rank, -1)
            for m, h in enumerate(_t_project(w, xs, act=torch.tanh))]
    return _t_output(w, (q * v).sum(1))


def _t_block(w, xs, layer):
    c, size = layer.chunks, layer.hidden_size // layer.chunks
    q, v = [torch.einsum("bcl,clk->bck", h.view(-1, c, size), w[f"block_kernel_modality_{m}"])
            .view(-1, c, layer.rank, size) for m, h in enumerate(_t_project(w, xs))]
    z = _t_power_l2((q * v).sum(2)).reshape(-1, layer.hidden_size)
    return _t_output(w, z)


TORCH = dict(tfn=_t_tfn, lmf=_t_lmf, mcb=_t_mcb, mlb=_t_mlb, mfb=_t_mfb, mfh=_t_mfh,
             tucker=_t_tucker, mutan=_t_mutan, block=_t_block)


def torch_fwd_bwd(name, layer, xs):
    """(ms, output) of the PyTorch reference on the layer's own weights."""
    trainable = {id(w) for w in layer.trainable_weights}
    w = {}
    for v in layer.weights:
        value = torch.from_numpy(np.array(ops.convert_to_numpy(v)))
        w[v.path.split("/")[-1]] = value.requires_grad_(id(v) in trainable)
    xs = [torch.from_numpy(x) for x in xs]
    params = [t for t in w.values() if t.requires_grad]

    def step():
        for p in params:
            p.grad = None
        (TORCH[name](w, xs, layer) ** 2).sum().backward()

    with torch.no_grad():
        out = TORCH[name](w, xs, layer).numpy()
    return median_ms(step), out


# --------------------------------------------------------------- benchmarks
def bench_layers():
    for size, spec in SIZES.items():
        xs = inputs(spec["dims"])
        for name, (small, large) in CONFIGS.items():
            kwargs = small if size == "small" else large
            layer = fusion.get(name, units=spec["units"], **kwargs)
            record = dict(bench="layer", layer=name, size=size, dims=spec["dims"],
                          units=spec["units"], kwargs=kwargs, batch=BATCH,
                          keras_ms=round(keras_fwd_bwd_ms(layer, xs), 3),
                          params=trainable_params(layer))
            if torch is not None:
                torch_ms, out = torch_fwd_bwd(name, layer, xs)
                ours = ops.convert_to_numpy(layer(xs))
                record.update(torch_ms=round(torch_ms, 3),
                              ratio_vs_torch=round(record["keras_ms"] / torch_ms, 3),
                              max_abs_diff=float(np.abs(ours - out).max()))
            emit(**record)


def bench_lmf_vs_tfn(units=16, rank=4):
    for n in (2, 3, 4):
        for d in (8, 32):
            xs = inputs([d] * n)
            tfn, lmf = fusion.get("tfn", units=units), fusion.get("lmf", units=units, rank=rank)
            tfn_ms, lmf_ms = keras_fwd_bwd_ms(tfn, xs), keras_fwd_bwd_ms(lmf, xs)
            emit(bench="lmf_vs_tfn", n_modalities=n, d=d, units=units, rank=rank,
                 tfn_params=trainable_params(tfn), lmf_params=trainable_params(lmf),
                 tfn_ms=round(tfn_ms, 3), lmf_ms=round(lmf_ms, 3),
                 tfn_over_lmf_ms=round(tfn_ms / lmf_ms, 2),
                 tfn_over_lmf_params=round(trainable_params(tfn) / trainable_params(lmf), 1))


def _brute_force_mcb(layer, xs):
    """Circular convolution of the sketches as a (batch, d, d) circulant product."""
    d = layer.sketch_size
    sketches = [layer.count_sketch(x, *s) for x, s in zip(xs, layer.sketches)]
    shifts = (np.arange(d)[:, None] - np.arange(d)[None, :]) % d  # [k, i] -> k - i
    result = sketches[0]
    for sketch in sketches[1:]:
        circulant = ops.take(sketch, shifts.reshape(-1), axis=1)
        result = ops.einsum("bi,bki->bk", result, ops.reshape(circulant, (-1, d, d)))
    return result


def bench_mcb_fft_vs_bruteforce(batch=8):
    for d in (256, 1024, 2048):
        xs = [tf.constant(x) for x in inputs((64, 64), batch=batch)]
        layer = MCB(sketch_size=d, power_norm=False, l2_norm=False)
        layer(xs)
        fft = tf.function(lambda: layer(xs))
        brute = tf.function(lambda: _brute_force_mcb(layer, xs))
        diff = float(np.abs(fft().numpy() - brute().numpy()).max())
        fft_ms = median_ms(lambda: fft().numpy())
        brute_ms = median_ms(lambda: brute().numpy(), repeats=3)
        emit(bench="mcb_fft_vs_bruteforce", sketch_size=d, batch=batch, fft_ms=round(fft_ms, 3),
             brute_force_ms=round(brute_ms, 3), brute_over_fft=round(brute_ms / fft_ms, 1),
             max_abs_diff=diff)


class MatmulSketchMCB(MCB):
    """MCB whose count sketch is a matmul with the dense sketch matrix."""

    def count_sketch(self, x, index, sign):
        matrix = ops.one_hot(index, self.sketch_size, dtype=x.dtype) * ops.expand_dims(sign, 1)
        return ops.matmul(x, matrix)


def bench_count_sketch():
    for dims, d in (((16, 16), 1024), ((128, 128), 16000), ((2048, 2048), 16000)):
        xs = inputs(dims)
        ms = {}
        for label, cls in (("segment_sum", MCB), ("matmul", MatmulSketchMCB)):
            ms[label] = keras_fwd_bwd_ms(cls(units=16, sketch_size=d), xs)
        emit(bench="count_sketch", dims=dims, sketch_size=d,
             segment_sum_ms=round(ms["segment_sum"], 3), matmul_ms=round(ms["matmul"], 3),
             matmul_over_segment_sum=round(ms["matmul"] / ms["segment_sum"], 2))


def main():
    emit(bench="machine", date=datetime.date.today().isoformat(), platform=platform.platform(),
         cpus=os.cpu_count(), keras=keras.__version__, backend=keras.backend.backend(),
         tensorflow=tf.__version__, torch=None if torch is None else torch.__version__)
    start = time.perf_counter()
    bench_layers()
    bench_lmf_vs_tfn()
    bench_mcb_fft_vs_bruteforce()
    bench_count_sketch()
    emit(bench="total", seconds=round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    main()
