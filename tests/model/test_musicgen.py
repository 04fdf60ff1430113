"""The MusicGen backbone adapter against transformers' own MusicGen (tiny random model, offline).

Every reference below is computed by transformers itself: its forward, its generation-time null
condition (``_prepare_text_encoder_kwargs_for_generation``), its ``ClassifierFreeGuidanceLogitsProcessor``
and its ``generate``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from musicdistill.generation.guidance import guided_forward
from musicdistill.generation.sampling import generate, sample_tokens
from musicdistill.model.delay import teacher_forcing_batch
from musicdistill.model.musicgen import MusicgenBackbone, load_backbone, resolve_pretrained
from musicdistill.model.text import TextCondition, null_condition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musicgen_fixture import build_tiny_musicgen  # noqa: E402

transformers = pytest.importorskip("transformers")

from musicgen_fixture import FRAMES, K, V  # noqa: E402

PROMPTS = ["a calm piano melody", "loud drums with a distorted bass line and guitars"]  # unequal lengths


@pytest.fixture(scope="module")
def musicgen_dir(tmp_path_factory) -> Path:
    model, tokenizer = build_tiny_musicgen()
    path = tmp_path_factory.mktemp("musicgen") / "tiny-musicgen"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_model(musicgen_dir):
    return transformers.MusicgenForConditionalGeneration.from_pretrained(musicgen_dir).eval()


@pytest.fixture(scope="module")
def tokenizer(musicgen_dir):
    return transformers.AutoTokenizer.from_pretrained(musicgen_dir)


@pytest.fixture(scope="module")
def loaded(musicgen_dir):
    return load_backbone(musicgen_dir)


def random_codes(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (rows, K, FRAMES), generator=torch.Generator().manual_seed(seed))


def hf_decoder_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """Our ``[B, K, S]`` -> transformers' ``decoder_input_ids [B·K, S]``."""
    return inputs.reshape(-1, inputs.shape[-1])


def hf_logits(logits: torch.Tensor, rows: int) -> torch.Tensor:
    """transformers' ``[B·K, S, V]`` -> ours ``[B, K, S, V]``."""
    return logits.view(rows, K, *logits.shape[1:])


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_backbone_exposes_musicgens_layout(loaded, hf_model):
    backbone, text_encoder, codec = loaded
    assert (backbone.num_codebooks, backbone.cardinality, backbone.special_token) == (K, V, V)
    assert backbone.delays == (0, 1, 2, 3)
    assert backbone.max_steps == 64
    assert backbone.enc_to_dec_proj is not None  # T5 width 24 != decoder width 32
    assert text_encoder.dim == backbone.text_dim == 24
    assert (codec.num_codebooks, codec.cardinality) == (K, V)
    assert codec.frame_rate == pytest.approx(75.0)
    assert not backbone.training
    # the labels-forward quirk is fixed on the loaded config
    assert backbone.decoder.config.decoder_start_token_id == V
    proj = hf_model.enc_to_dec_proj
    hf_params = sum(p.numel() for p in [*hf_model.decoder.parameters(), *proj.parameters()])
    assert backbone.num_parameters() == hf_params


def test_text_encoder_matches_musicgens_padded_t5(loaded, hf_model, tokenizer):
    _, text_encoder, _ = loaded
    cond = text_encoder.encode(PROMPTS)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        states = hf_model.text_encoder(**batch).last_hidden_state
    assert torch.equal(cond.mask, batch["attention_mask"].bool())
    torch.testing.assert_close(cond.states[cond.mask], states[cond.mask], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Teacher-forced, cached and guided logits
# --------------------------------------------------------------------------------------------


def test_teacher_forced_logits_equal_transformers_forward(loaded, hf_model, tokenizer):
    backbone, text_encoder, _ = loaded
    inputs, _, _ = teacher_forcing_batch(random_codes(2), backbone.delays, backbone.special_token)
    cond = text_encoder.encode(PROMPTS)
    with torch.no_grad():
        ours = backbone(inputs, cond)
        same_states = hf_model(
            encoder_outputs=(cond.states,),
            attention_mask=cond.mask.long(),
            decoder_input_ids=hf_decoder_inputs(inputs),
        ).logits
        batch = tokenizer(PROMPTS, padding=True, return_tensors="pt", return_token_type_ids=False)
        from_text = hf_model(**batch, decoder_input_ids=hf_decoder_inputs(inputs)).logits
    assert ours.dtype == torch.float32 and ours.shape == (2, K, FRAMES + K - 1, V)
    torch.testing.assert_close(ours, hf_logits(same_states, 2), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours, hf_logits(from_text, 2), atol=1e-4, rtol=1e-4)


def test_null_condition_is_musicgens_generation_null_row(loaded, hf_model, tokenizer):
    """transformers' CFG null row (zeroed states and mask, built by generate itself) gives our null logits."""
    backbone, text_encoder, _ = loaded
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    kwargs = hf_model._prepare_text_encoder_kwargs_for_generation(
        batch["input_ids"],
        {"attention_mask": batch["attention_mask"]},
        "input_ids",
        transformers.GenerationConfig(guidance_scale=3.0),
    )
    states, mask = kwargs["encoder_outputs"].last_hidden_state, kwargs["attention_mask"]
    assert states.shape[0] == mask.shape[0] == 4
    assert not states[2:].any() and not mask[2:].any()  # the null rows: zeros, nothing attended
    inputs, _, _ = teacher_forcing_batch(random_codes(2, seed=3), backbone.delays, backbone.special_token)
    with torch.no_grad():
        hf_null = hf_model(
            encoder_outputs=(states[2:],),
            attention_mask=mask[2:],
            decoder_input_ids=hf_decoder_inputs(inputs),
        ).logits
        ours_null = backbone(inputs, null_condition(text_encoder.encode(PROMPTS)))
        ours_cond = backbone(inputs, text_encoder.encode(PROMPTS))
    torch.testing.assert_close(ours_null, hf_logits(hf_null, 2), atol=1e-6, rtol=1e-6)
    assert (ours_null - ours_cond).abs().max() > 1e-3  # the text matters


def test_cfg_logits_equal_transformers_cfg_processor(loaded, hf_model, tokenizer):
    backbone, text_encoder, _ = loaded
    scale = 3.0
    inputs, _, _ = teacher_forcing_batch(random_codes(2, seed=5), backbone.delays, backbone.special_token)
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    kwargs = hf_model._prepare_text_encoder_kwargs_for_generation(
        batch["input_ids"],
        {"attention_mask": batch["attention_mask"]},
        "input_ids",
        transformers.GenerationConfig(guidance_scale=scale),
    )
    ids = hf_decoder_inputs(inputs)
    with torch.no_grad():
        doubled = hf_model(
            encoder_outputs=kwargs["encoder_outputs"],
            attention_mask=kwargs["attention_mask"],
            decoder_input_ids=torch.cat([ids, ids]),
        ).logits  # [2·B·K, S, V]
        ours = guided_forward(backbone, inputs, text_encoder.encode(PROMPTS), scale)
    processor = transformers.ClassifierFreeGuidanceLogitsProcessor(scale)
    for s in range(inputs.shape[-1]):
        expected = processor(ids[:, : s + 1], doubled[:, s])  # [B·K, V]
        torch.testing.assert_close(ours[:, :, s], expected.view(2, K, V), atol=1e-4, rtol=1e-5)


def test_cached_steps_equal_teacher_forced_logits_for_mixed_rows(loaded):
    backbone, text_encoder, _ = loaded
    cond = text_encoder.encode(PROMPTS)
    rows = TextCondition(
        torch.cat([cond.states, torch.zeros_like(cond.states)]),
        torch.cat([cond.mask, torch.zeros_like(cond.mask)]),
    )  # conditional and null rows
    inputs, _, _ = teacher_forcing_batch(random_codes(4, seed=7), backbone.delays, backbone.special_token)
    steps = inputs.shape[-1]
    with torch.no_grad():
        full = backbone(inputs, rows)
        cache = backbone.init_cache(rows, steps)
        for s in range(steps):
            step = backbone.forward_step(inputs[:, :, s], cache, s)
            torch.testing.assert_close(step, full[:, :, s], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="feed step"):
        backbone.forward_step(inputs[:, :, 0], cache, 0)


def test_teacher_forced_pass_trains_the_decoder(musicgen_dir):
    backbone = MusicgenBackbone.from_pretrained(musicgen_dir).train()
    cond = TextCondition(torch.randn(2, 3, backbone.text_dim), torch.ones(2, 3, dtype=torch.bool))
    inputs, targets, mask = teacher_forcing_batch(random_codes(2), backbone.delays, backbone.special_token)
    logits = backbone(inputs, cond)
    loss = torch.nn.functional.cross_entropy(logits[:, mask].reshape(-1, V), targets[:, mask].reshape(-1))
    loss.backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert backbone.enc_to_dec_proj.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Generation against transformers' generate
# --------------------------------------------------------------------------------------------


def run_hf_generate(hf_model, tokenizer, monkeypatch, scale: float):
    """transformers' greedy ``generate``: (codes [B, K, T], audio [B, 1, N], decoder inputs per position)."""
    captured: dict[str, torch.Tensor] = {}
    decode = hf_model.audio_encoder.decode

    def capture_decode(codes, *args, **kwargs):
        captured["codes"] = codes[0].clone()  # [1, B, K, T] -> [B, K, T]
        return decode(codes, *args, **kwargs)

    fed: dict[int, torch.Tensor] = {}

    def record_inputs(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        fed[0 if cache is None else cache.get_seq_length()] = kwargs["input_ids"][:, -1].clone()

    monkeypatch.setattr(hf_model.audio_encoder, "decode", capture_decode)
    hook = hf_model.decoder.register_forward_pre_hook(record_inputs, with_kwargs=True)
    try:
        batch = tokenizer(PROMPTS, padding=True, return_tensors="pt", return_token_type_ids=False)
        audio = hf_model.generate(
            **batch, do_sample=False, guidance_scale=scale, max_new_tokens=FRAMES + K - 1
        )
    finally:
        hook.remove()
        monkeypatch.undo()
    steps = FRAMES + K - 1
    inputs = torch.stack([fed[s] for s in range(steps)], dim=-1)[: len(PROMPTS) * K]  # conditional rows
    return captured["codes"], audio, inputs.view(len(PROMPTS), K, steps)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_greedy_sampling_equals_transformers_generate(loaded, hf_model, tokenizer, monkeypatch, scale):
    backbone, text_encoder, codec = loaded
    hf_codes, hf_audio, hf_inputs = run_hf_generate(hf_model, tokenizer, monkeypatch, scale)
    codes, logprobs = sample_tokens(
        backbone, text_encoder.encode(PROMPTS), FRAMES, temperature=0.0, cfg_scale=scale
    )
    assert torch.equal(codes, hf_codes)
    assert len(torch.unique(codes)) > 8  # a real sequence, not a constant
    # the sequences the decoder saw are bit-identical to our teacher-forcing layout
    inputs, _, _ = teacher_forcing_batch(codes, backbone.delays, backbone.special_token)
    assert torch.equal(inputs, hf_inputs)
    # and generate() through the codec gives transformers' audio
    result = generate(
        backbone,
        PROMPTS,
        num_samples=1,
        duration=FRAMES / codec.frame_rate,
        temperature=0.0,
        cfg_scale=scale,
        codec=codec,
        text_encoder=text_encoder,
    )
    assert torch.equal(result.codes, hf_codes)
    torch.testing.assert_close(result.audio, hf_audio.float(), atol=1e-5, rtol=1e-4)


def test_guidance_changes_greedy_tokens(loaded):
    backbone, text_encoder, _ = loaded
    cond = text_encoder.encode(PROMPTS)
    plain, _ = sample_tokens(backbone, cond, FRAMES, temperature=0.0, cfg_scale=1.0)
    guided, _ = sample_tokens(backbone, cond, FRAMES, temperature=0.0, cfg_scale=3.0)
    assert not torch.equal(plain, guided)


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------


def test_save_pretrained_round_trip_keeps_the_finetuned_decoder(loaded, musicgen_dir, tmp_path):
    backbone, text_encoder, codec = loaded
    student = MusicgenBackbone.from_pretrained(musicgen_dir)
    with torch.no_grad():  # stands in for finetuning
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    reference = {k: v.clone() for k, v in student.state_dict().items()}
    out = tmp_path / "student"
    out.mkdir()
    (out / "stale.txt").write_text("replaced")
    student.save_pretrained(out, text_encoder, codec)
    assert (out / "model.safetensors").is_file() and not (out / "stale.txt").exists()
    assert not list(tmp_path.glob(".student*"))  # no temporary folder left behind
    again, text_again, codec_again = load_backbone(out)
    assert again.state_dict().keys() == reference.keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in reference.items())
    assert all(torch.equal(student.state_dict()[k], v) for k, v in reference.items())  # saving changed none
    inputs, _, _ = teacher_forcing_batch(random_codes(2), student.delays, student.special_token)
    cond = text_again.encode(PROMPTS)
    torch.testing.assert_close(cond.states, text_encoder.encode(PROMPTS).states)
    with torch.no_grad():
        torch.testing.assert_close(again(inputs, cond), student(inputs, cond))
        assert not torch.allclose(backbone(inputs, cond), student(inputs, cond))
    codes = random_codes(1)
    torch.testing.assert_close(codec_again.decode(codes), codec.decode(codes))
    # transformers itself reads the export
    hf = transformers.MusicgenForConditionalGeneration.from_pretrained(out)
    assert torch.equal(hf.enc_to_dec_proj.weight, student.enc_to_dec_proj.weight)
    assert json.loads((out / "config.json").read_text())["decoder"]["decoder_start_token_id"] == V


def test_state_dict_loads_into_a_fresh_backbone(musicgen_dir):
    """The checkpoint route: weights saved by musicdistill.storage.checkpoint reload onto the base model."""
    trained = MusicgenBackbone.from_pretrained(musicgen_dir)
    with torch.no_grad():
        trained.enc_to_dec_proj.weight.mul_(2.0)
    fresh = MusicgenBackbone.from_pretrained(musicgen_dir)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    assert torch.equal(fresh.enc_to_dec_proj.weight, trained.enc_to_dec_proj.weight)
    assert all(k.startswith(("decoder.", "enc_to_dec_proj.")) for k in fresh.state_dict())
    teacher = copy.deepcopy(fresh)  # the distillation loop's frozen teacher is a deep copy
    inputs, _, _ = teacher_forcing_batch(random_codes(1), fresh.delays, fresh.special_token)
    cond = TextCondition(torch.randn(1, 3, fresh.text_dim), torch.ones(1, 3, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(teacher(inputs, cond), fresh(inputs, cond), atol=0, rtol=0)
        fresh.enc_to_dec_proj.weight.zero_()
        assert not torch.equal(teacher(inputs, cond), fresh(inputs, cond))


def test_bfloat16_backbone_gives_float32_logits(loaded, musicgen_dir):
    backbone, text_encoder, _ = loaded
    half, half_text, _ = load_backbone(musicgen_dir, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    assert half_text.encode(PROMPTS).states.dtype == torch.float32
    inputs, _, _ = teacher_forcing_batch(random_codes(2), backbone.delays, backbone.special_token)
    cond = text_encoder.encode(PROMPTS)
    with torch.no_grad():
        low, full = half(inputs, cond), backbone(inputs, cond)
    assert low.dtype == torch.float32
    assert (low.argmax(-1) == full.argmax(-1)).float().mean() > 0.9


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_missing_directory_and_offline_hub_id_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="model_type='t5'"):
        load_backbone(tmp_path)
    with pytest.raises(ValueError, match="model.pretrained is empty"):
        resolve_pretrained("")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set.*local directory"):
        load_backbone("facebook/musicgen-small-not-cached")


def test_bad_inputs_are_rejected(loaded):
    backbone, text_encoder, _ = loaded
    cond = text_encoder.encode(PROMPTS)
    inputs, _, _ = teacher_forcing_batch(random_codes(2), backbone.delays, backbone.special_token)
    with pytest.raises(ValueError, match="width"):
        backbone(inputs, TextCondition(torch.zeros(2, 3, 7), torch.ones(2, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="rows"):
        backbone(inputs[:1], cond)
    with pytest.raises(ValueError, match=r"\[0, 64\]"):
        backbone(inputs + V, cond)
    with pytest.raises(ValueError, match="context"):
        backbone(torch.zeros(2, K, 65, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="max_steps"):
        backbone.init_cache(cond, 65)
    with pytest.raises(ValueError, match="num_frames"):
        sample_tokens(backbone, cond, 62)


def test_stereo_and_mismatched_special_tokens_are_refused():
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    def decoder(**kw):
        config = MusicgenDecoderConfig(
            vocab_size=8,
            hidden_size=8,
            num_hidden_layers=1,
            ffn_dim=8,
            num_attention_heads=2,
            num_codebooks=2,
            pad_token_id=8,
            bos_token_id=8,
            **kw,
        )
        return MusicgenForCausalLM(config)

    with pytest.raises(ValueError, match="audio_channels=2"):
        MusicgenBackbone(decoder(audio_channels=2), None, 8)
    bad = decoder()
    bad.config.decoder_start_token_id = 3
    with pytest.raises(ValueError, match="decoder_start_token_id=3"):
        MusicgenBackbone(bad, None, 8)
    with pytest.raises(ValueError, match="text_dim=5"):
        MusicgenBackbone(decoder(), None, 5)
