"""The ``README.md`` model card an export writes: what the model is, how it was made, what was shown.

Offline: everything comes from the checkpoint's provenance and config and, when the model came from
a run folder, that run's config and ``evaluate/metrics.json`` (the claims and their verdicts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the licence of the released MusicGen weights (facebook/musicgen-*), which a finetune inherits
MUSICGEN_LICENCE = "CC-BY-NC 4.0 (the licence of the facebook/musicgen-* weights; non-commercial use only)"


def run_claims(run: Path | None) -> list[dict[str, str]]:
    """``[{"id", "statement", "verdict"}]`` from ``<run>/evaluate/metrics.json`` (empty when there is none)."""
    if run is None:
        return []
    try:
        metrics = json.loads((run / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [
        {"id": str(c.get("id")), "statement": str(c.get("statement", "")), "verdict": str(c.get("verdict"))}
        for c in metrics.get("claims", [])
        if isinstance(c, dict)
    ]


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _dial_line(dial: Any) -> str | None:
    """A conditioned student's dial: w's range and β_max (None for any other model)."""
    if not isinstance(dial, dict):
        return None
    low, high = dial.get("w_range", [0.0, 1.0])
    return (
        f"w in [{low:g}, {high:g}], β_max = {dial.get('beta_max')}; pass it as "
        "`Model.generate(..., w=)` or `musicdistill generate --w`"
    )


def _data_line(config: dict[str, Any]) -> str:
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    manifest = data.get("manifest")
    if manifest:
        return f"the user's manifest `{manifest}`"
    return (
        f"the built-in synthesised captioned music ({_value(data.get('num_clips'))} clips of "
        f"{_value(data.get('duration'))} s at {_value(data.get('sample_rate'))} Hz, seed {_value(data.get('seed'))})"
    )


def model_card(
    *,
    name: str,
    kind: str,
    library: str,
    provenance: dict[str, Any],
    config: dict[str, Any],
    sampling: dict[str, Any],
    claims: list[dict[str, str]],
    load_snippet: str,
) -> str:
    """The card's Markdown. ``kind`` is ``musicgen`` or ``native``; ``library`` names what loads the folder."""
    distill = config.get("distill", {}) if isinstance(config.get("distill"), dict) else {}
    lam = provenance.get("lam")
    role = provenance.get("role") or ("merge" if lam is not None else provenance.get("kind", "model"))
    if kind == "musicgen":
        base = f"MusicGen `{provenance.get('pretrained', 'n/a')}`"
        licence = MUSICGEN_LICENCE
    else:
        base = "the native musicdistill generator (`assets/base`, or the run's own pretraining)"
        licence = "that of the data it was trained on; the musicdistill code is MIT"
    rows = [
        ("role", role),
        ("base model", base),
        (
            "β (diversity reward weight)",
            provenance.get("beta", "n/a" if lam is None else "see the merged students"),
        ),
        ("γ (CFG scale of the teacher)", provenance.get("gamma", distill.get("gamma"))),
        ("λ (merge coefficient, 0 = quality, 1 = diversity)", lam),
        (
            "diversity weight w (an input: 0 = quality end, 1 = diversity end; β = w · β_max)",
            _dial_line(provenance.get("dial")),
        ),
        ("merged from", ", ".join(str(provenance[k]) for k in ("a", "b") if k in provenance) or None),
        ("divergence", provenance.get("divergence", distill.get("divergence"))),
        ("distillation steps", provenance.get("step", distill.get("steps"))),
        ("mode", provenance.get("mode")),
        ("data", _data_line(config)),
        ("licence", licence),
    ]
    table = "\n".join(f"| {k} | {_value(v)} |" for k, v in rows if v is not None)
    settings = ", ".join(f"{k} = {_value(v)}" for k, v in sampling.items())
    claim_rows = "\n".join(f"| {c['id']} | {c['verdict']} | {c['statement']} |" for c in claims)
    claims_block = (
        "| claim | verdict | statement |\n| --- | --- | --- |\n" + claim_rows
        if claims
        else "No evaluation of its run was found beside it, so no claim is stated."
    )
    return f"""# {name}

A text-to-music token generator finetuned with **musicdistill** (diversity-rewarded CFG
distillation, Cideron et al., ICLR 2025), exported for {library}.

| | |
| --- | --- |
{table}

## Sampling

Exported sampling settings: {settings}. A distilled student or a merge needs **no classifier-free
guidance**: one model row per sample instead of two.

```python
{load_snippet}
```

## What its run showed

{claims_block}

Each verdict comes from paired bootstrap intervals on held-out prompts of one seed (the rules:
musicdistill's `docs/method.md`, section 7). One seed decides nothing on its own: see the
project's pooled replication for claims that hold over seeds.
"""
