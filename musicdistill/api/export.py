"""Export a model to the folder its own library loads, with a ``README.md`` model card.

- A MusicGen finetune becomes a transformers ``MusicgenForConditionalGeneration`` folder (config,
  safetensors weights, tokenizer, EnCodec, T5) whose ``generation_config`` holds the model's own
  sampling: ``guidance_scale`` 1 for a student or a merge (transformers' ``generate`` then runs
  no CFG: one row per sample), the base's scale for a base; ``do_sample``, ``temperature``,
  ``top_k`` and ``top_p`` from the checkpoint's ``generate`` section.
- A native model becomes a checkpoint folder (``model.safetensors``, ``config.yaml``,
  ``provenance.json``) that holds its codec in ``codec/``, so the folder moves as one piece;
  ``musicdistill.load`` reads it.

The folder is written beside the target and renamed onto it when complete.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from musicdistill.api.loading import load
from musicdistill.api.model import Model
from musicdistill.api.model_card import model_card, run_claims
from musicdistill.config import config_to_dict
from musicdistill.model.musicgen import MusicgenBackbone
from musicdistill.storage.atomic import atomic_write_text, replace_directory
from musicdistill.storage.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

CARD = "README.md"
CODEC_DIR = "codec"


def sampling_settings(model: Model) -> dict[str, Any]:
    """The sampling an export records: CFG scale, temperature, top-k and top-p (0 = off for both)."""
    gen = model.loaded.cfg.generate
    return {
        "guidance_scale": float(model.default_cfg_scale),
        "temperature": float(gen.temperature),
        "top_k": int(gen.top_k),
        "top_p": float(gen.top_p),
    }


def export(
    path: str | Path,
    out: str | Path,
    role: str | None = None,
    *,
    lam: float | None = None,
    device: str = "cpu",
    w: float | None = None,
) -> Path:
    """Load ``path`` (a checkpoint, or a run folder with ``role`` and ``lam``, as
    :func:`musicdistill.load` does) and write it to ``out`` for its own library; returns ``out``.
    ``w``: a conditioned MusicGen student is written for transformers at this diversity weight."""
    model = load(path, role, lam=lam, device=device)
    run = Path(path) if role is not None else None
    return export_model(model, Path(out), run=run, w=w)


def export_model(model: Model, out: Path, run: Path | None = None, w: float | None = None) -> Path:
    """Write ``model`` to ``out`` (see the module doc); ``run`` supplies the card's claims and data.

    A conditioned student keeps its dial in a musicdistill checkpoint (``w`` is then an input of
    ``generate``); for transformers, which has no such input, a conditioned MusicGen is written at one
    ``w`` (required), its dial folded into ``enc_to_dec_proj``'s bias."""
    conditioned = getattr(model.loaded.model, "dial", None) is not None
    if w is not None and not conditioned:
        raise ValueError(f"w={w!r}: {model.source} is not a conditioned student; leave w out")
    if conditioned and isinstance(model.loaded.model, MusicgenBackbone) and w is None:
        raise ValueError(
            f"{model.source} is a conditioned MusicGen student; transformers has no diversity-weight input, "
            "so pass the w to export it at (--w W in [0, 1]): its dial is folded into the projection's bias"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; pass a folder path")
    sampling = sampling_settings(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if isinstance(model.loaded.model, MusicgenBackbone):
            kind, library = "musicgen", "transformers (`MusicgenForConditionalGeneration`)"
            _write_musicgen(model, tmp / "model", sampling, w)
            snippet = _transformers_snippet(out)
        else:
            kind, library = "native", "musicdistill (`musicdistill.load`)"
            _write_native(model, tmp / "model")
            snippet = f'import musicdistill\n\nmodel = musicdistill.load("{out}")\naudio, sample_rate = model.generate(["calm piano in C major"], seed=0)'
        config = _config_dict(model, run)
        card = model_card(
            name=out.name,
            kind=kind,
            library=library,
            provenance=model.provenance,
            config=config,
            sampling=sampling,
            claims=run_claims(run),
            load_snippet=snippet,
        )
        atomic_write_text(tmp / "model" / CARD, card)
        replace_directory(tmp / "model", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s (%s) to %s", model.source, kind, out)
    return out


def _config_dict(model: Model, run: Path | None) -> dict[str, Any]:
    """The run's config when the model came from a run (its data section), else the checkpoint's."""
    if run is not None and (run / "config.yaml").is_file():
        raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            return raw
    return config_to_dict(model.loaded.cfg)


def _write_musicgen(model: Model, folder: Path, sampling: dict[str, Any], w: float | None = None) -> None:
    from transformers import GenerationConfig

    backbone: MusicgenBackbone = model.loaded.model
    own = backbone.generation_config
    gen = copy.deepcopy(own) if own is not None else GenerationConfig()
    gen.guidance_scale = sampling["guidance_scale"]
    gen.do_sample = sampling["temperature"] > 0
    gen.temperature = sampling["temperature"] if gen.do_sample else 1.0
    gen.top_k = sampling["top_k"] if sampling["top_k"] > 0 else 0
    gen.top_p = sampling["top_p"] if 0.0 < sampling["top_p"] < 1.0 else 1.0
    backbone.generation_config = gen
    try:
        with backbone.dial_folded(w if w is not None else 0.0):
            backbone.save_pretrained(folder, model.loaded.text_encoder, model.loaded.codec)
    finally:
        backbone.generation_config = own


def _write_native(model: Model, folder: Path) -> None:
    """A checkpoint folder holding the weights, the config, the provenance and the codec."""
    loaded = model.loaded
    state = {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()}
    provenance = {**model.provenance, "codec_dir": CODEC_DIR, "exported_from": model.source}
    save_checkpoint(folder, state, config_to_dict(loaded.cfg), provenance)
    loaded.codec.save(folder / CODEC_DIR)


def _transformers_snippet(out: Path) -> str:
    return (
        "from transformers import AutoProcessor, MusicgenForConditionalGeneration\n\n"
        f'model = MusicgenForConditionalGeneration.from_pretrained("{out}")\n'
        f'processor = AutoProcessor.from_pretrained("{out}")\n'
        'inputs = processor(text=["calm piano in C major"], padding=True, return_tensors="pt")\n'
        "audio = model.generate(**inputs, max_new_tokens=256)  # the exported generation_config: no CFG"
    )
