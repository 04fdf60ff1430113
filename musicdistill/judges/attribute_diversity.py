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

**Expected attribute diversity** (measure ``expected_attribute_diversity``) reads the oracle's marginal
class probabilities instead of its hard readings (:func:`musicdistill.judges.oracle.predict_marginals_mel`):
with ``p_i`` sample i's probability vector over the classes of ``a``, a pair {i, j} differs with
probability ``1 - <p_i, p_j>``, so per open attribute

    mean over the G (G - 1) / 2 pairs {i, j} of (1 - <p_i, p_j>)  =  1 - (|sum_i p_i|^2 - sum_i |p_i|^2) / (G (G - 1))

(the expected unbiased Gini-Simpson index), then the mean over the open attributes as above. It lies in
[0, 1], equals the hard measure when every ``p_i`` is one-hot, is NaN exactly where the hard one is, and
does not jump when a sample sits on the oracle's decision boundary.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
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


def expected_pairwise_disagreement(probs: np.ndarray) -> np.ndarray:
    """Expected unbiased Gini-Simpson index of groups of probability vectors: ``[..., G, K] -> [...]``.

    The mean over the ``G (G - 1) / 2`` unordered pairs {i, j} of ``1 - <p_i, p_j>`` (G >= 2), computed
    as ``1 - (|sum_i p_i|^2 - sum_i |p_i|^2) / (G (G - 1))`` and clipped to [0, 1] against rounding.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 2 or p.shape[-2] < 2:
        raise ValueError(
            f"expected pairwise disagreement needs probabilities [..., G, K] with G >= 2 samples, "
            f"got shape {p.shape}"
        )
    g = p.shape[-2]
    total = p.sum(axis=-2)  # [..., K]
    same = (np.square(total).sum(-1) - np.square(p).sum(axis=(-2, -1))) / (g * (g - 1))
    return np.clip(1.0 - same, 0.0, 1.0)


def open_mask(attributes: Sequence[dict[str, Any] | None], readable: Sequence[str]) -> np.ndarray:
    """``[B, A]``: whether prompt b leaves attribute ``readable[a]`` open (:func:`unstated_attributes`)."""
    mask = np.zeros((len(attributes), len(readable)), dtype=bool)
    column = {a: i for i, a in enumerate(readable)}
    for b, prompt in enumerate(attributes):
        for a in unstated_attributes(prompt, readable):
            mask[b, column[a]] = True
    return mask


def expected_attribute_diversity(probs: Mapping[str, np.ndarray], attributes: dict[str, Any] | None) -> float:
    """One prompt's expected attribute diversity: ``probs`` maps each attribute the oracle reads (in its
    order) to its G samples' marginal probabilities ``[G, K]``."""
    open_ = unstated_attributes(attributes, list(probs))
    if not open_:
        return math.nan
    return float(np.mean([expected_pairwise_disagreement(probs[a]) for a in open_]))


def expected_attribute_diversity_per_prompt(
    probs: Mapping[str, np.ndarray], attributes: Sequence[dict[str, Any] | None], group: int
) -> np.ndarray:
    """Marginal probabilities of ``B G`` samples (prompt-major; attribute -> ``[B G, K]``, the attributes
    the oracle reads in its order) and ``B`` prompts' attribute dicts -> ``[B]`` (NaN where no attribute
    is left open)."""
    rows = len(attributes) * group
    bad = {a: np.shape(p) for a, p in probs.items() if np.ndim(p) != 2 or np.shape(p)[0] != rows}
    if group < 2 or bad:
        raise ValueError(
            f"need G >= 2 samples per prompt, prompt-major, and [B G, K] = [{rows}, K] probabilities per "
            f"attribute for {len(attributes)} prompts with G={group}; got shapes {bad}"
        )
    readable = list(probs)
    mask = open_mask(attributes, readable)  # [B, A]
    per_attribute = np.zeros(mask.shape, dtype=np.float64)  # [B, A]
    for column, attribute in enumerate(readable):
        grouped = np.asarray(probs[attribute], dtype=np.float64).reshape(len(attributes), group, -1)
        per_attribute[:, column] = expected_pairwise_disagreement(grouped)
    counts = mask.sum(axis=1)
    sums = np.where(mask, per_attribute, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
