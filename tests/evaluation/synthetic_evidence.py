"""Synthetic per-prompt metric tables shaped like the main job's evaluation, for the claims and the report.

Each system's per-prompt value of a measure is ``mean + prompt effect + own noise``: the prompt effect
(sd 0.15) is shared by every system, as real prompts are easier or harder for all of them; the own
noise (sd ``noise``, 0.02 by default) is centred so that every paired difference has exactly the
mean difference designed here. With B = 60 prompts a paired difference has a 95 % half-width of
about 0.007, so +-0.05 is clearly resolved and 0 straddles.

By default every claim C1-C5 holds:

- the CFG front: base (γ = 1) 0.50 / 0.60, γ = 1.5 0.58 / 0.52, teacher γ = 3 0.70 / 0.40, γ = 5 0.72 / 0.30
  (quality / primary diversity);
- merge λ = 0.25 at 0.68 / 0.47: non-inferior to the teacher (−0.02 > −0.035) and 0.05 above the
  CFG front at its quality (0.42);
- the non-inferiority margin is min(5 % of 0.70, 25 % of (0.70 − 0.50)) = 0.035 (the 5 % branch).

``conditioned=True`` adds the conditioned student at w = 0, 0.5 and 1 (:data:`CONDITIONED_SYSTEMS`), for
which C6 then holds. ``control=True`` adds the diversity student's control (β = 0 with its settings; 0.68 / 0.42), which C3
then compares against. The hand-made features (``diversity_independent``) read the primary values
+ 0.1, the second embedder (``views=("diversity_second",)``) + 0.05, each with the primary's noise;
``overrides`` may move their means (``"independent"``, ``"second"``) to make a view disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicdistill.evaluation.comparisons import Evidence, build_evidence
from musicdistill.evaluation.evaluate import paired_evidence
from musicdistill.evaluation.paired import PromptTable, mean_estimate, resample_indices
from musicdistill.evaluation.systems import slug

GAMMA = 3.0
B = 60
NAN_PROMPTS = 3  # the first prompts state no attribute: attribute adherence and diversity are NaN there

#: name -> (checkpoint folder, cfg scale, temperature, quality, primary diversity, reward diversity)
SYSTEMS: dict[str, tuple[str, float, float, float, float, float]] = {
    "base": ("base", 1.0, 1.0, 0.50, 0.60, 0.90),
    "base T=0.7": ("base", 1.0, 0.7, 0.52, 0.45, 0.80),
    "base CFG 1.5": ("base", 1.5, 1.0, 0.58, 0.52, 0.85),
    "base CFG 3": ("base", 3.0, 1.0, 0.70, 0.40, 0.70),
    "base CFG 5": ("base", 5.0, 1.0, 0.72, 0.30, 0.60),
    "quality (beta=0)": ("quality", 1.0, 1.0, 0.69, 0.41, 0.72),
    "diversity (beta=15)": ("diversity", 1.0, 1.0, 0.60, 0.55, 0.85),
    "merge lambda=0.25": ("merges/lam_0.25", 1.0, 1.0, 0.68, 0.47, 0.75),
    "merge lambda=0.5": ("merges/lam_0.50", 1.0, 1.0, 0.64, 0.50, 0.80),
    "offline (beta=0)": ("offline", 1.0, 1.0, 0.66, 0.40, 0.70),
}
CONTROL = "control (beta=0, diversity settings)"
CONTROL_SYSTEM = {CONTROL: ("control", 1.0, 1.0, 0.68, 0.42, 0.73)}
#: the conditioned student at three w: each at least as diverse as the merge front at its quality
#: (+0.01, +0.005, +0.0075 against the margin -delta_d = -0.25 * (0.60 - 0.40) = -0.05), and w = 0
#: non-inferior to the teacher (-0.01 against -0.035)
CONDITIONED_SYSTEMS = {
    "conditioned w=0": ("conditioned", 1.0, 1.0, 0.69, 0.42, 0.72),
    "conditioned w=0.5": ("conditioned", 1.0, 1.0, 0.66, 0.49, 0.80),
    "conditioned w=1": ("conditioned", 1.0, 1.0, 0.61, 0.545, 0.85),
}
ROLES = {"quality": "quality", "diversity": "diversity", "offline": "offline", "control": "control"}


def role_of(name: str, folder: str, cfg: float, temperature: float) -> dict[str, Any]:
    """The ``role`` entry (with ``lam`` and ``merge_of`` for merges) the main job writes for a system."""
    if folder == "base":
        return {"role": "teacher" if (cfg, temperature) == (GAMMA, 1.0) else "base"}
    if folder == "conditioned":
        return {"role": "conditioned", "w": float(name.split("w=")[-1])}
    if folder.startswith("merges/"):
        lam = float(folder.split("_")[-1])
        return {"role": "merge", "lam": lam, "merge_of": ["quality", "diversity"]}
    return {"role": ROLES.get(folder, "student")}


def _centred(rng: np.random.Generator, sd: float) -> np.ndarray:
    """``[B]`` noise of standard deviation ``sd``, 0 on the first prompts, with mean exactly 0 over all
    prompts and over those with an attribute."""
    z = rng.normal(0.0, 1.0, size=B - NAN_PROMPTS)
    return np.concatenate([np.zeros(NAN_PROMPTS), sd * (z - z.mean()) / z.std()])


def per_prompt(
    overrides: dict[str, dict[str, float]] | None = None,
    *,
    noise: float = 0.02,
    noise_of: dict[str, float] | None = None,
    drop: tuple[str, ...] = (),
    primary: str = "attribute_diversity",
    systems: dict[str, tuple[str, float, float, float, float, float]] | None = None,
    control: bool = False,
    views: tuple[str, ...] = (),
    conditioned: bool = False,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, Any]]]:
    """(``{system: {measure: B values}}``, metrics.json-style ``systems``) for the synthetic run.

    ``overrides`` sets a system's mean of a measure (``quality``, ``primary``, ``reward``,
    ``independent``, ``second``); ``noise_of`` sets a system's own noise; ``drop`` leaves out systems
    or measures; ``primary`` names the primary measure's key; ``control`` adds the control;
    ``views`` adds ``"diversity_second"`` beside the hand-made features.
    """
    overrides = overrides or {}
    rng = np.random.default_rng(0)
    effects = {m: _centred(rng, 0.15) for m in ("quality", "primary", "reward", "text")}
    values: dict[str, dict[str, list[float]]] = {}
    info: dict[str, dict[str, Any]] = {}
    table = {
        **(systems or SYSTEMS),
        **(CONTROL_SYSTEM if control else {}),
        **(CONDITIONED_SYSTEMS if conditioned else {}),
    }
    for name, (folder, cfg, temp, q, d, r) in table.items():
        if name in drop:
            continue
        means = {"quality": q, "primary": d, "reward": r, "text": 0.3 + 0.2 * q}
        means.update({k: v for k, v in overrides.get(name, {}).items() if k in means})
        own = {m: _centred(rng, (noise_of or {}).get(name, noise)) for m in means}
        cols = {m: means[m] + effects[m] + own[m] for m in means}
        shifted = {"independent": means["primary"] + 0.1, "second": means["primary"] + 0.05}
        shifted.update({k: v for k, v in overrides.get(name, {}).items() if k in shifted})
        measures = {
            "attribute_adherence": cols["quality"],
            "text_adherence": cols["text"],
            primary: cols["primary"],
            "diversity_reward": cols["reward"],
        }
        if primary != "diversity_independent":
            measures["diversity_independent"] = cols["primary"] + shifted["independent"] - means["primary"]
        if "diversity_second" in views and primary != "diversity_second":
            measures["diversity_second"] = cols["primary"] + shifted["second"] - means["primary"]
        measures["attribute_adherence"][:NAN_PROMPTS] = np.nan
        if primary == "attribute_diversity":
            measures[primary][:NAN_PROMPTS] = np.nan
        values[name] = {m: v.tolist() for m, v in measures.items() if m not in drop}
        info[name] = {
            "family": "synthetic",
            "checkpoint": f"/runs/x/{folder}",
            "settings": {"cfg_scale": cfg, "temperature": temp, "top_k": 0, "top_p": 0.0},
            "cost": {"rows_per_sample": 1 if cfg == 1.0 else 2},
            **role_of(name, folder, cfg, temp),
        }
    return values, info


def evidence_of(
    values: dict[str, dict[str, list[float]]],
    info: dict[str, dict[str, Any]],
    indices: np.ndarray,
    gamma: float = GAMMA,
) -> Evidence:
    """:func:`build_evidence` on a ``{system: {measure: values}}`` table and its systems."""
    return build_evidence(PromptTable.from_lists(values), info, gamma, indices)


def evidence(
    overrides: dict[str, dict[str, float]] | None = None, *, resamples: int = 400, **kwargs: Any
) -> Evidence:
    """The :class:`Evidence` of :func:`per_prompt` with ``resamples`` joint resamples (400)."""
    values, info = per_prompt(overrides, **kwargs)
    return evidence_of(values, info, resample_indices(B, resamples, seed=0))


def metrics_json(overrides: dict[str, dict[str, float]] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A whole ``evaluate/metrics.json`` for the synthetic run, as the evaluate stage writes it."""
    values, info = per_prompt(overrides, **kwargs)
    table = PromptTable.from_lists(values)
    indices = resample_indices(B, 400, seed=0)
    for name, measures in values.items():
        info[name]["metrics"] = {
            m: mean_estimate(np.asarray(v), indices).as_dict() for m, v in measures.items()
        } | {"frechet_independent": {"mean": 2.0}}
        info[name]["cost"] |= {"seconds": 1.5, "frames_per_s": 100.0}
        info[name]["samples"] = f"samples/{slug(name)}"
    return {
        "num_prompts": B,
        "samples_per_prompt": 2,
        "seed": 0,
        "duration": 1.0,
        "sample_rate": 16000,
        "systems": info,
        "prompts": ["a slow organ melody in A minor"],
        **paired_evidence(table, info, indices, GAMMA),
    }
