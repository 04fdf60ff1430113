"""Attribute diversity: how differently the samples of one prompt realise what the prompt leaves open.

For a prompt and its G samples, the oracle reads every attribute of every sample
(:func:`musicdistill.judges.oracle.predict_attributes_mel`). Over the attributes the oracle reads that
the caption does NOT state (``attributes["stated"]``; a prompt without a ``stated`` list states every
attribute), attribute diversity is

    mean over unstated attributes a of  (number of sample pairs {i, j}, i != j, whose readings of a differ)
                                        / (G (G - 1) / 2)

i.e. the pairwise disagreement rate, which is exactly the unbiased Gini-Simpson index of the G readings
of ``a``, ``1 - sum_k n_k (n_k - 1) / (G (G - 1))`` (the chance that two different samples, drawn without
replacement, read differently). 0: every sample makes the same choice for every open attribute; the
largest value of an attribute with C values is about ``1 - 1/C`` for uniform choices (6 instruments:
0.83; 2 modes: 0.5), so the mean depends on which attributes a prompt leaves open, and systems are
compared on the same prompts (paired). Stated attributes do not count: a sample that breaks the prompt
is an adherence failure, not a different take. NaN when the prompt states every attribute the oracle
reads, when it has no attribute dict, or when there is no oracle.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


def stated_attributes(attributes: dict[str, Any]) -> set[str]:
    """The attributes a prompt states: its ``stated`` list, or every key (but ``stated``) without one."""
    stated = attributes.get("stated")
    return set(stated) if stated is not None else {k for k in attributes if k != "stated"}


def unstated_attributes(attributes: dict[str, Any] | None, readable: Sequence[str]) -> list[str]:
    """The attributes of ``readable`` (those the oracle reads, in its order) that the prompt leaves open."""
    if not attributes:
        return []
    stated = stated_attributes(attributes)
    return [a for a in readable if a not in stated]


def pairwise_disagreement(values: Sequence[Any]) -> float:
    """Fraction of the unordered pairs of ``values`` (G >= 2) that differ = the unbiased Gini-Simpson index."""
    g = len(values)
    if g < 2:
        raise ValueError(f"pairwise disagreement needs at least 2 samples, got {g}")
    same = sum(n * (n - 1) for n in Counter(str(v) for v in values).values())
    return 1.0 - same / (g * (g - 1))


def attribute_diversity(
    readings: Sequence[dict[str, str]], attributes: dict[str, Any] | None, readable: Sequence[str]
) -> float:
    """One prompt's attribute diversity: ``readings`` are the oracle's readings of its G samples."""
    open_ = unstated_attributes(attributes, readable)
    if not open_:
        return math.nan
    return float(np.mean([pairwise_disagreement([r.get(a) for r in readings]) for a in open_]))


def attribute_diversity_per_prompt(
    readings: Sequence[dict[str, str]],
    attributes: Sequence[dict[str, Any] | None],
    group: int,
    readable: Sequence[str],
) -> np.ndarray:
    """Readings of ``B G`` samples (prompt-major) and ``B`` prompts' attribute dicts -> ``[B]`` (NaN where
    undefined)."""
    if group < 2 or len(readings) != len(attributes) * group:
        raise ValueError(
            f"need G >= 2 readings per prompt, prompt-major: got {len(readings)} readings for "
            f"{len(attributes)} prompts with G={group}"
        )
    return np.array(
        [
            attribute_diversity(readings[b * group : (b + 1) * group], attributes[b], readable)
            for b in range(len(attributes))
        ],
        dtype=np.float64,
    )
