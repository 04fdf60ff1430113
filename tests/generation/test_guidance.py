"""CFG arithmetic against transformers' processor, the doubled batch, the guided teacher forward."""

from __future__ import annotations

import pytest
import torch

from musicdistill.config import ModelConfig
from musicdistill.generation.guidance import (
    apply_cfg,
    cfg_batch,
    check_cfg_scale,
    combine_cfg_batch,
    guided_forward,
)
from musicdistill.model.generator import build_generator
from musicdistill.model.text import TextCondition


def cond_of(rows: int, length: int = 4, dim: int = 8) -> TextCondition:
    g = torch.Generator().manual_seed(rows)
    return TextCondition(
        torch.randn(rows, length, dim, generator=g), torch.ones(rows, length, dtype=torch.bool)
    )


@pytest.mark.parametrize("scale", [1.5, 3.0, 7.25])
def test_apply_cfg_equals_transformers_processor(scale):
    from transformers import ClassifierFreeGuidanceLogitsProcessor

    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(6, 2048, generator=g), torch.randn(6, 2048, generator=g)
    ids = torch.zeros(6, 1, dtype=torch.long)
    expected = ClassifierFreeGuidanceLogitsProcessor(scale)(ids, torch.cat([cond, uncond]))
    assert torch.equal(apply_cfg(cond, uncond, scale), expected)
    assert torch.equal(combine_cfg_batch(torch.cat([cond, uncond]), scale), expected)


def test_scale_one_is_conditional_and_zero_is_unconditional():
    cond, uncond = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    assert apply_cfg(cond, uncond, 1.0) is cond
    torch.testing.assert_close(apply_cfg(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(apply_cfg(cond, uncond, 2.0), 2 * cond - uncond)


def test_cfg_batch_puts_conditional_rows_first_then_null_rows():
    cond = cond_of(3)
    doubled = cfg_batch(cond)
    assert len(doubled) == 6
    assert torch.equal(doubled.states[:3], cond.states) and torch.equal(doubled.mask[:3], cond.mask)
    assert torch.all(doubled.states[3:] == 0) and not doubled.mask[3:].any()


def test_guided_forward_is_the_doubled_batch_combined():
    torch.manual_seed(0)
    model = build_generator(ModelConfig(dim=32, layers=1, heads=4, max_frames=16), 4, 8, 8).eval()
    cond = cond_of(2)
    inputs = torch.randint(0, 9, (2, 4, 6))
    with torch.no_grad():
        guided = guided_forward(model, inputs, cond, 3.0)
        both = model(torch.cat([inputs, inputs]), cfg_batch(cond))
        torch.testing.assert_close(guided, both[2:] + 3.0 * (both[:2] - both[2:]))
        torch.testing.assert_close(guided_forward(model, inputs, cond, 1.0), model(inputs, cond))


def test_bad_scales_and_batches_raise():
    for bad in (-0.1, 51.0, True, "3"):
        with pytest.raises(ValueError, match="cfg_scale"):
            check_cfg_scale(bad)
    with pytest.raises(ValueError, match="even"):
        combine_cfg_batch(torch.zeros(3, 4), 3.0)
