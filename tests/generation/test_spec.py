"""The one sampling spec: ranges checked once, with the setting and its range in the message."""

from __future__ import annotations

import pytest

from musicdistill.config import MAX_CFG_SCALE, GenerateConfig
from musicdistill.generation.spec import SamplingSpec


def test_a_spec_is_checked_once_and_says_what_it_costs() -> None:
    spec = SamplingSpec(cfg_scale=3, temperature=1, top_k=20, top_p=0)
    assert (spec.cfg_scale, spec.temperature) == (3.0, 1.0) and isinstance(spec.cfg_scale, float)
    assert spec.guided and spec.rows_per_sample == 2 and not spec.greedy
    plain = SamplingSpec()
    assert not plain.guided and plain.rows_per_sample == 1
    assert SamplingSpec(temperature=0.0).greedy
    assert SamplingSpec.from_config(GenerateConfig(), cfg_scale=1.0) == SamplingSpec(1.0, 1.0, 0, 0.0)
    assert SamplingSpec.from_config(GenerateConfig()).cfg_scale == GenerateConfig().cfg_scale


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"cfg_scale": MAX_CFG_SCALE + 1},
            rf"cfg_scale=51.0 is out of range; it must lie in \[0, {MAX_CFG_SCALE:g}\]",
        ),
        ({"cfg_scale": True}, "cfg_scale=True"),
        ({"temperature": -0.1}, r"temperature=-0.1 is out of range; it must lie in \[0, 10\] \(0 = greedy\)"),
        ({"top_k": -1}, "top_k=-1 is out of range"),
        ({"top_k": 2.0}, "top_k=2.0"),
        ({"top_p": 1.5}, r"top_p=1.5 is out of range; it must lie in \[0, 1\]"),
    ],
)
def test_bad_settings_name_the_setting_and_its_range(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingSpec(**kwargs)


def test_top_k_is_checked_against_the_codebook() -> None:
    assert SamplingSpec(top_k=16).for_cardinality(16).top_k == 16
    with pytest.raises(ValueError, match=r"top_k=17 is out of range; it must be an integer in \[0, 16\]"):
        SamplingSpec(top_k=17).for_cardinality(16)


def test_the_config_and_the_spec_share_one_cfg_limit() -> None:
    from musicdistill.config import load_config
    from musicdistill.config.schema import ConfigError

    assert load_config(None, [f"generate.cfg_scale={MAX_CFG_SCALE}"]).generate.cfg_scale == MAX_CFG_SCALE
    with pytest.raises(ConfigError):
        load_config(None, [f"distill.gamma={MAX_CFG_SCALE + 1}"])


def test_the_multinomial_draw_follows_the_softmax_and_is_refused_by_the_fast_decoder() -> None:
    import torch

    from musicdistill.generation.next_token import draw_next_token

    with pytest.raises(ValueError, match="draw='gumbel'"):
        SamplingSpec(draw="gumbel")
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]]).expand(20000, 1, 4)
    spec = SamplingSpec(temperature=0.7, draw="multinomial")
    tokens, logp = draw_next_token(logits, spec, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens.flatten(), minlength=4).float() / tokens.numel()
    expected = (logits[0, 0] / 0.7).softmax(-1)
    assert torch.allclose(freq, expected, atol=0.015)
    torch.testing.assert_close(logp, expected.log()[tokens])

    from musicdistill.config import ModelConfig
    from musicdistill.generation.sampling import sample_tokens
    from musicdistill.model.generator import build_generator
    from musicdistill.model.text import TextCondition

    model = build_generator(
        ModelConfig(dim=16, layers=1, heads=2, max_frames=12, delays=[0, 1]), 2, 8, 4
    ).eval()
    cond = TextCondition(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="draws by the race only"):
        sample_tokens(model, cond, 4, spec=spec, fast=True)
    codes, _ = sample_tokens(model, cond, 4, spec=spec, generator=torch.Generator().manual_seed(1))
    assert codes.shape == (1, 2, 4)
