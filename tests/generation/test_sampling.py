"""Next-token sampling, the cached decode loop (vs the uncached reference) and ``generate``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from musicdistill.config import ModelConfig
from musicdistill.generation.guidance import guided_forward
from musicdistill.generation.next_token import race_noise_, sample_next_token
from musicdistill.generation.sampling import generate, sample_tokens
from musicdistill.model.delay import teacher_forcing_batch, undo_delay
from musicdistill.model.generator import build_generator, teacher_forced
from musicdistill.model.text import TextCondition

K, V, TEXT_DIM = 4, 16, 12


def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(dim=32, layers=2, heads=4, max_frames=40), **kw)
    return build_generator(cfg, K, V, TEXT_DIM).eval()


def random_cond(rows: int, seed: int = 1) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(5)[None, :] < torch.randint(1, 6, (rows,), generator=g)[:, None]
    return TextCondition(torch.randn(rows, 5, TEXT_DIM, generator=g), mask)


class HashEncoder:
    """Text-encoder double: each prompt maps to fixed pseudo-random states (seeded by its characters)."""

    dim = TEXT_DIM
    max_prompt_chars = 64

    def encode(self, prompts):
        from musicdistill.model.text import check_prompts

        prompts = check_prompts(prompts, self.max_prompt_chars)
        states = [
            torch.randn(3, TEXT_DIM, generator=torch.Generator().manual_seed(sum(map(ord, p))))
            for p in prompts
        ]
        return TextCondition(torch.stack(states), torch.ones(len(prompts), 3, dtype=torch.bool))


class FakeCodec:
    """Codec double: 25 frames/s, 'decodes' a frame to 10 samples holding its first code."""

    frame_rate = 25.0
    sample_rate = 250

    def decode(self, codes):
        return codes[:, :1].float().repeat_interleave(10, dim=-1)


# --------------------------------------------------------------------------------------------
# sample_next_token
# --------------------------------------------------------------------------------------------


def test_greedy_is_argmax_with_zero_logprob():
    logits = torch.randn(3, K, V)
    tokens, logp = sample_next_token(logits, temperature=0.0)
    assert torch.equal(tokens, logits.argmax(-1))
    assert torch.all(logp == 0)


def test_top_k_1_and_tiny_top_p_are_greedy():
    logits = torch.randn(5, K, V)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, 1.0, top_k=1, generator=g)[0], logits.argmax(-1))
    tokens, logp = sample_next_token(logits, 1.0, top_p=1e-6, generator=g)
    assert torch.equal(tokens, logits.argmax(-1)) and torch.allclose(logp, torch.zeros_like(logp))


def test_samples_follow_the_softmax_and_logprobs_are_exact():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]])
    g = torch.Generator().manual_seed(0)
    draws = sample_next_token(logits.expand(20000, 1, 4), 0.7, generator=g)[0].flatten()
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    expected = (logits[0, 0] / 0.7).softmax(-1)
    assert torch.allclose(freq, expected, atol=0.015)
    tokens, logp = sample_next_token(logits.expand(8, 1, 4), 0.7, generator=g)
    torch.testing.assert_close(logp, expected.log()[tokens])


def test_race_noise_is_finite_unit_exponential():
    g = torch.Generator().manual_seed(3)
    noise = race_noise_(torch.empty(200_000), g)
    assert bool(torch.isfinite(noise).all()) and float(noise.min()) >= 0.0
    # Exp(1): mean 1, variance 1, P(E > 1) = 1/e
    assert abs(float(noise.mean()) - 1.0) < 0.01
    assert abs(float(noise.var()) - 1.0) < 0.03
    assert abs(float((noise > 1.0).float().mean()) - 1 / 2.718281828) < 0.005


def test_top_k_and_top_p_restrict_the_support_and_renormalise():
    logits = torch.tensor([[[3.0, 2.0, 1.0, 0.0, -1.0]]]).expand(500, 1, 5)
    g = torch.Generator().manual_seed(0)
    tokens, logp = sample_next_token(logits, 1.0, top_k=2, generator=g)
    assert set(tokens.unique().tolist()) == {0, 1}
    torch.testing.assert_close(logp, logits[..., :2].log_softmax(-1).gather(-1, tokens[..., None])[..., 0])
    probs = logits[0, 0].softmax(-1)  # 0.64, 0.24, 0.09, ...: p=0.8 keeps the first two
    tokens, _ = sample_next_token(logits, 1.0, top_k=1, top_p=0.8, generator=g)  # top_p takes precedence
    assert set(tokens.unique().tolist()) == {0, 1} and probs[:2].sum() > 0.8 > probs[0]


def test_same_generator_seed_same_tokens():
    logits = torch.randn(4, K, V)
    a = sample_next_token(logits, generator=torch.Generator().manual_seed(3))[0]
    b = sample_next_token(logits, generator=torch.Generator().manual_seed(3))[0]
    c = sample_next_token(logits, generator=torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 11.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": V + 1}, "top_k"),
        ({"top_p": -0.5}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_sampling_settings_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sample_next_token(torch.randn(1, K, V), **kwargs)


# --------------------------------------------------------------------------------------------
# the decode loop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_and_uncached_greedy_decoding_agree_token_for_token(cfg_scale):
    model = tiny_model()
    cond = random_cond(3)
    cached, lp_cached = sample_tokens(model, cond, 12, temperature=0.0, cfg_scale=cfg_scale)
    reference, lp_ref = sample_tokens(model, cond, 12, temperature=0.0, cfg_scale=cfg_scale, use_cache=False)
    assert cached.shape == (3, K, 12)
    assert torch.equal(cached, reference)
    assert not torch.equal(cached[0], cached[1])  # different conditions, different tokens


def test_cached_and_uncached_sampling_agree_with_the_same_seed():
    model = tiny_model()
    cond = random_cond(2)
    a, la = sample_tokens(model, cond, 10, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    b, lb = sample_tokens(
        model, cond, 10, cfg_scale=2.0, generator=torch.Generator().manual_seed(0), use_cache=False
    )
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_logprobs_are_those_of_the_guided_tempered_distribution(cfg_scale):
    model = tiny_model()
    cond = random_cond(3)
    codes, logprobs = sample_tokens(
        model, cond, 8, temperature=0.8, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(1)
    )
    assert codes.min() >= 0 and codes.max() < V  # no special token survives undelaying
    inputs, targets, mask = teacher_forcing_batch(codes, model.delays, model.special_token)
    with torch.no_grad():
        logits = guided_forward(model, inputs, cond, cfg_scale)
    expected = (logits / 0.8).log_softmax(-1).gather(-1, targets.clamp(max=V - 1)[..., None])[..., 0]
    torch.testing.assert_close(logprobs, undo_delay(expected, model.delays), atol=1e-4, rtol=1e-4)
    assert torch.all(logprobs <= 0) and int(mask.sum()) == K * 8


def test_delay_positions_are_forced_to_the_special_token():
    model = tiny_model()
    cond = random_cond(2)
    codes, _ = sample_tokens(model, cond, 6, generator=torch.Generator().manual_seed(0))
    out = teacher_forced(model, codes, cond)
    assert torch.all(out.targets[:, ~out.mask] == V) and torch.all(out.targets[:, out.mask] < V)


def test_outputs_can_feed_a_training_forward():
    model = tiny_model().train()
    cond = random_cond(2)
    codes, _ = sample_tokens(model, cond, 5, generator=torch.Generator().manual_seed(0))
    assert model.training  # restored after sampling
    teacher_forced(model, codes, cond).logits.sum().backward()  # would fail on inference-mode tensors
    assert model.embed.grad is not None


def test_too_many_frames_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="num_frames"):
        sample_tokens(model, random_cond(1), 38)  # 38 + 3 delay steps > 40


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def test_generate_is_prompt_major_seeded_and_decodes_audio():
    model = tiny_model()
    kw = dict(num_samples=3, duration=0.4, cfg_scale=3.0, text_encoder=HashEncoder(), codec=FakeCodec())
    out = generate(model, ["soft piano", "loud drums"], seed=7, **kw)
    assert out.codes.shape == (6, K, 10) and out.logprobs.shape == (6, K, 10)
    assert out.audio.shape == (6, 1, 100)
    assert [out.prompt_of(r) for r in range(6)] == ["soft piano"] * 3 + ["loud drums"] * 3
    assert out.settings["seed"] == 7 and out.settings["num_frames"] == 10
    again = generate(model, ["soft piano", "loud drums"], seed=7, **kw)
    assert torch.equal(out.codes, again.codes) and torch.equal(out.logprobs, again.logprobs)
    other = generate(model, ["soft piano", "loud drums"], seed=8, **kw)
    assert not torch.equal(out.codes, other.codes)
    greedy = generate(model, ["soft piano", "loud drums"], temperature=0.0, seed=0, **kw)
    assert torch.equal(greedy.codes[0], greedy.codes[2]) and not torch.equal(greedy.codes[0], greedy.codes[3])
    chunked = generate(model, ["soft piano", "loud drums"], temperature=0.0, seed=0, batch_size=4, **kw)
    assert torch.equal(chunked.codes, greedy.codes)


def test_generate_cfg_changes_the_distribution():
    model = tiny_model()
    kw = dict(num_samples=1, duration=0.4, temperature=0.0, text_encoder=HashEncoder(), frame_rate=25.0)
    plain = generate(model, ["soft piano"], cfg_scale=1.0, **kw)
    guided = generate(model, ["soft piano"], cfg_scale=10.0, **kw)
    assert plain.audio is None
    assert not torch.equal(plain.codes, guided.codes)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"prompts": []}, "prompts"),
        ({"prompts": ["  "]}, r"prompts\[0\]"),
        ({"prompts": ["x" * 65]}, "64"),
        ({"num_samples": 0}, "num_samples"),
        ({"cfg_scale": -1.0}, "cfg_scale"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": V + 1}, "top_k"),
        ({"top_p": 1.01}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"duration": 2.0}, "duration"),  # 50 frames + 3 > max_frames 40
        ({"duration": 0.0}, "duration"),
        ({"seed": -1}, "seed"),
    ],
)
def test_generate_bad_input_raises_value_error_naming_the_argument(kwargs, name):
    model = tiny_model()
    args = {"prompts": ["soft piano"], "num_samples": 1, "duration": 0.4, "frame_rate": 25.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        generate(model, text_encoder=HashEncoder(), **args)


def test_generate_duration_error_states_the_allowed_range():
    with pytest.raises(ValueError, match=r"it must lie in \(0, 1.48\] s"):  # (40 - 3) frames at 25 Hz
        generate(tiny_model(), ["x"], duration=5.0, frame_rate=25.0, text_encoder=HashEncoder())
