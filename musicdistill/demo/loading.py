"""Loading the demo's systems from checkpoints into a :class:`musicdistill.demo.engine.DemoEngine`.

:func:`load_engine` reads the folders of :class:`musicdistill.demo.run_folders.DemoPaths`: the
quality and diversity finetunes (the dial's two ends, memory-mapped) or one conditioned student,
the optional CFG teacher (sharing the student's text encoder and codec where it can) and the
optional reward embedder; it casts the models to the requested dtype and warms the engine up.
Every mismatch raises FileNotFoundError / ValueError naming the folder and the fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from musicdistill.codec.factory import load_codec
from musicdistill.config import Config, section_from_dict
from musicdistill.demo.diversity_dial import ConditionedDial
from musicdistill.demo.engine import DemoEngine, load_embed_fn
from musicdistill.demo.run_folders import DemoPaths
from musicdistill.demo.weight_dial import WeightDial, endpoint_folders, mapped_endpoint
from musicdistill.merging import config_differences, shared_base_hash
from musicdistill.model.loading import (
    LoadedGenerator,
    generator_from_state_dict,
    load_generator,
    resolve_codec_dir,
    text_encoder_name,
)
from musicdistill.model.text import build_text_encoder
from musicdistill.storage.checkpoint import MODEL_FILE, PROVENANCE_FILE, load_checkpoint

log = logging.getLogger(__name__)


def _load_teacher(
    teacher_dir: Path, student: LoadedGenerator, student_codec_dir: Path | None, device: torch.device
) -> LoadedGenerator:
    """The base model, sharing the student's text encoder and codec when it uses the same ones."""
    ckpt = load_checkpoint(teacher_dir)
    cfg = section_from_dict(Config, ckpt.config)
    if cfg.model.backbone == "musicgen":  # a pretrained MusicGen brings its own T5 (and EnCodec)
        shared = student.text_encoder if student.text_encoder.name == text_encoder_name(teacher_dir) else None
        return load_generator(teacher_dir, device, text_encoder=shared)
    model = generator_from_state_dict(cfg.model, ckpt.state_dict).to(device).eval()
    encoder = student.text_encoder if cfg.text == student.cfg.text else build_text_encoder(cfg.text, device)
    if encoder.dim != model.text_dim:
        raise ValueError(
            f"teacher {teacher_dir}: its text encoder {cfg.text.encoder!r} has width {encoder.dim} "
            f"but the generator was trained on width {model.text_dim}"
        )
    codec_dir = resolve_codec_dir(teacher_dir, ckpt.provenance)
    if codec_dir is None or not codec_dir.is_dir():
        raise FileNotFoundError(
            f"teacher checkpoint {teacher_dir} records no existing codec_dir ({codec_dir}), "
            "so its samples cannot be played; restore the codec folder next to it"
        )
    if student_codec_dir is not None and codec_dir.resolve() == student_codec_dir.resolve():
        codec = student.codec
    else:
        codec = load_codec(codec_dir)
    if (codec.num_codebooks, codec.cardinality) != (model.num_codebooks, model.cardinality):
        raise ValueError(
            f"teacher {teacher_dir}: codec {codec_dir} has {codec.num_codebooks} codebooks of "
            f"{codec.cardinality} entries but the generator expects {model.num_codebooks} of "
            f"{model.cardinality}"
        )
    return LoadedGenerator(model=model, text_encoder=encoder, codec=codec, cfg=cfg)


#: ``--dtype`` names
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast ``module``'s real floating parameters and buffers to ``dtype`` in place; complex buffers
    (the rotary table) keep their dtype, which ``Module.to`` would drop to real."""
    for param in module.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    for owner in module.modules():
        for key, buf in owner._buffers.items():
            if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                owner._buffers[key] = buf.to(dtype)
    return module


def load_engine(
    paths: DemoPaths,
    device: torch.device | str = "cpu",
    method: str = "lerp",
    force: bool = False,
    dtype: str = "fp32",
    time_limit: float | None = None,
) -> DemoEngine:
    """Load the student (quality weights), the dial's endpoints, the optional teacher and embedder.

    A request that samples longer than ``time_limit`` seconds is stopped. The student and the
    teacher run in ``dtype`` (``fp32``, ``bf16`` or ``fp16``); the dial keeps
    its endpoints on the CPU in that dtype. The two finetunes must share a base model (their
    provenance's ``base_hash``) unless ``force``; SLERP needs the teacher, which is that base.
    Raises FileNotFoundError / ValueError naming the folder and the fix.
    """
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if paths.conditioned is not None:
        return _load_conditioned_engine(paths, device, dtype, time_limit)
    if paths.quality is None or paths.diversity is None:
        raise ValueError("the merge slider needs both --quality and --diversity (or a run with both)")
    if method == "slerp" and paths.teacher is None:
        raise ValueError(
            "--method slerp interpolates task vectors relative to the base model; pass it with --teacher"
        )
    student = load_generator(paths.quality, device)
    if student.codec is None:
        raise FileNotFoundError(
            f"quality checkpoint {paths.quality} records no codec_dir, so samples cannot be played"
        )
    quality, diversity = load_checkpoint(paths.quality), load_checkpoint(paths.diversity)
    shared_base_hash(quality, diversity, force)
    diffs = config_differences(quality, diversity)
    if diffs:
        log.warning(
            "quality and diversity configs differ (%s); the student uses the quality model's config",
            "; ".join(diffs[:5]),
        )
    teacher = None
    if paths.teacher is not None:
        student_codec_dir = resolve_codec_dir(paths.quality, quality.provenance)
        teacher = _load_teacher(paths.teacher, student, student_codec_dir, device)
        cast_floating(teacher.model, DTYPES[dtype])
    del quality, diversity  # read for their provenance and configs; the dial maps the weights
    cast_floating(student.model, DTYPES[dtype])
    mapped = {
        name: mapped_endpoint(folder / MODEL_FILE, DTYPES[dtype])
        for name, folder in endpoint_folders(paths, method)
    }
    dial = WeightDial(
        student.model,
        mapped["quality"],
        mapped["diversity"],
        method,
        mapped.get("base"),
        store_dtype=DTYPES[dtype],
        copy=False,
    )
    log.info("dial endpoints: %.1f MB, memory-mapped (%s)", dial.endpoint_bytes() / 1e6, dtype)
    embed, embedding_name = load_embed_fn(paths.embedder, device)
    engine = DemoEngine(student, dial, teacher, embed, embedding_name, paths, time_limit)
    engine.warm_up()
    return engine


def _load_conditioned_engine(
    paths: DemoPaths, device: torch.device, dtype: str, time_limit: float | None
) -> DemoEngine:
    """The engine for one conditioned student: its slider sets w; one decoder's weights in memory."""
    student = load_generator(paths.conditioned, device)
    if student.codec is None:
        raise FileNotFoundError(
            f"conditioned checkpoint {paths.conditioned} records no codec_dir, so samples cannot be played"
        )
    provenance = json.loads((paths.conditioned / PROVENANCE_FILE).read_text(encoding="utf-8"))
    dial_info = provenance.get("dial")
    if getattr(student.model, "dial", None) is None or not isinstance(dial_info, dict):
        raise ValueError(
            f"{paths.conditioned} is not a conditioned student (its model has no diversity dial, or its "
            "provenance.json records none); serve a merge with --quality and --diversity"
        )
    teacher = None
    if paths.teacher is not None:
        student_codec_dir = resolve_codec_dir(paths.conditioned, provenance)
        teacher = _load_teacher(paths.teacher, student, student_codec_dir, device)
        cast_floating(teacher.model, DTYPES[dtype])
    cast_floating(student.model, DTYPES[dtype])
    dial = ConditionedDial(student.model, float(dial_info.get("beta_max", 0.0)))
    embed, embedding_name = load_embed_fn(paths.embedder, device)
    engine = DemoEngine(student, dial, teacher, embed, embedding_name, paths, time_limit)
    engine.warm_up()
    return engine
