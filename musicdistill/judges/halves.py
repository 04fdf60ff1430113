"""Disjoint halves of the training split: one for the reward embedder, one for the second embedder.

The diversity reward's embedder (:mod:`musicdistill.judges.embedder`) and the evaluation's second
embedder (:mod:`musicdistill.judges.second_embedder`) must never see each other's data, so that the
second one is an independent view of diversity. Each training clip goes to one half by a hash of its
caption (:func:`embedder_half`): ``sha256(SALT + caption.strip())``, first 8 bytes as an unsigned
integer, below 2^63 -> ``"reward"``, otherwise ``"second"``. It is deterministic (no seed), the same for
every run and command on the same manifest, about 50/50, and unrelated to the train/valid/test split
(a different salt from :func:`musicdistill.data.manifest.split_for_caption`). Clips that share a
caption share a half, so one caption's clips never feed both embedders.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from musicdistill.judges.log_mel import LabelledMels

log = logging.getLogger(__name__)

#: the two halves
HALVES = ("reward", "second")
#: prefix hashed with each caption; changing it reshuffles the halves
SALT = "musicdistill/embedder-half/v1\0"


def embedder_half(caption: str) -> str:
    """``"reward"`` or ``"second"``: which embedder may train on a clip with this caption."""
    digest = hashlib.sha256((SALT + caption.strip()).encode("utf-8")).digest()
    return HALVES[int.from_bytes(digest[:8], "big") >> 63]


def half_mask(captions: list[str], half: str) -> np.ndarray:
    """Boolean mask ``[N]`` of the captions that fall in ``half``."""
    if half not in HALVES:
        raise ValueError(f"half={half!r} is not one of {list(HALVES)}")
    return np.array([embedder_half(c) == half for c in captions], dtype=bool)


def select_half(train: LabelledMels, half: str, name: str) -> LabelledMels:
    """The clips of ``train`` in ``half`` (``name`` is the model, for messages); at least 2 are needed."""
    mask = half_mask([e.caption for e in train.entries], half)
    if int(mask.sum()) < 2:
        raise ValueError(
            f"{name} trains on the '{half}' half of the training split (a hash of each caption), which "
            f"holds {int(mask.sum())} of the {len(train)} training clips; it needs at least 2: give the "
            "data more clips with distinct captions"
        )
    log.info(
        "%s: training on the '%s' half, %d of %d training clips", name, half, int(mask.sum()), len(train)
    )
    return LabelledMels(
        [e for e, keep in zip(train.entries, mask) if keep], train.mels.select(torch.from_numpy(mask))
    )
