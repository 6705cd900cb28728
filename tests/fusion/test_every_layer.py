"""The fusion-layer contract (`mmfusion.testing`), checked for every
registered layer and for the non-default configurations of each family.

Layers that land later are covered automatically: each must work as
`mmfusion.fusion.get(name, units=8)` on two modalities of sizes 6 and 10
(vectors, or sequences of lengths 5 and 7), and N-modal layers on three.
Each (configuration, check) pair is one test, so a known failure is marked
on exactly that pair (`KNOWN_FAILURES`, strict: it must be removed once the
layer passes).
"""

import numpy as np
import pytest

from mmfusion import fusion
from mmfusion.fusion import (
    LMF,
    AttentionPooling,
    AutoFusion,
    BilinearAttention,
    CoAttention,
    CrossModalAttention,
    GANFusion,
    MultimodalSets,
    StackedAttention,
)
from mmfusion.testing import CHECKS, run_fusion_layer_test

SIZES = {2: (6, 10), 3: (6, 10, 4)}

# Non-default configurations of each family: (class, constructor arguments, modalities).
BILINEAR_SMALL = {
    "mcb": dict(sketch_size=32),
    "mlb": dict(rank=8),
    "mfb": dict(factor=2),
    "mfh": dict(factor=2),
    "mutan": dict(hidden_size=6, core_size=5, rank=2),
    "tucker": dict(hidden_size=6, core_size=5),
    "block": dict(hidden_size=8, chunks=2, rank=2),
}
VARIANTS = {
    **{f"{name}_small": (fusion.get_class(name), dict(units=4, **kwargs),
                         3 if fusion.get_class(name).accepts(3) else 2)
       for name, kwargs in BILINEAR_SMALL.items()},
    "lmf_rank_2": (LMF, dict(units=4, rank=2), 3),
    "attention_pooling_no_bias": (AttentionPooling, dict(units=8, use_bias=False), 2),
    "cross_modal_one_head_no_ffn": (CrossModalAttention,
                                    dict(units=8, num_heads=1, feed_forward=False), 2),
    "co_attention_small": (CoAttention, dict(units=8, attention_units=4), 2),
    "stacked_attention_one_hop": (StackedAttention, dict(units=8, attention_units=4, hops=1), 2),
    "bilinear_attention_2_glimpses": (BilinearAttention,
                                      dict(units=8, attention_units=4, glimpses=2), 2),
    **{f"multimodal_sets_{p}": (MultimodalSets, dict(units=8, pooling=p), 2)
       for p in ("sum", "mean", "transformer")},
    "autofusion_weight_0.1": (AutoFusion, dict(units=8, reconstruction_weight=0.1), 2),
    "gan_fusion_single_target": (GANFusion, dict(units=8, target=1, adversarial_weight=0.5), 2),
}


def configurations():
    """`{id: (class, constructor arguments, sizes)}`: every registered layer
    with 2 and 3 modalities where it takes them, then `VARIANTS`."""
    found = {}
    for name in fusion.available():
        cls = fusion.get_class(name)
        for n in (2, 3):
            if cls.accepts(n):
                found[f"{name}-{n}"] = (cls, {"units": 8}, SIZES[n])
    for key, (cls, kwargs, n) in VARIANTS.items():
        found[key] = (cls, kwargs, SIZES[n])
    return found


CONFIGURATIONS = configurations()

# (configuration id, check) -> why it fails today. Strict: a pair that passes
# fails the run until its entry is removed.
KNOWN_FAILURES = {
    ("attention_pooling-2", "empty_batch"): "a batch of size 0 raises",
    ("attention_pooling-3", "empty_batch"): "a batch of size 0 raises",
    ("attention_pooling_no_bias", "empty_batch"): "a batch of size 0 raises",
    ("bilinear_attention-2", "empty_batch"): "a batch of size 0 raises",
    ("bilinear_attention-2", "placeholders"): "NaN in absent rows reaches the output",
    ("bilinear_attention_2_glimpses", "empty_batch"): "a batch of size 0 raises",
    ("bilinear_attention_2_glimpses", "placeholders"): "NaN in absent rows reaches the output",
    ("block-2", "distinct_weights"): "two weights start identical",
    ("block-2", "placeholders"): "NaN in absent rows reaches the output",
    ("block_small", "distinct_weights"): "two weights start identical",
    ("block_small", "placeholders"): "NaN in absent rows reaches the output",
    ("co_attention-2", "distinct_weights"): "affinity_kernel and query_kernel start identical",
    ("co_attention-2", "empty_batch"): "a batch of size 0 raises",
    ("co_attention-2", "placeholders"): "NaN in absent rows reaches the output",
    ("co_attention_small", "distinct_weights"): "affinity_kernel and query_kernel start identical",
    ("co_attention_small", "empty_batch"): "a batch of size 0 raises",
    ("co_attention_small", "placeholders"): "NaN in absent rows reaches the output",
    ("cross_modal_attention-2", "empty_batch"): "a batch of size 0 raises",
    ("cross_modal_attention-2", "mixed_precision"):
        "sublayers ignore the dtype policy (mixed_float16)",
    ("cross_modal_attention-2", "placeholders"): "NaN in absent rows reaches the output",
    ("cross_modal_attention-3", "empty_batch"): "a batch of size 0 raises",
    ("cross_modal_attention-3", "mixed_precision"):
        "sublayers ignore the dtype policy (mixed_float16)",
    ("cross_modal_attention-3", "placeholders"): "NaN in absent rows reaches the output",
    ("cross_modal_one_head_no_ffn", "empty_batch"): "a batch of size 0 raises",
    ("cross_modal_one_head_no_ffn", "mixed_precision"):
        "sublayers ignore the dtype policy (mixed_float16)",
    ("cross_modal_one_head_no_ffn", "placeholders"): "NaN in absent rows reaches the output",
    ("gan_fusion_single_target", "presence"): "an absent modality changes the output",
    ("mcb-2", "mixed_precision"): "raises under a mixed policy (e.g. RFFT in float16)",
    ("mcb-2", "placeholders"): "NaN in absent rows reaches the output",
    ("mcb-3", "mixed_precision"): "raises under a mixed policy (e.g. RFFT in float16)",
    ("mcb-3", "placeholders"): "NaN in absent rows reaches the output",
    ("mcb_small", "mixed_precision"): "raises under a mixed policy (e.g. RFFT in float16)",
    ("mcb_small", "placeholders"): "NaN in absent rows reaches the output",
    ("mfb-2", "mixed_precision"): "sublayers ignore the dtype policy (mixed_float16)",
    ("mfb-2", "placeholders"): "NaN in absent rows reaches the output",
    ("mfb-3", "mixed_precision"): "sublayers ignore the dtype policy (mixed_float16)",
    ("mfb-3", "placeholders"): "NaN in absent rows reaches the output",
    ("mfb_small", "mixed_precision"): "sublayers ignore the dtype policy (mixed_float16)",
    ("mfb_small", "placeholders"): "NaN in absent rows reaches the output",
    ("mfh-2", "distinct_weights"): "kernel_0_modality_0 and kernel_1_modality_0 start identical",
    ("mfh-2", "mixed_precision"): "sublayers ignore the dtype policy (mixed_float16)",
    ("mfh-2", "placeholders"): "NaN in absent rows reaches the output",
    ("mfh-3", "distinct_weights"): "kernel_0_modality_0 and kernel_1_modality_0 start identical",
    ("mfh-3", "mixed_precision"): "sublayers ignore the dtype policy (mixed_float16)",
    ("mfh-3", "placeholders"): "NaN in absent rows reaches the output",
    ("mfh_small", "distinct_weights"):
        "kernel_0_modality_0 and kernel_1_modality_0 start identical",
    ("mfh_small", "mixed_precision"): "sublayers ignore the dtype policy (mixed_float16)",
    ("mfh_small", "placeholders"): "NaN in absent rows reaches the output",
    ("mlb-2", "placeholders"): "NaN in absent rows reaches the output",
    ("mlb-3", "placeholders"): "NaN in absent rows reaches the output",
    ("mlb_small", "placeholders"): "NaN in absent rows reaches the output",
    ("multimodal_sets-2", "empty_batch"): "a batch of size 0 raises",
    ("multimodal_sets-3", "empty_batch"): "a batch of size 0 raises",
    ("multimodal_sets_mean", "placeholders"):
        "NaN/Inf placeholders (absent rows or padded steps) reach the output",
    ("multimodal_sets_sum", "placeholders"):
        "NaN/Inf placeholders (absent rows or padded steps) reach the output",
    ("multimodal_sets_transformer", "empty_batch"): "a batch of size 0 raises",
    ("multimodal_sets_transformer", "mixed_precision"): "fails under a float64/mixed policy",
    ("multimodal_sets_transformer", "placeholders"):
        "NaN/Inf placeholders (absent rows or padded steps) reach the output",
    ("mutan-2", "distinct_weights"): "two weights start identical",
    ("mutan-2", "placeholders"): "NaN in absent rows reaches the output",
    ("mutan_small", "distinct_weights"): "two weights start identical",
    ("mutan_small", "placeholders"): "NaN in absent rows reaches the output",
    ("stacked_attention-2", "distinct_weights"): "two weights start identical",
    ("stacked_attention-2", "empty_batch"): "a batch of size 0 raises",
    ("stacked_attention-2", "placeholders"): "NaN in absent rows reaches the output",
    ("stacked_attention_one_hop", "distinct_weights"): "two weights start identical",
    ("stacked_attention_one_hop", "empty_batch"): "a batch of size 0 raises",
    ("stacked_attention_one_hop", "placeholders"): "NaN in absent rows reaches the output",
    ("tucker-2", "placeholders"): "NaN in absent rows reaches the output",
    ("tucker_small", "placeholders"): "NaN in absent rows reaches the output",
}


def contract_cases():
    for key, (cls, _, _) in CONFIGURATIONS.items():
        for check in CHECKS:
            if check == "keras_mask" and cls.input_rank != 3:
                continue
            reason = KNOWN_FAILURES.get((key, check))
            marks = [pytest.mark.xfail(strict=True, reason=f"{check}: {reason}")] if reason else []
            yield pytest.param(key, check, marks=marks, id=f"{key}-{check}")


@pytest.mark.parametrize("key, check", list(contract_cases()))
def test_contract(key, check):
    cls, kwargs, sizes = CONFIGURATIONS[key]
    assert run_fusion_layer_test(cls, kwargs, sizes, checks=[check]) == [check]


def test_known_failures_name_real_cases():
    unknown = sorted(set(KNOWN_FAILURES) - {
        (key, check) for key in CONFIGURATIONS for check in CHECKS})
    assert not unknown, unknown


@pytest.mark.parametrize("name", fusion.available())
def test_modality_count_limits(name):
    cls = fusion.get_class(name)
    rng = np.random.default_rng(0)
    shape = (4, 5) if cls.input_rank == 3 else (4,)
    xs = [rng.normal(size=shape + (d,)).astype("float32") for d in SIZES[3]]
    with pytest.raises(ValueError, match=f"{cls.__name__}.*modalities"):
        fusion.get(name, units=8)(xs[:1])
    if cls.max_modalities == 2:
        expected = f"{cls.__name__}.*exactly 2.*take 3 modalities: .*mlb"
        with pytest.raises(ValueError, match=expected):
            fusion.get(name, units=8)(xs)
