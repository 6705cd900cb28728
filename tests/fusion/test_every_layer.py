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
from tests.layer_checks import SMALL_BILINEAR

SIZES = {2: (6, 10), 3: (6, 10, 4)}

# Non-default configurations of each family: (class, constructor arguments, modalities).
VARIANTS = {
    **{f"{name}_small": (fusion.get_class(name), dict(units=4, **kwargs),
                         3 if fusion.get_class(name).accepts(3) else 2)
       for name, kwargs in SMALL_BILINEAR.items()},
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
# Checks that do not apply to a configuration, and why.
NOT_APPLICABLE = {
    # With one target the output is computed from the target modality alone
    # (the other one only enters the adversarial loss), as documented.
    ("gan_fusion_single_target", "presence"),
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
KNOWN_FAILURES = {}


def contract_cases():
    for key, (cls, _, _) in CONFIGURATIONS.items():
        for check in CHECKS:
            if (check == "keras_mask" and cls.input_rank != 3) or (key, check) in NOT_APPLICABLE:
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
