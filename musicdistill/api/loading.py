"""``musicdistill.load``: a model from a checkpoint folder, a run folder and a role, or a MusicGen folder.

A run folder (what ``musicdistill run`` writes) holds several models; the role picks one:

- ``"base"``: the pretrained base, sampled with CFG at the run config's ``generate.cfg_scale``;
- ``"teacher"``: the same base, sampled with CFG at the distillation teacher's γ (``distill.gamma``);
- ``"quality"``, ``"diversity"``, ``"control"``, ``"offline"``, ``"conditioned"``: the students, read
  from each checkpoint's ``provenance.json`` (role, else β), sampled without CFG; the conditioned
  student (``run.conditioned``) takes its diversity weight as ``Model.generate(..., w=)``;
- ``"merge"`` with ``lam``: the LERP of the quality (λ = 0) and diversity (λ = 1) students. The run's
  own merge folder is used when it holds that λ; any other λ in [0, 1] is merged in memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from musicdistill.api.model import Model
from musicdistill.config import Config, section_from_dict
from musicdistill.config.students import lambda_folder
from musicdistill.merging import merge_state_dicts
from musicdistill.model.loading import LoadedGenerator, load_generator
from musicdistill.model.musicgen import load_backbone
from musicdistill.runtime import resolve_device
from musicdistill.storage.checkpoint import CONFIG_FILE, MODEL_FILE, PROVENANCE_FILE, load_checkpoint

log = logging.getLogger(__name__)

STUDENT_ROLES = ("quality", "diversity", "control", "offline", "conditioned")
ROLES = ("base", "teacher", *STUDENT_ROLES, "merge")
#: provenance kinds that are sampled without CFG by default
CFG_FREE_KINDS = ("distilled", "merged")


def load(
    path: str | Path, role: str | None = None, *, lam: float | None = None, device: str = "auto"
) -> Model:
    """A :class:`Model` ready to ``generate``.

    ``path`` is a checkpoint folder (``model.safetensors`` + ``config.yaml``), a run folder with a
    ``role`` (see the module doc; ``lam`` for ``"merge"``), or a transformers MusicGen folder
    (``config.json``). ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...

    Raises FileNotFoundError or ValueError naming the folder, the role and what to pass instead.
    """
    folder = Path(path)
    dev = resolve_device(device)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such folder; pass a checkpoint, a run folder or a MusicGen folder"
        )
    if (folder / MODEL_FILE).is_file() and (folder / CONFIG_FILE).is_file():
        if role is not None:
            raise ValueError(f"{folder} is one checkpoint; a role ({role!r}) is only for a run folder")
        return _from_checkpoint(folder, dev, str(folder))
    if (folder / "config.json").is_file():
        if role is not None:
            raise ValueError(f"{folder} is a MusicGen folder; a role ({role!r}) is only for a run folder")
        return _from_musicgen(folder, dev)
    return _from_run(folder, role, lam, dev)


def _provenance(folder: Path) -> dict[str, Any]:
    try:
        prov = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prov if isinstance(prov, dict) else {}


def _default_cfg_scale(loaded: LoadedGenerator, provenance: dict[str, Any]) -> float:
    return 1.0 if provenance.get("kind") in CFG_FREE_KINDS else float(loaded.cfg.generate.cfg_scale)


def _from_checkpoint(
    folder: Path, device: torch.device, source: str, cfg_scale: float | None = None
) -> Model:
    loaded = load_generator(folder, device=device)
    prov = _provenance(folder)
    scale = _default_cfg_scale(loaded, prov) if cfg_scale is None else cfg_scale
    return Model(loaded=loaded, default_cfg_scale=scale, source=source, provenance=prov)


def _from_musicgen(folder: Path, device: torch.device) -> Model:
    """A transformers ``MusicgenForConditionalGeneration`` folder, with its T5 and EnCodec, sampled
    with its own ``generation_config.guidance_scale`` (else 3)."""
    backbone, encoder, codec = load_backbone(folder, device)
    cfg = section_from_dict(Config, {"model": {"backbone": "musicgen", "pretrained": str(folder)}})
    scale = 3.0
    gen_cfg = folder / "generation_config.json"
    if gen_cfg.is_file():
        scale = float(json.loads(gen_cfg.read_text(encoding="utf-8")).get("guidance_scale") or 1.0)
    loaded = LoadedGenerator(model=backbone.eval(), text_encoder=encoder, codec=codec, cfg=cfg)
    return Model(loaded=loaded, default_cfg_scale=scale, source=str(folder), provenance={"kind": "musicgen"})


def run_students(run: Path) -> dict[str, Path]:
    """The run's student folders by role, read from their provenance (role, else β = 0 / β > 0)."""
    found: dict[str, Path] = {}
    for sub in sorted(p for p in run.iterdir() if p.is_dir()):
        prov = _provenance(sub)
        if not (sub / MODEL_FILE).is_file() or prov.get("kind") != "distilled":
            continue
        role = prov.get("role")
        if role is None and prov.get("mode", "on_policy") != "on_policy":
            role = "offline"
        elif role is None and isinstance(prov.get("beta"), (int, float)):
            role = "diversity" if prov["beta"] > 0 else "quality"
        if role in STUDENT_ROLES:
            found.setdefault(role, sub)
    return found


def _run_config(run: Path) -> Config:
    cfg_path = run / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{run} is neither a checkpoint (no {MODEL_FILE}), a MusicGen folder (no config.json) nor a run "
            f"folder (no {CONFIG_FILE}); pass the folder 'musicdistill run' wrote, e.g. runs/default"
        )
    return section_from_dict(Config, yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {})


def _from_run(run: Path, role: str | None, lam: float | None, device: torch.device) -> Model:
    if role not in ROLES:
        raise ValueError(
            f"{run} is a run folder: pass a role, one of {', '.join(ROLES)} "
            f"(e.g. musicdistill.load({str(run)!r}, 'merge', lam=0.5)); got {role!r}"
        )
    if (lam is not None) != (role == "merge"):
        raise ValueError(
            f"lam is for the role 'merge' only (a value in [0, 1]); got role={role!r}, lam={lam!r}"
        )
    cfg = _run_config(run)
    if role in ("base", "teacher"):
        base = run / "base"
        if not (base / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{base}: the run has no base model yet; finish it with 'musicdistill run'"
            )
        scale = float(cfg.distill.gamma if role == "teacher" else cfg.generate.cfg_scale)
        return _from_checkpoint(base, device, f"{run} ({role})", cfg_scale=scale)
    students = run_students(run)
    wanted = ("quality", "diversity") if role == "merge" else (role,)
    missing = [r for r in wanted if r not in students]
    if missing:
        raise FileNotFoundError(
            f"{run} has no {' and no '.join(missing)} student (found: {', '.join(sorted(students)) or 'none'}); "
            "finish the run with 'musicdistill run'"
        )
    if role != "merge":
        return _from_checkpoint(students[role], device, f"{run} ({role})")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise ValueError(
            f"lam={lam!r} lies outside [0, 1] (0 = the quality student, 1 = the diversity student)"
        )
    return _merged(run, students["quality"], students["diversity"], float(lam), device)


def _merged(run: Path, quality: Path, diversity: Path, lam: float, device: torch.device) -> Model:
    """The run's merge folder at ``lam`` when it exists, else the LERP computed in memory."""
    stored = run / "merges" / f"{quality.name}-{diversity.name}" / lambda_folder(lam)
    source = f"{run} (merge, lambda={lam:g})"
    if abs(round(lam, 2) - lam) < 1e-12 and (stored / MODEL_FILE).is_file():
        return _from_checkpoint(stored, device, source)
    a, b = load_checkpoint(quality), load_checkpoint(diversity)
    model = _from_checkpoint(quality, device, source)
    merged = merge_state_dicts(a.state_dict, b.state_dict, lam)
    missing, unexpected = model.loaded.model.load_state_dict(merged, strict=False)
    if unexpected or (
        missing and not hasattr(model.loaded.model, "decoder")
    ):  # a MusicGen keeps its frozen parts
        raise ValueError(
            f"{quality} and {diversity} do not merge into one model: {sorted(unexpected or missing)[:5]}"
        )
    model.provenance = {
        "kind": "merged",
        "lam": lam,
        "a": str(quality),
        "b": str(diversity),
        "method": "lerp",
    }
    log.info("merged %s and %s at lambda=%g in memory", quality, diversity, lam)
    return model


__all__ = ["ROLES", "load", "run_students"]
