"""The stages of the main job (``musicdistill run``), each a thin call into the library.

Layout of a run folder ``<runs_dir>/<name>/``::

    data/       the built-in synthesised clips and manifest (or a check of the user's manifest)
    codec/      the fitted codec
    tokens/     every usable clip encoded by the codec
    base/       the pretrained base generator (the CFG teacher)
    <student>/  one folder per student of run.students (by default quality/ β = 0, diversity/ β > 0,
                control/: the diversity student's settings with β = 0)
    offline/    with run.compare_offline: β = 0 distilled offline on teacher samples (claim C5)
    merges/<a>-<b>/lam_<λ>   LERP merges of the students of each entry of run.merges
    embedder/, oracle/            the judges the distillation reads (written by the ``judges`` stage)
    second_embedder/, scorer/     the judges only the evaluation reads (the ``eval_judges`` stage)
    front/, eval_<part>/          the stored results of each evaluation part (the fronts, each student,
                                  the offline student, the merges), written as soon as its checkpoints exist
    evaluate/   metrics.json, per_prompt.csv, samples/, pareto.png
    report.html the self-contained report (claims C1-C6, metrics, curves, audio), by the ``report`` stage
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from musicdistill.codec.factory import fit_codec, load_codec
from musicdistill.codec.interface import read_codec_json
from musicdistill.config import Config, DistillConfig, student_distill_config
from musicdistill.config.students import Student, parse_merges, parse_students
from musicdistill.data.attributes import choose_heads
from musicdistill.data.caption_bank import META_FILE, encode_captions, load_captions, save_captions
from musicdistill.data.checks import check_data
from musicdistill.data.loading import load_data
from musicdistill.data.manifest import read_manifest
from musicdistill.data.synth import dataset_is_current, synthesize_dataset
from musicdistill.data.tokens import encode_manifest_as_configured, load_token_set, save_token_set
from musicdistill.evaluation.setup import run_evaluation
from musicdistill.evaluation.systems import parse_systems
from musicdistill.judges.embedder import fit_and_save_embedder
from musicdistill.judges.log_mel import load_labelled_mels
from musicdistill.judges.oracle import fit_and_save_oracle
from musicdistill.judges.pretrained_embedders import embedder_name, load_audio_embedder
from musicdistill.judges.scorer import fit_and_save_scorer
from musicdistill.judges.second_embedder import fit_and_save_second_embedder
from musicdistill.merging import merge_checkpoints
from musicdistill.model.loading import resolve_codec_dir, save_musicgen_base
from musicdistill.model.musicgen import musicgen_codec
from musicdistill.model.text import build_text_encoder
from musicdistill.pipeline.report import write_report
from musicdistill.pipeline.report_inputs import run_claims
from musicdistill.pipeline.run_systems import (
    evaluation_parts,
    main_job_systems,
    merge_dir,
    part_stage_name,
    part_systems,
)
from musicdistill.runtime import resolve_device, seed_everything
from musicdistill.storage.checkpoint import load_checkpoint
from musicdistill.storage.convert import convert_checkpoint
from musicdistill.storage.history import read_rows
from musicdistill.training.distill import distill
from musicdistill.training.distill_setup import assemble
from musicdistill.training.pretrain import pretrain

log = logging.getLogger(__name__)


def manifest_path(cfg: Config, run_dir: Path) -> Path:
    """The user's manifest when ``data.manifest`` is set, else the built-in data's."""
    return Path(cfg.data.manifest) if cfg.data.manifest else run_dir / "data" / "manifest.jsonl"


def stage_data(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Synthesise the built-in data, or check the user's manifest; report what is usable."""
    d = cfg.data
    if not d.manifest and not (
        resume and dataset_is_current(out, d.num_clips, d.seed, d.sample_rate, d.duration)
    ):
        synthesize_dataset(out, d.num_clips, d.seed, d.sample_rate, d.duration, d.workers)
    manifest = manifest_path(cfg, run_dir)
    report = check_data(d, manifest, cfg.oracle)
    for line in report.format(limit=0).splitlines()[:4]:
        log.info("data: %s", line)
    if report.usable == 0:
        raise ValueError(
            f"{manifest}: no usable clip; run 'musicdistill data check {manifest}' for the reasons"
        )
    if d.strict and report.bad:
        raise ValueError(f"{manifest}: {report.bad} bad clips with data.strict=true: {report.summary()}")
    needed = dict.fromkeys(("train", "valid", cfg.evaluate.split))
    missing = [split for split in needed if split not in report.splits]
    if missing:
        found = ", ".join(f"{s} {c.clips} clips/{c.captions} captions" for s, c in report.splits.items())
        raise ValueError(
            f"{manifest}: no usable clip in the {' and '.join(missing)} split ({found}); the main job trains "
            f"on train, validates on valid and evaluates on {cfg.evaluate.split}. Give the manifest a "
            "'split' column (train/valid/test), or more distinct captions: splits come from a hash of "
            "each caption, about 90/5/5"
        )
    held_out = report.splits.get(cfg.evaluate.split)
    available = held_out.captions if held_out else 0
    if available < cfg.evaluate.num_prompts:
        log.warning(
            "data: the %s split has %d distinct captions but evaluate.num_prompts=%d; the evaluation uses "
            "%d prompts (the report gives the interval width that buys)",
            cfg.evaluate.split,
            available,
            cfg.evaluate.num_prompts,
            available,
        )
    return {"manifest": str(manifest), **report.counts()}


def stage_codec(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Fit the offline codec on the train split (or load EnCodec, or copy ``codec.from_dir``) and save it.

    With ``model.backbone: musicgen`` the codec is the EnCodec the MusicGen reads (see
    :func:`musicdistill.model.musicgen.musicgen_codec`).
    """
    if cfg.codec.from_dir:
        codec = load_codec(existing_dir(cfg.codec.from_dir, "codec.from_dir"))
    elif cfg.model.backbone == "musicgen":
        codec = musicgen_codec(cfg.codec, cfg.model.pretrained, cfg.data.sample_rate)
    else:
        audio = None
        if cfg.codec.kind == "melrvq":
            _, clips = load_data(cfg.data, manifest_path(cfg, run_dir), split="train")
            audio = torch.from_numpy(clips)
        codec = fit_codec(cfg.codec, audio, cfg.data.sample_rate)
    codec.save(out)
    return {
        "frame_rate": codec.frame_rate,
        "num_codebooks": codec.num_codebooks,
        "cardinality": codec.cardinality,
    }


def stage_tokens(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Encode every usable clip with the codec, on the run's device."""
    codec = load_codec(run_dir / "codec").to(resolve_device(cfg.device))
    tokens = encode_manifest_as_configured(manifest_path(cfg, run_dir), codec, cfg.data)
    save_token_set(tokens, out)
    return {
        "clips": len(tokens),
        "frames": tokens.num_frames,
        "splits": {s: tokens.splits.count(s) for s in sorted(set(tokens.splits))},
    }


def stage_captions(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Encode every distinct caption once with the frozen text encoder (read by pretraining and the scorer).

    With ``model.backbone: musicgen`` the generator brings its own T5; nothing is encoded here and
    the scorer encodes its captions itself.
    """
    if cfg.model.backbone == "musicgen":
        return {"captions": 0, "reason": "model.backbone=musicgen encodes with its own T5"}
    captions = [e.caption for e in read_manifest(manifest_path(cfg, run_dir))]
    encoded = encode_captions(build_text_encoder(cfg.text, resolve_device(cfg.device)), captions)
    save_captions(encoded, out)
    return {"captions": len(encoded.captions), "encoder": encoded.encoder}


def run_captions(cfg: Config, run_dir: Path):
    """The captions stage's encodings when they exist and match ``text.encoder``, else None."""
    folder = run_dir / "captions"
    return load_captions(folder, cfg.text.encoder) if (folder / META_FILE).is_file() else None


def stage_pretrain(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Pretrain the base generator (the CFG teacher); a pretrained MusicGen is exported as it is."""
    if cfg.model.backbone == "musicgen":
        return _export_musicgen_base(cfg, run_dir, out)
    if cfg.pretrain.from_dir:
        return _copy_shipped_base(cfg, run_dir, out)
    tokens = load_token_set(run_dir / "tokens")
    pretrain(
        cfg,
        tokens.select("train"),
        tokens.select("valid"),
        out,
        resume=resume,
        provenance={"codec_dir": os.path.relpath(run_dir / "codec", out.parent)},
        captions=run_captions(cfg, run_dir),
    )
    last = _last_history_row(out)
    return {k: last[k] for k in ("step", "loss", "val_loss", "val_loss_null") if k in last}


def existing_dir(path: str, key: str) -> Path:
    """``path`` as a folder that exists, or a ValueError naming the config key and the fix."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(
            f"{key}={path!r} is not a folder (relative paths resolve against {Path.cwd()}); run from the "
            f"repository root, point {key} at the folder, or set {key}='' to train it here "
            "(configs/from-scratch.yaml does)"
        )
    return folder


def _copy_shipped_base(cfg: Config, run_dir: Path, out: Path) -> dict[str, Any]:
    """The base stage with ``pretrain.from_dir``: the shipped base copied in float32; nothing is pretrained.

    The base must have been trained on the run's codec (``codec.from_dir``) and have the model
    shape the config states, so that no setting is silently ignored.
    """
    src = existing_dir(cfg.pretrain.from_dir, "pretrain.from_dir")
    ckpt = load_checkpoint(src)
    shipped_model = ckpt.config.get("model") or {}
    wanted = dataclasses.asdict(cfg.model)
    differ = {k: (wanted[k], v) for k, v in shipped_model.items() if k in wanted and wanted[k] != v}
    if differ:
        pairs = ", ".join(f"model.{k}={a!r} (base: {b!r})" for k, (a, b) in sorted(differ.items()))
        raise ValueError(
            f"pretrain.from_dir={cfg.pretrain.from_dir}: the shipped base has another shape than the config: "
            f"{pairs}; drop those overrides, or set pretrain.from_dir='' to pretrain your own base"
        )
    base_codec = resolve_codec_dir(src, ckpt.provenance)
    if base_codec is None or read_codec_json(base_codec) != read_codec_json(run_dir / "codec"):
        raise ValueError(
            f"pretrain.from_dir={cfg.pretrain.from_dir}: the base was trained on the codec {base_codec}, which is "
            f"not the run's codec ({run_dir / 'codec'}); set codec.from_dir to the base's codec folder"
        )
    convert_checkpoint(
        src, out, "float32", {"codec_dir": os.path.relpath(run_dir / "codec", out.parent), "kind": "base"}
    )
    shipped = {k: ckpt.provenance.get(k) for k in ("step",) if k in ckpt.provenance}
    return {"from_dir": str(src), **shipped}


def _export_musicgen_base(cfg: Config, run_dir: Path, out: Path) -> dict[str, Any]:
    """The base stage with ``model.backbone: musicgen``: the pretrained decoder becomes the base checkpoint.

    MusicGen is already pretrained, so ``pretrain.*`` is not used: finetuning it on the run's data
    before distillation is not supported (the pretraining loop builds the native generator).
    """
    log.info(
        "model.backbone=musicgen: the base model is %s as it is; the pretrain section is not used "
        "(finetuning MusicGen on your data before distillation is not supported)",
        cfg.model.pretrained,
    )
    codec_dir = run_dir / "codec"
    provenance = {"codec_dir": os.path.relpath(codec_dir, out.parent)} if codec_dir.is_dir() else {}
    save_musicgen_base(cfg, out, provenance)
    return {"backbone": "musicgen", "pretrained": cfg.model.pretrained, "step": 0}


JUDGE_DIRS = ("embedder", "second_embedder", "oracle", "scorer")


def link_pretrained_embedder(source: Path, link: Path, trust_remote_code: bool = False) -> dict[str, Any]:
    """``link`` -> the pretrained embedder folder ``source`` (checked by loading it once)."""
    embedder = load_audio_embedder(source, trust_remote_code=trust_remote_code)  # refuses what it cannot use
    source = source.resolve()
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(source, target_is_directory=True)
    log.info("reward embedder: %s (%s), not trained", source, embedder_name(embedder))
    return {"pretrained": str(source), "name": embedder_name(embedder)}


def stage_judges(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Train the judges the distillation reads: the reward embedder and the attribute oracle, on the same
    log-mels (the embedder on one half of the training clips).

    They are written to ``<run>/embedder`` and ``<run>/oracle``; with ``embed.pretrained`` set,
    ``<run>/embedder`` is a link to that folder instead of a trained embedder. The oracle needs
    attribute labels, so it is skipped for user data without them.
    """
    train, held_out = load_labelled_mels(cfg, manifest_path(cfg, run_dir), load_codec(run_dir / "codec"))
    if cfg.embed.pretrained:
        summary = {
            "embedder": link_pretrained_embedder(
                Path(cfg.embed.pretrained), run_dir / "embedder", cfg.embed.trust_remote_code
            )
        }
    else:
        summary = {"embedder": fit_and_save_embedder(cfg, train, held_out, run_dir / "embedder")}
    heads = choose_heads(
        cfg.oracle.heads,
        [e.attributes for e in train.entries],
        cfg.oracle.min_clips_per_class,
        [str(e.path) for e in train.entries],
    )
    for note in heads.notes:
        log.info("oracle: %s", note)
    if heads.heads:
        summary["oracle"] = fit_and_save_oracle(cfg, train, held_out, run_dir / "oracle")
    else:
        log.info("no attribute the oracle can learn: no oracle (attribute adherence is not measured)")
        summary["oracle"] = {"trained": False, **heads.as_dict()}
    return summary


def stage_eval_judges(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Train the judges only the evaluation reads: the second embedder (on the other half of the training
    clips) and the text-audio scorer, into ``<run>/second_embedder`` and ``<run>/scorer``."""
    train, held_out = load_labelled_mels(cfg, manifest_path(cfg, run_dir), load_codec(run_dir / "codec"))
    summary = {
        "second_embedder": fit_and_save_second_embedder(cfg, train, held_out, run_dir / "second_embedder")
    }
    captions = run_captions(cfg, run_dir) if cfg.scorer.text_encoder == cfg.text.encoder else None
    summary["scorer"] = fit_and_save_scorer(cfg, train, held_out, run_dir / "scorer", captions=captions)
    return summary


def _distill_stage(
    cfg: Config,
    run_dir: Path,
    out: Path,
    resume: bool,
    section: DistillConfig,
    provenance: dict[str, Any],
    dial_hidden: int = 0,
    dial_lr_scale: float = 1.0,
) -> dict[str, Any]:
    """One ``distill`` run of the main job with the distill section ``section`` (β and mode set); a
    conditioned student's with a dial of ``dial_hidden`` units at ``dial_lr_scale`` × its lr."""
    cfg = dataclasses.replace(cfg, distill=section)
    device = resolve_device(cfg.device)
    seed_everything(cfg.distill.seed)
    embedder = run_dir / "embedder"
    oracle = run_dir / "oracle"
    parts = assemble(
        cfg,
        run_dir / "base",
        load_token_set(run_dir / "tokens"),
        out,
        device,
        embedder if embedder.is_dir() else None,
        oracle if oracle.is_dir() else None,
    )
    distill(
        cfg,
        parts.parts,
        out,
        {**parts.provenance, **provenance},
        device,
        resume=resume,
        dial_hidden=dial_hidden,
        dial_lr_scale=dial_lr_scale,
    )
    rows = read_rows(out)
    evals = [r for r in rows if "eval_teacher_kl" in r]
    summary = {"beta": section.beta, "mode": section.mode, "steps": section.steps, "lr": section.lr}
    if evals:
        summary.update(
            {
                "eval_teacher_kl_start": evals[0]["eval_teacher_kl"],
                "eval_teacher_kl_end": evals[-1]["eval_teacher_kl"],
            }
        )
    return summary


def stage_student(cfg: Config, run_dir: Path, out: Path, resume: bool, student: Student) -> dict[str, Any]:
    """Distil one student of ``run.students``: the CFG teacher plus the diversity reward at its β, on the
    distill section with its changes (a control: its diversity student's, at β = 0)."""
    provenance = {"role": student.role, "student": student.name, "beta": student.beta}
    if student.control_of:
        provenance["control_of"] = student.control_of
    if student.settings_of:
        provenance["settings_of"] = student.settings_of
    section = student_distill_config(cfg, student)
    summary = _distill_stage(
        cfg, run_dir, out, resume, section, provenance, student.dial_hidden, student.dial_lr_scale
    )
    return {**summary, "role": student.role, "changed": dict(student.distill)}


def stage_offline(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Optional (``run.compare_offline``): β = 0 distillation on sequences the CFG teacher sampled once
    (``distill.mode=teacher``), for claim C5 (on-policy against offline: teacher hacking)."""
    if not cfg.run.compare_offline:
        return {"ran": False, "reason": "run.compare_offline=false"}
    section = dataclasses.replace(cfg.distill, beta=0.0, mode="teacher")
    return _distill_stage(cfg, run_dir, out, resume, section, {"role": "offline", "beta": 0.0})


def stage_merges(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """LERP the students of each entry of ``run.merges`` at each of its λ."""
    merges = parse_merges(cfg, parse_students(cfg))
    for merge in merges:
        for lam in merge.lambdas:
            merge_checkpoints(
                run_dir / merge.a, run_dir / merge.b, lam, method="lerp", out=merge_dir(run_dir, merge, lam)
            )
    return {"merges": {m.folder: list(m.lambdas) for m in merges}}


def judge_dirs(run_dir: Path) -> dict[str, Path | None]:
    """The run's judges by role (None for one the run has not trained)."""
    return {
        name: (run_dir / name if (run_dir / name).is_dir() else None)
        for name in ("embedder", "second_embedder", "oracle", "scorer")
    }


def stage_evaluate_part(cfg: Config, run_dir: Path, out: Path, resume: bool, part: str) -> dict[str, Any]:
    """Evaluate one part's systems (:func:`part_systems`) as soon as its checkpoints exist, beside the
    stages still training; the evaluate stage takes their stored results."""
    raw = part_systems(cfg, run_dir, part)
    if not raw:
        reason = (
            "evaluate.systems names the systems" if cfg.evaluate.systems else "no such system in this run"
        )
        return {"systems": 0, "reason": reason}
    systems = parse_systems(raw, cfg.generate, section="evaluate.systems")
    done = run_evaluation(cfg, systems, run_dir / "tokens", out, **judge_dirs(run_dir), statistics=False)
    return {"systems": len(done["systems"]), "prompts": done["num_prompts"]}


def stage_evaluate(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Every system on the same held-out prompts and seeds, with the statistics and the Pareto plot (the
    systems' results come from the evaluation parts' stages when they match)."""
    raw = cfg.evaluate.systems or main_job_systems(cfg, run_dir)
    systems = parse_systems(raw, cfg.generate, section="evaluate.systems")
    reuse = tuple(run_dir / part_stage_name(p) for p in evaluation_parts(cfg))
    report = run_evaluation(cfg, systems, run_dir / "tokens", out, **judge_dirs(run_dir), reuse=reuse)
    return {"systems": len(report["systems"]), "prompts": report["num_prompts"]}


def stage_report(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Write ``<run>/report.html``: the claims table, metrics, curves, audio and timings in one page."""
    path = write_report(run_dir)
    return {"report": str(path), "claims": {c.id: c.verdict for c in run_claims(run_dir)}}


def _last_history_row(out: Path) -> dict[str, Any]:
    rows = read_rows(out)
    evaluated = [r for r in rows if "val_loss" in r]
    return evaluated[-1] if evaluated else (rows[-1] if rows else {})
