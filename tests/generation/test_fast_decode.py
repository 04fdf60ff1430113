"""The static-shape decoder (fast_decode) against the reference loop of sample_tokens, token for token."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from musicdistill.config import ModelConfig
from musicdistill.generation import fast_decode
from musicdistill.generation.fast_decode import DecodeSpec, StaticDecoder
from musicdistill.generation.sampling import sample_tokens
from musicdistill.model.delay import apply_delay
from musicdistill.model.generator import build_generator
from musicdistill.model.text import TextCondition

K, V, TEXT_DIM, FRAMES = 4, 16, 12, 14


def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(dim=32, layers=2, heads=4, max_frames=40), **kw)
    return build_generator(cfg, K, V, TEXT_DIM).eval()


def random_cond(rows: int, seed: int = 1, null_row: bool = True) -> TextCondition:
    """Rows with 1-5 text tokens; with ``null_row`` the last row is the null condition (no text)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(5)[None, :] < torch.randint(1, 6, (rows,), generator=g)[:, None]
    states = torch.randn(rows, 5, TEXT_DIM, generator=g)
    if null_row:
        mask[-1] = False
        states[-1] = 0.0
    return TextCondition(states, mask)


def reference(model, cond, **kw):
    return sample_tokens(model, cond, FRAMES, fast=False, **kw)


def fast(model, cond, **kw):
    return sample_tokens(model, cond, FRAMES, fast=True, **kw)


@pytest.fixture(autouse=True)
def _fresh_decoders():
    yield
    fast_decode._DECODERS.clear()


# --------------------------------------------------------------------------------------------
# Greedy: token for token
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delays", [[0, 1, 2, 3], [0, 0, 0, 0]])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize("chunk", [4, 64])
def test_greedy_equals_reference(delays, cfg_scale, chunk):
    model = tiny_model(delays=delays)
    cond = random_cond(3)
    codes_ref, lp_ref = reference(model, cond, temperature=0.0, cfg_scale=cfg_scale)
    spec = DecodeSpec(
        rows=3, num_frames=FRAMES, text_len=5, temperature=0.0, cfg_scale=cfg_scale, chunk=chunk
    )
    seq, logps = StaticDecoder(model, spec).run(cond)
    assert torch.equal(seq, apply_delay(codes_ref, delays, model.special_token))
    assert torch.equal(logps, torch.zeros_like(logps)) and torch.equal(lp_ref, torch.zeros_like(lp_ref))
    codes_fast, _ = fast(model, cond, temperature=0.0, cfg_scale=cfg_scale)
    assert torch.equal(codes_fast, codes_ref)


@pytest.mark.parametrize(
    "variant",
    [{"positions": "learned"}, {"text_fusion": "sum"}, {"text_fusion": "both"}, {"activation": "swiglu"}],
)
def test_greedy_equals_reference_for_every_model_variant(variant):
    model = tiny_model(**variant)
    cond = random_cond(2)
    for cfg_scale in (1.0, 2.5):
        codes_ref, _ = reference(model, cond, temperature=0.0, cfg_scale=cfg_scale)
        codes_fast, _ = fast(model, cond, temperature=0.0, cfg_scale=cfg_scale)
        assert torch.equal(codes_fast, codes_ref), (variant, cfg_scale)


def test_greedy_output_is_not_trivial():
    """The comparison above would be vacuous if every row decoded the same constant token."""
    codes, _ = fast(tiny_model(), random_cond(3, null_row=False), temperature=0.0, cfg_scale=3.0)
    assert codes.unique().numel() > 3
    assert not torch.equal(codes[0], codes[1])


# --------------------------------------------------------------------------------------------
# Sampling with a fixed generator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings", [{"temperature": 1.0}, {"temperature": 0.8, "top_k": 5}, {"temperature": 1.2, "top_p": 0.7}]
)
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_samples_equal_reference_for_a_fixed_seed(settings, cfg_scale):
    model = tiny_model()
    cond = random_cond(4)
    codes_ref, lp_ref = reference(
        model, cond, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(7), **settings
    )
    codes_fast, lp_fast = fast(
        model, cond, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(7), **settings
    )
    assert torch.equal(codes_fast, codes_ref)
    torch.testing.assert_close(lp_fast, lp_ref, rtol=1e-5, atol=1e-5)
    assert bool((lp_fast < 0).any())  # real draws, not a degenerate distribution


def test_generator_state_advances_like_the_reference():
    """Two calls in a row on one generator give what two reference calls give (same noise consumed)."""
    model = tiny_model()
    cond = random_cond(2)
    g_ref, g_fast = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(2):
        a, _ = reference(model, cond, top_k=8, generator=g_ref)
        b, _ = fast(model, cond, top_k=8, generator=g_fast)
        assert torch.equal(a, b)
    assert torch.equal(g_ref.get_state(), g_fast.get_state())


# --------------------------------------------------------------------------------------------
# Reuse of the cached decoder
# --------------------------------------------------------------------------------------------


def test_decoder_is_reused_and_pads_shorter_text():
    model = tiny_model()
    fast(model, random_cond(3), temperature=0.0)
    first = fast_decode.cached_decoder(model)
    full = random_cond(3, seed=5)
    short = TextCondition(full.states[:, :3], full.mask[:, :3])
    codes_fast, _ = fast(model, short, temperature=0.0)
    assert fast_decode.cached_decoder(model) is first
    assert torch.equal(codes_fast, reference(model, short, temperature=0.0)[0])


def test_new_settings_replace_the_decoder():
    model = tiny_model()
    fast(model, random_cond(3), temperature=0.0)
    first = fast_decode.cached_decoder(model)
    fast(model, random_cond(3), temperature=0.0, cfg_scale=2.0)
    second = fast_decode.cached_decoder(model)
    assert second is not first and second.spec.cfg_scale == 2.0
    fast_decode.release(model)
    assert fast_decode.cached_decoder(model) is None


def test_in_place_weight_updates_are_seen_and_moved_weights_rebuild():
    model = tiny_model()
    cond = random_cond(2)
    before, _ = fast(model, cond, temperature=0.0)
    decoder = fast_decode.cached_decoder(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # an optimizer step: same storage, new values
    after, _ = fast(model, cond, temperature=0.0)
    assert fast_decode.cached_decoder(model) is decoder
    assert not torch.equal(after, before)
    assert torch.equal(after, reference(model, cond, temperature=0.0)[0])
    model.head = torch.nn.Parameter(model.head.detach() * 1.5)  # new storage: must not read the old address
    moved, _ = fast(model, cond, temperature=0.0)
    assert fast_decode.cached_decoder(model) is not decoder
    assert torch.equal(moved, reference(model, cond, temperature=0.0)[0])


def test_cpu_default_keeps_the_reference_loop():
    model = tiny_model()
    cond = random_cond(2)
    a, _ = sample_tokens(model, cond, FRAMES, generator=torch.Generator().manual_seed(0))
    assert fast_decode.cached_decoder(model) is None
    b, _ = reference(model, cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_mode_is_restored_and_outputs_are_ordinary_tensors():
    model = tiny_model().train()
    codes, logprobs = fast(model, random_cond(2), top_k=4, generator=torch.Generator().manual_seed(0))
    assert model.training
    assert not codes.is_inference() and not logprobs.is_inference()
    assert codes.shape == (2, K, FRAMES)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_bad_requests_raise_value_errors():
    model = tiny_model()
    cond = random_cond(2)
    with pytest.raises(ValueError, match="use_cache"):
        sample_tokens(model, cond, FRAMES, fast=True, use_cache=False)
    with pytest.raises(ValueError, match="fast="):
        sample_tokens(model, cond, FRAMES, fast="yes")
    with pytest.raises(ValueError, match="native Generator"):
        StaticDecoder(torch.nn.Linear(2, 2), DecodeSpec(rows=1, num_frames=4, text_len=1))
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecoder(model, DecodeSpec(rows=2, num_frames=4, text_len=5), graphs=True)
    with pytest.raises(ValueError, match="chunk"):
        StaticDecoder(model, DecodeSpec(rows=2, num_frames=4, text_len=5, chunk=0))
    decoder = StaticDecoder(model, DecodeSpec(rows=2, num_frames=4, text_len=3))
    with pytest.raises(ValueError, match="rows"):
        decoder.run(random_cond(3))
    with pytest.raises(ValueError, match="text tokens"):
        decoder.run(cond)  # 5 text tokens > 3


# --------------------------------------------------------------------------------------------
# CUDA graphs (skipped without a GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cuda_graph_greedy_equals_eager_and_reference(cfg_scale):
    model = tiny_model().cuda()
    cond = random_cond(3).to("cuda")
    spec = DecodeSpec(rows=3, num_frames=FRAMES, text_len=5, temperature=0.0, cfg_scale=cfg_scale, chunk=4)
    graphed = StaticDecoder(model, spec, graphs=True).run(cond)[0].clone()
    eager = StaticDecoder(model, spec, graphs=False).run(cond)[0].clone()
    assert torch.equal(graphed, eager)
    codes_auto, _ = sample_tokens(model, cond, FRAMES, temperature=0.0, cfg_scale=cfg_scale)  # fast on CUDA
    assert fast_decode.cached_decoder(model) is not None and fast_decode.cached_decoder(model).graphs
    assert torch.equal(codes_auto, reference(model, cond, temperature=0.0, cfg_scale=cfg_scale)[0])


@pytest.mark.gpu
def test_cuda_graph_samples_equal_eager_for_a_fixed_seed():
    model = tiny_model().cuda()
    cond = random_cond(4).to("cuda")
    spec = DecodeSpec(rows=4, num_frames=FRAMES, text_len=5, temperature=1.0, top_k=6, cfg_scale=2.0, chunk=4)
    graphed = (
        StaticDecoder(model, spec, graphs=True).run(cond, torch.Generator("cuda").manual_seed(5))[0].clone()
    )
    eager = (
        StaticDecoder(model, spec, graphs=False).run(cond, torch.Generator("cuda").manual_seed(5))[0].clone()
    )
    assert torch.equal(graphed, eager)
