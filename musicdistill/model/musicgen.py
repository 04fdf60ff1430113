"""Pretrained MusicGen (transformers) behind the generator interface of :mod:`musicdistill.model.generator`.

:class:`MusicgenBackbone` wraps the decoder of a ``MusicgenForConditionalGeneration``
(``MusicgenForCausalLM`` plus the text-to-decoder projection ``enc_to_dec_proj`` when the model has
one), so sampling, pretraining and distillation run on MusicGen unchanged. The text encoder stays
outside, as a :class:`musicdistill.model.text.TextEncoder` holding the model's own T5 and tokenizer
(:func:`musicgen_text_encoder`), and the model's EnCodec becomes a codec through
:class:`musicdistill.codec.encodec_adapters.HFEncodecCodec`. :func:`load_backbone` returns all three.
In the main job, :func:`musicgen_codec` picks the run's EnCodec and checks it against the decoder,
and :mod:`musicdistill.model.loading` keeps the backbone's state dict as a checkpoint
(``model.backbone: musicgen``).

Conventions, checked against transformers' ``modeling_musicgen.py`` (and by tests/model/test_musicgen.py):

- Token layout. ``MusicgenForCausalLM.build_delay_pattern_mask`` delays codebook k by k steps and
  fills both the BOS step and the delay padding with one id (``generate`` passes
  ``decoder_start_token_id`` as its ``pad_token_id``; the released checkpoints set both to
  2048 = V). That is :mod:`musicdistill.model.delay` with ``delays = [0, 1, ..., K-1]`` and
  ``special_token = pad_token_id``. The backbone refuses a checkpoint whose
  ``decoder_start_token_id`` differs from its ``pad_token_id``, or whose pad id is not V (it would
  collide with a real code).
- Null condition. With ``guidance_scale > 1``, ``_prepare_text_encoder_kwargs_for_generation``
  appends ``torch.zeros_like(last_hidden_state)`` and a zero attention mask to the batch;
  ``forward`` then computes ``enc_to_dec_proj(states) * attention_mask[..., None]`` and gives the
  decoder's cross-attention the same mask. :func:`musicdistill.model.text.null_condition` (zero states,
  all-False mask) is therefore exactly MusicGen's null row, and the backbone projects and masks
  every row the same way.
- CFG. ``generate`` appends ``ClassifierFreeGuidanceLogitsProcessor``: conditional rows first, null
  rows second, ``uncond + scale · (cond − uncond)`` on raw logits, which is
  :func:`musicdistill.generation.guidance.apply_cfg` on a :func:`musicdistill.generation.guidance.cfg_batch`.
- Training. ``model(labels=...)`` without decoder inputs needs ``config.decoder.decoder_start_token_id``,
  which converted checkpoints may lack; the backbone sets it to the pad id so that an exported
  model also trains with transformers' own loss. Our teacher-forced path never uses ``labels``.
  The decoder keeps the checkpoint's dropout (0.1 for the released models) in ``train()`` mode.

Only mono checkpoints (``audio_channels = 1``) are supported.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from musicdistill.codec.encodec_adapters import HFEncodecCodec
from musicdistill.codec.factory import fit_codec
from musicdistill.config import CodecConfig
from musicdistill.model.dial import DiversityDial, check_dial, check_w
from musicdistill.model.text import TextCondition, TextEncoder
from musicdistill.storage.atomic import replace_directory

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}
SUPPORTED_MODEL_TYPES = ("musicgen",)
DOWNLOAD_HINT = "huggingface-cli download facebook/musicgen-small --local-dir DIR"


@dataclass
class MusicgenCache:
    """Decoding state for N rows: transformers' self/cross-attention cache and the text memory.

    ``memory [N, S, D]`` holds the projected, masked text states and ``memory_mask [N, S]`` (int64)
    the cross-attention mask; ``kv`` is an ``EncoderDecoderCache`` that grows as steps are fed
    (``length`` of them, at most ``max_steps``). Cross-attention keys/values are computed on the
    first step and reused after.
    """

    kv: Any
    memory: torch.Tensor
    memory_mask: torch.Tensor
    max_steps: int
    length: int = 0


class MusicgenBackbone(nn.Module):
    """A transformers MusicGen decoder with the interface of :class:`musicdistill.model.generator.Generator`.

    Args:
        decoder: the ``MusicgenForCausalLM`` (mono; ``pad_token_id`` = ``vocab_size``).
        enc_to_dec_proj: the ``nn.Linear`` from text width to decoder width, or None when the model
            has none (equal widths, or ``cross_attention_hidden_size`` set).
        text_dim: width D of the text-encoder states the conditions carry.
        generation_config: the composite model's ``GenerationConfig``, kept for :meth:`save_pretrained`.
    """

    def __init__(
        self,
        decoder: nn.Module,
        enc_to_dec_proj: nn.Linear | None,
        text_dim: int,
        generation_config: Any = None,
    ) -> None:
        super().__init__()
        config = decoder.config
        _check_decoder_config(config)
        config.decoder_start_token_id = config.pad_token_id  # the labels-forward quirk (module docstring)
        expected = enc_to_dec_proj.in_features if enc_to_dec_proj is not None else config.hidden_size
        if text_dim != expected:
            raise ValueError(f"text_dim={text_dim} does not match the decoder's text input width {expected}")
        self.decoder = decoder
        self.enc_to_dec_proj = enc_to_dec_proj
        self.dial: DiversityDial | None = None  # a conditioned student's (attach_dial)
        self.text_dim = text_dim
        self.generation_config = generation_config
        self.num_codebooks = int(config.num_codebooks)
        self.cardinality = int(config.vocab_size)
        self.special_token = int(config.pad_token_id)
        self.delays = tuple(range(self.num_codebooks))
        self.max_steps = int(config.max_position_embeddings)
        self._cache_arg = _cache_argument_name(decoder)
        self.train(decoder.training)

    @classmethod
    def from_musicgen(cls, model: nn.Module) -> MusicgenBackbone:
        """The decoder (and projection) of a ``MusicgenForConditionalGeneration``, shared, not copied."""
        return cls(
            model.decoder,
            getattr(model, "enc_to_dec_proj", None),
            int(model.config.text_encoder.hidden_size),
            getattr(model, "generation_config", None),
        )

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> MusicgenBackbone:
        """The backbone of a MusicGen directory (hub id only when online); its T5 and EnCodec are dropped."""
        return cls.from_musicgen(load_musicgen(path_or_id, device, dtype))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def dial_folded(self, w: float) -> Iterator[None]:
        """Within the block, the dial's term at ``w`` is folded into ``enc_to_dec_proj``'s bias and the dial
        is detached: the backbone is then a plain MusicGen whose outputs equal the conditioned student's
        at ``w`` (what ``save_pretrained`` writes for transformers). Restored on exit."""
        if self.dial is None:
            yield
            return
        proj = self.enc_to_dec_proj
        if proj is None or proj.bias is None:
            raise ValueError(
                "this MusicGen has no enc_to_dec_proj bias to fold the diversity dial into; export it as a "
                "musicdistill checkpoint instead"
            )
        dial, bias = self.dial, proj.bias.detach().clone()
        with torch.no_grad():
            term = dial(torch.tensor([check_w(w)], device=bias.device))[0, 0].to(proj.weight.dtype)
            proj.bias.add_(proj.weight @ term)
        self.dial = None
        try:
            yield
        finally:
            self.dial = dial
            with torch.no_grad():
                proj.bias.copy_(bias)

    def attach_dial(self, hidden: int) -> None:
        """Make this backbone a conditioned student: a :class:`~musicdistill.model.dial.DiversityDial`
        whose vector (text width) is added to every text state before ``enc_to_dec_proj``. Its output
        layer starts at zero, so no output changes; the decoder itself is untouched, so it still loads
        in transformers (for a fixed w the dial's term folds into the projection's bias). Kept when
        it has one that wide."""
        if self.dial is not None:
            if self.dial.hidden != hidden:
                raise ValueError(f"this backbone's dial has {self.dial.hidden} hidden units, not {hidden}")
            return
        weight = next(self.decoder.parameters())
        self.dial = DiversityDial(self.text_dim, hidden).to(device=weight.device, dtype=weight.dtype)

    # -- shared pieces ----------------------------------------------------------------------

    def _check_cond(self, cond: TextCondition, rows: int) -> None:
        if len(cond) != rows:
            raise ValueError(f"the condition has {len(cond)} rows but the token batch has {rows}")
        if cond.dim != self.text_dim:
            raise ValueError(
                f"the condition has width {cond.dim}; this MusicGen expects text states of "
                f"width {self.text_dim} (use the model's own text encoder, see load_backbone)"
            )

    def _memory(self, cond: TextCondition) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition -> (decoder-width states ``[B, S, D]``, zero at masked tokens; mask ``[B, S]`` int64).

        As ``MusicgenForConditionalGeneration.forward``: project, then multiply by the mask.
        """
        weight = next(self.decoder.parameters())
        states = cond.states.to(device=weight.device, dtype=weight.dtype)
        mask = cond.mask.to(weight.device).long()
        if self.dial is not None:  # w (0 when the condition has none) on every text state
            w = cond.dial if cond.dial is not None else states.new_zeros(len(cond))
            states = states + self.dial(check_dial(w.to(weight.device), len(cond))).to(states.dtype)
        if self.enc_to_dec_proj is not None:
            states = self.enc_to_dec_proj(states)
        return states * mask[..., None], mask

    # -- teacher-forced ---------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        """Teacher-forced logits: ``inputs [B, K, S]`` -> ``[B, K, S, V]`` float32.

        ``inputs`` come from :func:`musicdistill.model.delay.teacher_forcing_batch`.
        """
        if inputs.dim() != 3 or inputs.shape[1] != self.num_codebooks:
            raise ValueError(
                f"inputs must have shape [B, K={self.num_codebooks}, S], got {tuple(inputs.shape)}"
            )
        b, k, s = inputs.shape
        if s > self.max_steps:
            raise ValueError(
                f"inputs have {s} steps; this MusicGen's context is {self.max_steps} steps "
                "(max_position_embeddings)"
            )
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) > self.special_token):
            raise ValueError(
                f"input tokens must lie in [0, {self.special_token}] (V entries plus the special token)"
            )
        self._check_cond(cond, b)
        memory, mask = self._memory(cond)
        out = self.decoder(
            input_ids=inputs.reshape(b * k, s),
            encoder_hidden_states=memory,
            encoder_attention_mask=mask,
            use_cache=False,
        )
        return out.logits.view(b, k, s, self.cardinality).float()

    # -- incremental decoding ----------------------------------------------------------------

    def init_cache(self, cond: TextCondition, max_steps: int) -> MusicgenCache:
        """An empty cache for ``len(cond)`` rows and up to ``max_steps`` steps."""
        from transformers import DynamicCache, EncoderDecoderCache

        if not 1 <= max_steps <= self.max_steps:
            raise ValueError(
                f"max_steps={max_steps} must lie in [1, {self.max_steps}] (max_position_embeddings)"
            )
        self._check_cond(cond, len(cond))
        memory, mask = self._memory(cond)
        kv = EncoderDecoderCache(DynamicCache(), DynamicCache())
        return MusicgenCache(kv=kv, memory=memory, memory_mask=mask, max_steps=max_steps)

    def forward_step(self, tokens: torch.Tensor, cache: MusicgenCache, pos: int) -> torch.Tensor:
        """Logits ``[N, K, V]`` (float32) after feeding the input tokens ``[N, K]`` of step ``pos``.

        Token values are not checked here (no device sync per step); the sampler produces them.
        """
        if pos != cache.length or pos >= cache.max_steps:
            raise ValueError(
                f"pos={pos}: the cache holds {cache.length} of {cache.max_steps} steps; "
                f"feed step {cache.length} next"
            )
        n, k = tokens.shape
        if k != self.num_codebooks or n != cache.memory.shape[0]:
            raise ValueError(
                f"tokens must have shape [N={cache.memory.shape[0]}, K={self.num_codebooks}], "
                f"got {tuple(tokens.shape)}"
            )
        out = self.decoder(
            input_ids=tokens.reshape(n * k, 1),
            encoder_hidden_states=cache.memory,
            encoder_attention_mask=cache.memory_mask,
            use_cache=True,
            **{self._cache_arg: cache.kv},
        )
        cache.length = pos + 1
        return out.logits.view(n, k, self.cardinality).float()

    # -- export --------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, text_encoder: TextEncoder, codec: Any) -> Path:
        """Write a complete transformers MusicGen directory (safetensors) holding this decoder.

        ``text_encoder`` (from :func:`musicgen_text_encoder`) and ``codec`` (an ``HFEncodecCodec``)
        supply the other two sub-models and the tokenizer; the folder also holds the processor
        (``AutoProcessor``: the tokenizer and EnCodec's feature extractor). The result loads with
        :func:`load_backbone` and with ``MusicgenForConditionalGeneration.from_pretrained``. An
        existing directory is replaced only once the new one is complete.
        """
        model = assemble_musicgen(self, text_encoder.model, _codec_model(codec))
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            _save_processor(tmp, text_encoder.tokenizer, int(model.config.audio_encoder.sampling_rate))
            replace_directory(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved MusicGen (%d decoder parameters) to %s", self.num_parameters(), target)
        return target


def _save_processor(folder: Path, tokenizer: Any, sampling_rate: int) -> None:
    """The tokenizer and EnCodec's feature extractor, as a ``MusicgenProcessor`` when the tokenizer is
    T5's (the released models), else side by side (a processor refuses other tokenizers)."""
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0)
    try:
        MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
    except (TypeError, ValueError) as exc:
        log.info("saving the tokenizer and feature extractor apart (%s)", exc)
        tokenizer.save_pretrained(folder)
        features.save_pretrained(folder)


def _check_decoder_config(config: Any) -> None:
    """Raise ValueError for MusicGen decoders whose layout the delay pattern cannot express."""
    if getattr(config, "audio_channels", 1) != 1:
        raise ValueError(
            f"this MusicGen decoder has audio_channels={config.audio_channels}; only mono "
            "checkpoints (audio_channels=1, e.g. facebook/musicgen-small) are supported"
        )
    pad = config.pad_token_id
    if pad != config.vocab_size:
        raise ValueError(
            f"decoder pad_token_id={pad} must equal vocab_size={config.vocab_size} (MusicGen "
            "uses the extra embedding entry V as BOS and delay padding)"
        )
    start = getattr(config, "decoder_start_token_id", None)
    if start is not None and start != pad:
        raise ValueError(
            f"decoder_start_token_id={start} differs from pad_token_id={pad}; MusicGen feeds "
            "one special id as BOS and as delay padding"
        )


def _cache_argument_name(decoder: nn.Module) -> str:
    """``cache`` in newer transformers 5.x, ``past_key_values`` before (both accepted in between)."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _codec_model(codec: Any) -> nn.Module:
    model = getattr(codec, "model", None)
    if model is None or type(model).__name__ != "EncodecModel":
        raise ValueError(
            f"codec must wrap a transformers EncodecModel (HFEncodecCodec), got {type(codec).__name__}"
        )
    return model


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").upper() in _OFFLINE_VALUES for name in names)


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"MusicGen path {path} is not a directory; pass a folder holding a "
            "transformers MusicGen (config.json + model.safetensors)"
        )
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{config} is missing: {path} is not a transformers model directory; "
            f"download one with '{DOWNLOAD_HINT}'"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"{config} is not a valid JSON object ({exc})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{config} has model_type={model_type!r}; only {list(SUPPORTED_MODEL_TYPES)} "
            "(MusicgenForConditionalGeneration) is supported"
        )


def resolve_pretrained(path_or_id: str | Path) -> str:
    """A checked local MusicGen directory, or a hub id; raises with the fix for anything else.

    A hub id is left to the loader, which finds it in the local Hugging Face cache or downloads it
    (not with ``HF_HUB_OFFLINE``); a path that does not exist fails here.
    """
    text = str(path_or_id).strip()
    if not text:
        raise ValueError(
            f"model.pretrained is empty; give a local MusicGen directory (e.g. from '{DOWNLOAD_HINT}')"
        )
    path = Path(text).expanduser()
    if path.exists():
        _check_local_dir(path)
        return str(path)
    if path.is_absolute() or text.startswith((".", "~")) or not _HUB_ID.match(text):
        raise FileNotFoundError(
            f"MusicGen directory {text} does not exist; pass a local folder holding a "
            "transformers MusicGen (config.json + model.safetensors)"
        )
    return text


def load_musicgen(
    path_or_id: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """``MusicgenForConditionalGeneration`` from a local directory (or a hub id when online), in eval mode."""
    from transformers import MusicgenForConditionalGeneration

    source = resolve_pretrained(path_or_id)
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        if Path(source).is_dir():
            raise
        why = "the download failed"
        if hub_offline():
            why = "HF_HUB_OFFLINE is set, so nothing can be downloaded"
        raise FileNotFoundError(
            f"cannot load MusicGen {source!r}: {why}; pass a local directory holding the model (config.json, "
            f"model.safetensors and the tokenizer files), e.g. made with 'huggingface-cli download {source} "
            "--local-dir DIR' on a machine with network"
        ) from exc
    return model.to(device).eval()


def musicgen_text_encoder(
    model: nn.Module,
    tokenizer: Any,
    name: str,
    max_tokens: int = 64,
    max_prompt_chars: int = 512,
    cache_size: int = 4096,
) -> TextEncoder:
    """MusicGen's text encoder: a :class:`musicdistill.model.text.TextEncoder` on the model's own T5 and tokenizer.

    It has the interface every generator expects (``encode(prompts) -> TextCondition``, ``dim``,
    ``device``, ``to``); the states are the T5 encoder's last hidden states ``[B, S, D]``, as in
    MusicGen's ``generate`` (the backbone applies ``enc_to_dec_proj``). A stand-alone T5 directory
    loads with ``musicdistill.model.text.load_text_encoder(dir)`` instead.
    """
    return TextEncoder(tokenizer, model.text_encoder, name, max_tokens, max_prompt_chars, cache_size)


def load_backbone(
    path_or_id: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_tokens: int = 64,
    max_prompt_chars: int = 512,
    cache_size: int = 4096,
) -> tuple[MusicgenBackbone, TextEncoder, Any]:
    """Load a MusicGen once and split it: (backbone, text encoder, codec), all on ``device``.

    The codec is the model's EnCodec wrapped by ``HFEncodecCodec``, so
    ``sampling.generate(backbone, prompts, codec=codec, text_encoder=text_encoder)`` yields audio.
    Only the backbone takes ``dtype``; the text encoder and the codec stay float32.
    """
    from transformers import AutoTokenizer

    source = resolve_pretrained(path_or_id)
    model = load_musicgen(source, device, torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"no usable tokenizer in {source}: a MusicGen directory must hold its text tokenizer "
            "(tokenizer.json or spiece.model, with tokenizer_config.json)"
        ) from exc
    backbone = MusicgenBackbone.from_musicgen(model).to(dtype=dtype)
    text_encoder = musicgen_text_encoder(model, tokenizer, source, max_tokens, max_prompt_chars, cache_size)
    codec = HFEncodecCodec(model.audio_encoder, num_codebooks=backbone.num_codebooks)
    log.info(
        "loaded MusicGen %s: K=%d, V=%d, context %d steps, %.1fM decoder parameters",
        source,
        backbone.num_codebooks,
        backbone.cardinality,
        backbone.max_steps,
        backbone.num_parameters() / 1e6,
    )
    return backbone, text_encoder, codec


def musicgen_layout(path_or_id: str | Path) -> tuple[int, int]:
    """(K codebooks, V codes per codebook) the decoder of a MusicGen reads, from its config alone."""
    from transformers import MusicgenConfig

    decoder = MusicgenConfig.from_pretrained(resolve_pretrained(path_or_id)).decoder
    return int(decoder.num_codebooks), int(decoder.vocab_size)


def musicgen_codec(codec_cfg: CodecConfig, pretrained: str | Path, sample_rate: int) -> Any:
    """The tokenizer of a run on a pretrained MusicGen, checked against the codes its decoder reads.

    With an EnCodec kind and ``codec.pretrained`` set, that model (``configs/musicgen-small.yaml``
    points it at ``facebook/encodec_32khz``, which musicgen-small was trained on); otherwise the
    EnCodec stored inside the MusicGen directory (``codec.kind: melrvq`` cannot feed a MusicGen).
    Raises ValueError when the codec's codebooks differ from the decoder's.
    """
    k, v = musicgen_layout(pretrained)
    if codec_cfg.num_codebooks != k:
        raise ValueError(
            f"codec.num_codebooks={codec_cfg.num_codebooks}, but the MusicGen in {pretrained} reads "
            f"{k} codebooks; set codec.num_codebooks={k}"
        )
    if codec_cfg.kind != "melrvq" and codec_cfg.pretrained:
        codec = fit_codec(codec_cfg, None, sample_rate)
        where = f"codec.pretrained={codec_cfg.pretrained}"
    else:
        log.info(
            "codec: the EnCodec inside the MusicGen %s (codec.kind=%s, codec.pretrained=%r)",
            pretrained,
            codec_cfg.kind,
            codec_cfg.pretrained,
        )
        codec = HFEncodecCodec(load_musicgen(pretrained).audio_encoder, num_codebooks=k)
        where = f"the EnCodec inside {pretrained}"
    if (codec.num_codebooks, codec.cardinality) != (k, v):
        raise ValueError(
            f"{where} gives {codec.num_codebooks} codebooks of {codec.cardinality} codes, but the MusicGen "
            f"decoder in {pretrained} reads {k} of {v}; use the EnCodec it was trained with "
            "(facebook/encodec_32khz for facebook/musicgen-small), or leave codec.pretrained empty to "
            "use the one inside the MusicGen directory"
        )
    return codec


def assemble_musicgen(backbone: MusicgenBackbone, text_model: nn.Module, audio_model: nn.Module) -> nn.Module:
    """A ``MusicgenForConditionalGeneration`` sharing the backbone's decoder and projection.

    The sub-models are shared as they are (neither copied nor re-initialised) and keep their own
    configs; the composite's generation config is the one the backbone was loaded with, when known.
    """
    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    parts = (text_model, audio_model, backbone.decoder)
    own_configs = [part.config for part in parts]
    # the constructor rewrites the sub-configs it is given (attention implementation): give it copies
    config = MusicgenConfig(
        text_encoder=text_model.config.to_dict(),
        audio_encoder=audio_model.config.to_dict(),
        decoder=backbone.decoder.config.to_dict(),
    )
    model = MusicgenForConditionalGeneration(
        config, text_encoder=text_model, audio_encoder=audio_model, decoder=backbone.decoder
    )
    for part, own in zip(parts, own_configs):  # and it points the sub-models at its copies
        part.config = own
    if backbone.enc_to_dec_proj is not None:
        model.enc_to_dec_proj = backbone.enc_to_dec_proj
    elif hasattr(model, "enc_to_dec_proj"):
        raise ValueError(
            "the text encoder's width differs from the decoder's, but the backbone has no projection"
        )
    if backbone.generation_config is not None:
        model.generation_config = backbone.generation_config
    return model
