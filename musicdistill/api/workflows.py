"""Thin Python entry points over what the command line runs: ``distill``, ``merge``, ``evaluate``.

Each takes a config file (or the defaults) plus overrides as a dict of dotted keys, as
``musicdistill <command> --config FILE key=value`` does, and returns where it wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from musicdistill.config import Config, load_config
from musicdistill.data.tokens import load_token_set
from musicdistill.evaluation.setup import run_evaluation
from musicdistill.evaluation.systems import parse_systems
from musicdistill.merging import merge_checkpoints
from musicdistill.runtime import resolve_device, seed_everything
from musicdistill.training.distill import distill as distill_loop
from musicdistill.training.distill_setup import assemble
from musicdistill.training.distributed import DistInfo


def _config(config: str | Path | None, overrides: Mapping[str, Any] | None) -> Config:
    """``config`` (a YAML file; None = the defaults) with dotted ``overrides`` such as ``{"distill.steps": 50}``."""
    pairs = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    return load_config(config, pairs)


def distill(
    base: str | Path,
    out: str | Path,
    *,
    tokens: str | Path,
    embedder: str | Path | None = None,
    oracle: str | Path | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    init: str | Path | None = None,
    resume: bool = False,
) -> Path:
    """Distil the CFG teacher (``base`` with CFG at ``distill.gamma``) into a student that samples
    without CFG, plus ``distill.beta`` x the diversity reward of ``embedder``; returns ``out``.

    ``tokens`` is an encoded dataset (its prompts); ``oracle`` adds the golden metric to the history.
    One process; several GPUs go through ``torchrun -m musicdistill distill``.
    """
    cfg = _config(config, overrides)
    device = resolve_device(cfg.device)
    seed_everything(cfg.distill.seed)
    out = Path(out)
    parts = assemble(
        cfg,
        Path(base),
        load_token_set(Path(tokens)),
        out,
        device,
        Path(embedder) if embedder else None,
        Path(oracle) if oracle else None,
        Path(init) if init else None,
    )
    distill_loop(cfg, parts.parts, out, parts.provenance, device, DistInfo(), resume=resume)
    return out


def merge(
    a: str | Path,
    b: str | Path,
    lam: float,
    *,
    out: str | Path | None = None,
    method: str = "lerp",
    base: str | Path | None = None,
) -> Path:
    """Interpolate two finetunes of one base at ``lam`` (0 = ``a``, 1 = ``b``) into a new checkpoint;
    returns its folder (default ``<a>_<method>_<lam>`` beside ``a``). SLERP needs ``base``."""
    return Path(merge_checkpoints(a, b, lam, method=method, base=base, out=out))


def evaluate(
    systems: Sequence[Mapping[str, Any]],
    out: str | Path,
    *,
    tokens: str | Path,
    embedder: str | Path | None = None,
    oracle: str | Path | None = None,
    scorer: str | Path | None = None,
    second_embedder: str | Path | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``systems`` (each ``{"name", "checkpoint", "cfg_scale", "temperature", ...}``, as in
    ``evaluate.systems``) on the same held-out prompts of ``tokens``; returns metrics.json's content
    (also written to ``out`` with per_prompt.csv, samples and pareto.png)."""
    cfg = _config(config, overrides)
    specs = parse_systems([dict(s) for s in systems], cfg.generate, section="systems")

    def folder(path: str | Path | None) -> Path | None:
        return Path(path) if path else None

    return run_evaluation(
        cfg,
        specs,
        Path(tokens),
        Path(out),
        embedder=folder(embedder),
        oracle=folder(oracle),
        scorer=folder(scorer),
        second_embedder=folder(second_embedder),
    )
