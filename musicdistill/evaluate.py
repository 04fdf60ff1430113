"""Evaluation: every system on the same held-out prompts and seeds, scored with intervals.

For each system (a checkpoint plus sampling settings) generate G samples per held-out prompt with
the same seed, decode them, and score each prompt's group: attribute adherence (oracle), text
adherence (joint text-audio scorer), pairwise diversity under the reward embedder and under an
independent hand-made feature embedding, Vendi score. Each metric gets a bootstrap 95 % interval
over prompts. Fréchet distances compare all of a system's samples with codec reconstructions of
real held-out clips. Outputs: ``metrics.json``, ``per_prompt.csv``, a few samples per system
(``samples/<system>/pNNN_sG.wav``, deterministic names) and ``pareto.png``.
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
from tqdm.auto import tqdm

from musicdistill.atomic import atomic_write_bytes, atomic_write_text
from musicdistill.judges import Judges
from musicdistill.systems import SystemSpec

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


def score_system(spec: SystemSpec, audio: torch.Tensor, prompts: EvalPrompts, group: int, judges: Judges
                 ) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Per-prompt metric values and the embeddings of one system's decoded samples ``audio [B·G, samples]``.

    A prompt whose adherence is undefined for every sample (it states no attribute) gets NaN, which
    the intervals skip.
    """
    from musicdistill.metrics import pairwise_diversity, vendi_score

    per: dict[str, list[float]] = {}
    rows_attrs = [a for a in prompts.attributes for _ in range(group)]
    rows_prompts = [p for p in prompts.prompts for _ in range(group)]
    if judges.adherence is not None and any(a is not None for a in prompts.attributes):
        values = np.asarray(judges.adherence(audio, rows_attrs), dtype=np.float64)
        per["attribute_adherence"] = _nanmean_rows(values.reshape(-1, group))
    if judges.text_adherence is not None:
        values = np.asarray(judges.text_adherence(rows_prompts, audio), dtype=np.float64)
        per["text_adherence"] = values.reshape(-1, group).mean(axis=1).tolist()
    embeddings = {"independent": judges.independent(audio)}
    if judges.reward is not None:
        embeddings["reward"] = judges.reward(audio)
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


def run_system(spec: SystemSpec, prompts: EvalPrompts, group: int, duration: float, seed: int, batch_size: int,
               judges: Judges, device: torch.device, loader: Callable[[str], Any]) -> tuple[SystemResult, torch.Tensor]:
    """Generate and score one system; returns its result and the decoded audio ``[B·G, samples]``."""
    from musicdistill.sampling import generate

    loaded = loader(spec.checkpoint)
    t0 = time.perf_counter()
    out = generate(loaded.model, prompts.prompts, group, duration, spec.temperature, spec.top_k, spec.top_p,
                   spec.cfg_scale, seed, None, text_encoder=loaded.text_encoder,
                   frame_rate=float(loaded.codec.frame_rate), batch_size=batch_size)
    seconds = time.perf_counter() - t0
    with torch.inference_mode():
        audio = loaded.codec.decode(out.codes).float().reshape(out.codes.shape[0], -1).clone()
    per, embeddings = score_system(spec, audio, prompts, group, judges)
    return SystemResult(spec, per, seconds, int(out.codes.shape[0] * out.codes.shape[2]), embeddings), audio


def summarise(result: SystemResult, reference: dict[str, torch.Tensor], num_resamples: int, seed: int
              ) -> dict[str, Any]:
    """Means with bootstrap 95 % intervals over prompts, Fréchet distances, and the inference cost."""
    from musicdistill.metrics import bootstrap_ci, frechet_distance

    metrics = {}
    for name, values in result.per_prompt.items():
        est = bootstrap_ci(values, num_resamples=num_resamples, seed=seed)
        metrics[name] = {"mean": est.mean, "low": est.low, "high": est.high, "n": est.n}
    for name, emb in result.embeddings.items():
        if name in reference:
            metrics[f"frechet_{name}"] = {"mean": float(frechet_distance(emb.double(), reference[name].double()))}
    spec = result.spec
    return {
        "family": spec.family, "checkpoint": spec.checkpoint, "settings": spec.settings(), "metrics": metrics,
        "cost": {"rows_per_sample": spec.rows_per_sample, "seconds": round(result.seconds, 3),
                 "frames_per_s": round(result.frames / max(result.seconds, 1e-9), 1)},
    }


def write_samples(out: Path, spec: SystemSpec, audio: torch.Tensor, sample_rate: int, group: int,
                  num_prompts: int) -> None:
    """The first ``num_prompts`` prompts' samples as ``samples/<system>/pNNN_sG.wav``."""
    folder = out / "samples" / spec.name
    for row in range(min(audio.shape[0], num_prompts * group)):
        buf = io.BytesIO()
        clip = audio[row].numpy()
        peak = float(np.abs(clip).max()) or 1.0
        sf.write(buf, clip / max(1.0, peak), sample_rate, format="WAV", subtype="PCM_16")
        atomic_write_bytes(folder / f"p{row // group:03d}_s{row % group}.wav", buf.getvalue())


def write_per_prompt_csv(out: Path, results: list[SystemResult], prompts: EvalPrompts) -> None:
    names = sorted({k for r in results for k in r.per_prompt})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["system", "prompt_index", "prompt", *names])
    for r in results:
        for i, prompt in enumerate(prompts.prompts):
            writer.writerow([r.spec.name, i, prompt,
                             *[f"{r.per_prompt[n][i]:.6f}" if n in r.per_prompt else "" for n in names]])
    atomic_write_text(out / "per_prompt.csv", buf.getvalue())


def evaluate_systems(systems: list[SystemSpec], prompts: EvalPrompts, judges: Judges, out: str | Path, *,
                     group: int, duration: float, seed: int, batch_size: int, device: torch.device,
                     loader: Callable[[str], Any], reference_audio: torch.Tensor | None = None,
                     save_prompts: int = 4, num_resamples: int = 1000) -> dict[str, Any]:
    """Run every system on the same prompts and seed; write metrics.json, per_prompt.csv, samples, pareto.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reference: dict[str, torch.Tensor] = {}
    if reference_audio is not None:
        reference["independent"] = judges.independent(reference_audio)
        if judges.reward is not None:
            reference["reward"] = judges.reward(reference_audio)
    results: list[SystemResult] = []
    summary: dict[str, Any] = {}
    sample_rate = None
    for spec in tqdm(systems, desc="evaluating systems", unit="system"):
        result, audio = run_system(spec, prompts, group, duration, seed, batch_size, judges, device, loader)
        sample_rate = int(loader(spec.checkpoint).codec.sample_rate)
        write_samples(out, spec, audio, sample_rate, group, save_prompts)
        results.append(result)
        summary[spec.name] = summarise(result, reference, num_resamples, seed)
        log.info("%s: %s", spec.name, ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary[spec.name]["metrics"].items()))
    report = {"num_prompts": len(prompts.prompts), "samples_per_prompt": group, "seed": seed,
              "duration": duration, "sample_rate": sample_rate, "systems": summary,
              "prompts": prompts.prompts[:save_prompts]}
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2))
    write_per_prompt_csv(out, results, prompts)
    from musicdistill.pareto import plot_pareto

    plot_pareto(report, out / "pareto.png")
    return report
