"""Evaluation: every system on the same held-out prompts and seeds, scored with intervals.

For each system (a checkpoint plus sampling settings) generate G samples per held-out prompt with
the same seed and score each prompt's group: attribute adherence (oracle), text adherence (joint
text-audio scorer), pairwise diversity under the reward embedder and under an independent hand-made
feature embedding, Vendi score. The judges read the samples' codes as distillation does
(:mod:`musicdistill.judges.judging`): the log-mel the default codec decodes to, audio only for other codecs.
Every statistic comes from one joint bootstrap over prompts (:mod:`musicdistill.evaluation.paired`:
the same draw of prompts for every system and metric): each system's means with 95 % intervals, the
fronts and each system's diversity gain at matched quality against them
(:mod:`musicdistill.evaluation.fronts`), and the claims C1-C6 on paired per-prompt differences
(:mod:`musicdistill.evaluation.claims`). Fréchet distances compare all of a system's samples with
real held-out clips, whose codes the judges read the same way. Outputs: ``metrics.json`` (display
names as keys; means, fronts, gains, claims), ``per_prompt.csv`` (every per-prompt value), a few
samples per system decoded to audio (``samples/<slug>/pNNN_sG.wav``, slug = ``SystemSpec.slug``) and
``pareto.png``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from musicdistill.config import DistillConfig
from musicdistill.evaluation.claims import all_claims
from musicdistill.evaluation.comparisons import build_evidence, is_diversity
from musicdistill.evaluation.fronts import gain_table
from musicdistill.evaluation.metrics import frechet_distance, vendi_score
from musicdistill.evaluation.paired import LEVEL, PromptTable, mean_estimate, resample_indices
from musicdistill.evaluation.pareto import plot_pareto
from musicdistill.evaluation.system_store import StoredSystem, SystemStore
from musicdistill.evaluation.systems import SystemSpec
from musicdistill.generation.sampling import generate
from musicdistill.judges.diversity import pairwise_diversity
from musicdistill.judges.judging import CodedClips, Judges
from musicdistill.progress import track
from musicdistill.storage.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class EvalPrompts:
    prompts: list[str]
    attributes: list[dict[str, Any] | None]


@dataclass
class SystemResult:
    """Per-prompt values of each metric and the system's cost."""

    spec: SystemSpec
    per_prompt: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    frames: int = 0
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)


def group_rows(values: torch.Tensor, group: int) -> torch.Tensor:
    """``[B·G, ...] -> [B, G, ...]`` (prompt-major samples)."""
    return values.reshape(values.shape[0] // group, group, *values.shape[1:])


def score_system(
    clips: CodedClips, prompts: EvalPrompts, group: int, judges: Judges
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Per-prompt metric values and the embeddings of one system's samples (codes ``[B·G, K, T]``, prompt-major).

    A prompt whose adherence is undefined for every sample (it states no attribute) gets NaN, which
    the intervals skip; so does a prompt that leaves no attribute open, for attribute diversity and
    its expected variant (from the oracle's probabilities).
    """
    per: dict[str, list[float]] = {}
    rows_attrs = [a for a in prompts.attributes for _ in range(group)]
    rows_prompts = [p for p in prompts.prompts for _ in range(group)]
    if judges.adherence is not None and any(a is not None for a in prompts.attributes):
        values = np.asarray(judges.adherence(clips, rows_attrs), dtype=np.float64)
        per["attribute_adherence"] = _nanmean_rows(values.reshape(-1, group))
    if judges.text_adherence is not None:
        values = np.asarray(judges.text_adherence(rows_prompts, clips), dtype=np.float64)
        per["text_adherence"] = values.reshape(-1, group).mean(axis=1).tolist()
    if judges.attribute_diversity is not None and any(a is not None for a in prompts.attributes):
        values = judges.attribute_diversity(clips, list(prompts.attributes), group)
        per["attribute_diversity"] = np.asarray(values, dtype=np.float64).tolist()
    if judges.expected_attribute_diversity is not None and any(a is not None for a in prompts.attributes):
        values = judges.expected_attribute_diversity(clips, list(prompts.attributes), group)
        per["expected_attribute_diversity"] = np.asarray(values, dtype=np.float64).tolist()
    embeddings = {"independent": judges.independent(clips)}
    if judges.reward is not None:
        embeddings["reward"] = judges.reward(clips)
    if judges.second is not None:
        embeddings["second"] = judges.second(clips)
    for name, emb in embeddings.items():
        grouped = group_rows(emb.float(), group)
        per[f"diversity_{name}"] = pairwise_diversity(grouped).tolist()
        per[f"vendi_{name}"] = vendi_score(grouped).tolist()
    return per, embeddings


def _nanmean_rows(values: np.ndarray) -> list[float]:
    """Row means ignoring NaN; NaN for a row that is all NaN."""
    counts = (~np.isnan(values)).sum(axis=1)
    sums = np.nansum(values, axis=1)
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]


def run_system(
    spec: SystemSpec,
    prompts: EvalPrompts,
    group: int,
    duration: float,
    seed: int,
    batch_size: int,
    judges: Judges,
    device: torch.device,
    loader: Callable[[str], Any],
) -> tuple[SystemResult, CodedClips]:
    """Generate and score one system; returns its result and its samples (codes ``[B·G, K, T]``)."""
    loaded = loader(spec.checkpoint)
    t0 = time.perf_counter()
    out = generate(
        loaded.model,
        prompts.prompts,
        group,
        duration,
        spec.temperature,
        spec.top_k,
        spec.top_p,
        spec.cfg_scale,
        seed,
        None,
        text_encoder=loaded.text_encoder,
        frame_rate=float(loaded.codec.frame_rate),
        batch_size=batch_size,
        w=spec.w,
    )
    seconds = time.perf_counter() - t0
    clips = CodedClips(loaded.codec, out.codes)
    t0 = time.perf_counter()
    per, embeddings = score_system(clips, prompts, group, judges)
    log.debug("%s: judged %d samples in %.2f s", spec.name, len(clips), time.perf_counter() - t0)
    return SystemResult(spec, per, seconds, int(out.codes.shape[0] * out.codes.shape[2]), embeddings), clips


def summarise(
    result: SystemResult, reference: dict[str, torch.Tensor], indices: np.ndarray
) -> dict[str, Any]:
    """Means with 95 % intervals under the joint bootstrap draws ``indices`` ``[R, B]``, Fréchet
    distances, and the inference cost."""
    metrics = {}
    for name, values in result.per_prompt.items():
        est = mean_estimate(np.asarray(values, dtype=np.float64), indices)
        metrics[name] = est.as_dict()
    for name, emb in result.embeddings.items():
        if name in reference:
            metrics[f"frechet_{name}"] = {
                "mean": float(frechet_distance(emb.double(), reference[name].double()))
            }
    spec = result.spec
    return {
        "family": spec.family,
        **spec.identity(),
        "checkpoint": spec.checkpoint,
        "settings": spec.settings(),
        "metrics": metrics,
        "cost": {
            "rows_per_sample": spec.rows_per_sample,
            "seconds": round(result.seconds, 3),
            "frames_per_s": round(result.frames / max(result.seconds, 1e-9), 1),
        },
    }


def write_samples(
    out: Path, spec: SystemSpec, clips: CodedClips, group: int, num_prompts: int
) -> Path | None:
    """The first ``num_prompts`` prompts' samples, decoded to audio, as ``samples/<slug>/pNNN_sG.wav``;
    returns the folder (None when no sample is written)."""
    if num_prompts <= 0:
        return None
    folder = out / "samples" / spec.slug
    audio = clips.audio_rows(num_prompts * group)
    for row in range(audio.shape[0]):
        buf = io.BytesIO()
        clip = audio[row].numpy()
        peak = float(np.abs(clip).max()) or 1.0
        sf.write(buf, clip / max(1.0, peak), clips.sample_rate, format="WAV", subtype="PCM_16")
        atomic_write_bytes(folder / f"p{row // group:03d}_s{row % group}.wav", buf.getvalue())
    return folder


def write_per_prompt_csv(out: Path, results: list[SystemResult], prompts: EvalPrompts) -> None:
    names = sorted({k for r in results for k in r.per_prompt})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["system", "prompt_index", "prompt", *names])
    for r in results:
        for i, prompt in enumerate(prompts.prompts):
            writer.writerow(
                [
                    r.spec.name,
                    i,
                    prompt,
                    *[f"{r.per_prompt[n][i]:.6f}" if n in r.per_prompt else "" for n in names],
                ]
            )
    atomic_write_text(out / "per_prompt.csv", buf.getvalue())


def paired_evidence(
    table: PromptTable, summary: dict[str, Any], indices: np.ndarray, teacher_gamma: float
) -> dict[str, Any]:
    """The paired part of metrics.json: measures, roles, fronts, gains at matched quality, claims C1-C6.

    ``table`` holds every system's per-prompt values, ``summary`` is metrics.json's ``systems`` and
    ``indices`` ``[R, B]`` are the joint bootstrap draws.
    """
    evidence = build_evidence(table, summary, teacher_gamma, indices)
    diversities = [m for m in table.measures() if is_diversity(m)]
    gains = (
        gain_table(table, evidence.fronts, evidence.quality, diversities, indices) if evidence.quality else []
    )
    return {
        "statistics": {
            "bootstrap": int(indices.shape[0]),
            "level": LEVEL,
            "resampling": "prompts, one draw per resample for every system and metric (paired)",
        },
        "measures": {
            "quality": evidence.quality,
            "primary_diversity": evidence.primary,
            "primary_note": evidence.primary_note,
            "teacher_gamma": teacher_gamma,
        },
        "roles": evidence.roles.as_dict(),
        "fronts": {key: front.as_dict() for key, front in evidence.fronts.items()},
        "gains": [g.as_dict() for g in gains],
        "claims": [c.as_dict() for c in all_claims(evidence)],
    }


def reference_embeddings_of(reference: CodedClips, judges: Judges) -> dict[str, torch.Tensor]:
    """The embeddings ``[N, E]`` of real clips under each diversity judge, for the Fréchet distances."""
    out = {"independent": judges.independent(reference)}
    if judges.reward is not None:
        out["reward"] = judges.reward(reference)
    if judges.second is not None:
        out["second"] = judges.second(reference)
    return out


def evaluate_systems(
    systems: list[SystemSpec],
    prompts: EvalPrompts,
    judges: Judges,
    out: str | Path,
    *,
    group: int,
    duration: float,
    seed: int,
    batch_size: int,
    device: torch.device,
    loader: Callable[[str], Any],
    reference: CodedClips | None = None,
    save_prompts: int = 4,
    num_resamples: int = 1000,
    teacher_gamma: float = DistillConfig().gamma,
    store: SystemStore | None = None,
) -> dict[str, Any]:
    """Run every system on the same prompts and seed; write metrics.json, per_prompt.csv, samples, pareto.png.

    ``reference`` (real held-out clips as codes) is what the Fréchet distances compare each system with;
    ``teacher_gamma`` is the CFG scale of the distillation teacher, whom the claims compare with;
    ``store`` keeps each system's result as it finishes and supplies those evaluated before.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reference_embeddings = {} if reference is None else reference_embeddings_of(reference, judges)
    indices = resample_indices(len(prompts.prompts), num_resamples, seed)  # [R, B], shared by every statistic
    results = run_systems(
        systems,
        prompts,
        judges,
        out,
        group=group,
        duration=duration,
        seed=seed,
        batch_size=batch_size,
        device=device,
        loader=loader,
        store=store,
        save_prompts=save_prompts,
    )
    summary: dict[str, Any] = {}
    for result in results:
        spec = result.spec
        summary[spec.name] = summarise(result, reference_embeddings, indices)
        if (out / "samples" / spec.slug).is_dir() and save_prompts > 0:
            summary[spec.name]["samples"] = f"samples/{spec.slug}"
        log.info(
            "%s: %s",
            spec.name,
            ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary[spec.name]["metrics"].items()),
        )
    report = {
        "num_prompts": len(prompts.prompts),
        "samples_per_prompt": group,
        "seed": seed,
        "duration": duration,
        "sample_rate": reference.sample_rate if reference is not None else codec_sample_rate(loader, systems),
        "judges": {"reward": judges.reward_name if judges.reward is not None else None},
        "systems": summary,
        "prompts": prompts.prompts[:save_prompts],
        **paired_evidence(
            PromptTable.from_lists({r.spec.name: r.per_prompt for r in results}),
            summary,
            indices,
            teacher_gamma,
        ),
    }
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2))
    write_per_prompt_csv(out, results, prompts)
    for claim in report["claims"]:
        log.info("%s: %s", claim["id"], claim["verdict"])

    if report["measures"]["quality"]:
        plot_pareto(report, out / "pareto.png")
    else:
        log.warning(
            "no quality measure (give an oracle or a scorer): metrics.json is written, no Pareto plot"
        )
    return report


def run_systems(
    systems: list[SystemSpec],
    prompts: EvalPrompts,
    judges: Judges,
    out: Path,
    *,
    group: int,
    duration: float,
    seed: int,
    batch_size: int,
    device: torch.device,
    loader: Callable[[str], Any],
    store: SystemStore | None = None,
    save_prompts: int = 4,
) -> list[SystemResult]:
    """Generate and score each system (or take its stored result), writing its first samples to
    ``out/samples/<slug>/`` and its result to ``store``; returns the results in order."""
    results: list[SystemResult] = []
    for spec in track(systems, desc="evaluating systems", unit="system"):
        stored = store.load(spec) if store is not None else None
        if stored is not None:
            results.append(
                SystemResult(spec, stored.per_prompt, stored.seconds, stored.frames, stored.embeddings)
            )
            continue
        result, clips = run_system(spec, prompts, group, duration, seed, batch_size, judges, device, loader)
        write_samples(out, spec, clips, group, save_prompts)
        if store is not None:
            store.save(
                spec, StoredSystem(result.per_prompt, result.embeddings, result.seconds, result.frames)
            )
        results.append(result)
    return results


def codec_sample_rate(loader: Callable[[str], Any], systems: list[SystemSpec]) -> int | None:
    """The sample rate of the first system's codec (what the written samples use)."""
    if not systems:
        return None
    codec = loader(systems[0].checkpoint).codec
    return None if codec is None else int(codec.sample_rate)
