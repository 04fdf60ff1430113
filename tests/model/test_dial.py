"""The diversity dial: a freshly attached dial changes nothing for any w; w acts only through its parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from musicdistill.generation.sampling import sample_tokens
from musicdistill.model.dial import DiversityDial, check_dial, check_w
from musicdistill.model.generator import build_generator
from musicdistill.model.loading import generator_from_state_dict
from musicdistill.model.text import TextCondition, concat_conditions, null_condition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill_fixture import TEXT_DIM, K, V, fake_encode, tiny_config  # noqa: E402

W = (0.0, 0.25, 0.5, 1.0)


def _pair(tmp_path: Path):
    """A tiny generator and a copy of it with a freshly attached dial."""
    cfg = tiny_config(tmp_path, steps=1)
    torch.manual_seed(0)
    plain = build_generator(cfg.model, K, V, TEXT_DIM).eval()
    dialed = build_generator(cfg.model, K, V, TEXT_DIM).eval()
    dialed.load_state_dict(plain.state_dict())
    dialed.attach_dial(8)
    return plain, dialed


def _inputs(rows: int) -> torch.Tensor:
    return torch.randint(0, V, (rows, K, 8), generator=torch.Generator().manual_seed(1))


def test_at_initialisation_every_w_gives_the_base_outputs(tmp_path: Path) -> None:
    plain, dialed = _pair(tmp_path)
    cond = fake_encode(["a", "b", "c"])
    inputs = _inputs(3)
    with torch.no_grad():
        reference = plain(inputs, cond)
        for w in W:
            assert torch.equal(dialed(inputs, cond.with_dial(w)), reference)
        assert torch.equal(dialed(inputs, cond), reference)  # no w: w = 0
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    base_codes, _ = sample_tokens(plain, cond, 6, generator=gen())
    for w in W:
        for fast in (False, True):
            codes, _ = sample_tokens(dialed, cond.with_dial(w), 6, generator=gen(), fast=fast)
            assert torch.equal(codes, base_codes), (w, fast)


def test_w_changes_outputs_only_through_the_dials_parameters(tmp_path: Path) -> None:
    _, dialed = _pair(tmp_path)
    with torch.no_grad():
        torch.nn.init.normal_(dialed.dial.out.weight, std=1.0)  # a trained dial
    cond = fake_encode(["a", "b"])
    inputs = _inputs(2)
    with torch.no_grad():
        low, high = dialed(inputs, cond.with_dial(0.0)), dialed(inputs, cond.with_dial(1.0))
    assert not torch.allclose(low, high)
    out = dialed(inputs, cond.with_dial(torch.tensor([0.2, 0.9])))
    out.sum().backward()
    assert dialed.dial.out.weight.grad.abs().sum() > 0
    # the same generator with the dial's output zeroed again: w no longer matters
    with torch.no_grad():
        dialed.dial.out.weight.zero_()
        assert torch.equal(dialed(inputs, cond.with_dial(0.0)), dialed(inputs, cond.with_dial(1.0)))
    # reference and fast decoding agree with a trained dial too
    with torch.no_grad():
        torch.nn.init.normal_(dialed.dial.out.weight, std=1.0)
    codes = [
        sample_tokens(dialed, cond.with_dial(0.7), 6, generator=torch.Generator().manual_seed(5), fast=f)[0]
        for f in (False, True)
    ]
    assert torch.equal(codes[0], codes[1])


def test_a_conditioned_generator_saves_and_loads_with_its_dial(tmp_path: Path) -> None:
    _, dialed = _pair(tmp_path)
    with torch.no_grad():
        torch.nn.init.normal_(dialed.dial.out.weight, std=1.0)
    cfg = tiny_config(tmp_path, steps=1)
    loaded = generator_from_state_dict(cfg.model, dialed.state_dict()).eval()  # the dial found in the weights
    assert loaded.dial is not None and loaded.dial.hidden == 8
    cond, inputs = fake_encode(["x"]).with_dial(0.6), _inputs(1)
    with torch.no_grad():
        assert torch.equal(loaded(inputs, cond), dialed(inputs, cond))


def test_the_dial_rides_on_the_condition_and_is_checked() -> None:
    cond = fake_encode(["a", "b"]).with_dial(torch.tensor([0.1, 0.9]))
    assert cond.repeat_interleave(2).dial.tolist() == pytest.approx([0.1, 0.1, 0.9, 0.9])
    assert cond.select(slice(1, 2)).dial.tolist() == pytest.approx([0.9])
    assert null_condition(cond).dial is cond.dial
    mixed = concat_conditions([cond, fake_encode(["c"])])
    assert mixed.dial.tolist() == pytest.approx([0.1, 0.9, 0.0])  # a row without w runs at w = 0
    assert concat_conditions([fake_encode(["c"])]).dial is None
    with pytest.raises(ValueError, match=r"one w per row, \[2\]"):
        TextCondition(cond.states, cond.mask, torch.zeros(3))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        check_dial(torch.tensor([0.5, 1.5]), 2)
    with pytest.raises(ValueError, match="w=2 must be a number in"):
        check_w(2)
    with pytest.raises(ValueError, match="hidden >= 1"):
        DiversityDial(16, 0)


def test_attach_dial_refuses_another_width(tmp_path: Path) -> None:
    _, dialed = _pair(tmp_path)
    dialed.attach_dial(8)  # the same width: kept
    with pytest.raises(ValueError, match="has 8 hidden units, not 4"):
        dialed.attach_dial(4)
