"""Groups of real clips that a valid diversity measure must rank: same attributes < open attributes varied.

For each of P prompts of the built-in data (an attribute set and a caption that leaves at least one
attribute unstated, :func:`musicdistill.data.captions.make_caption`), two groups of G freshly rendered
clips (:func:`musicdistill.data.render.render_clip`, never in any training set):

- ``same``: every clip has every attribute of the prompt (bpm included); only what the renderer draws
  per clip differs (melody, rhythm, drum sounds, pad voicing, mix levels);
- ``vary``: every clip has the attributes the caption states, and each unstated one redrawn uniformly
  per clip (with a new bpm when the tempo is unstated) -- different takes that still obey the prompt.

A diversity measure that means something scores ``vary`` above ``same`` on the same prompt. Clip
``(p, kind, i)`` depends only on ``(seed, p, kind, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from musicdistill.data.captions import ATTRIBUTE_NAMES, make_caption, sample_attributes
from musicdistill.data.render import render_clip

KINDS = ("same", "vary")


@dataclass
class ReferenceGroups:
    """P prompts' captions and attribute dicts (with ``stated``), and per kind the clips ``[P, G, S]``
    (float32) with their attribute dicts (``[P][G]``)."""

    captions: list[str]
    attributes: list[dict[str, Any]]
    audio: dict[str, np.ndarray]
    clip_attributes: dict[str, list[list[dict[str, Any]]]]

    @property
    def num_prompts(self) -> int:
        return len(self.captions)

    @property
    def group(self) -> int:
        return self.audio[KINDS[0]].shape[1]


def open_prompt(rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    """An attribute set with ``stated`` and a caption that states some but not all of its attributes."""
    while True:
        attributes = sample_attributes(rng)
        caption, stated = make_caption(attributes, rng)
        if len(stated) < len(ATTRIBUTE_NAMES):
            return {**attributes, "stated": stated}, caption


def varied_attributes(prompt: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The prompt's stated attributes with every unstated one (and the bpm, with the tempo) redrawn."""
    fresh = sample_attributes(rng)
    stated = set(prompt["stated"])
    out = {name: prompt[name] if name in stated else fresh[name] for name in ATTRIBUTE_NAMES}
    out["bpm"] = prompt["bpm"] if "tempo" in stated else fresh["bpm"]
    return out


def reference_groups(
    num_prompts: int, group: int, seed: int, sample_rate: int = 16000, duration: float = 4.0
) -> ReferenceGroups:
    """Render the ``same`` and ``vary`` groups of ``num_prompts`` prompts, ``group`` clips each."""
    if num_prompts < 1 or group < 2:
        raise ValueError(f"need at least 1 prompt and 2 clips per group, got {num_prompts} and {group}")
    captions, prompts = [], []
    audio = {k: [] for k in KINDS}
    clip_attrs: dict[str, list[list[dict[str, Any]]]] = {k: [] for k in KINDS}
    for p in range(num_prompts):
        prompt, caption = open_prompt(np.random.default_rng([seed, p]))
        captions.append(caption)
        prompts.append(prompt)
        for k, kind in enumerate(KINDS):
            rows, attrs = [], []
            for i in range(group):
                rng = np.random.default_rng([seed, p, k + 1, i])
                values = varied_attributes(prompt, rng) if kind == "vary" else dict(prompt)
                values.pop("stated", None)
                rows.append(render_clip(values, rng, sample_rate, duration))
                attrs.append(values)
            audio[kind].append(np.stack(rows))
            clip_attrs[kind].append(attrs)
    return ReferenceGroups(captions, prompts, {k: np.stack(v) for k, v in audio.items()}, clip_attrs)
