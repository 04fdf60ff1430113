"""Listening tests: the vocabulary shared by the export, the rating page and the analysis.

A listening test compares systems (a checkpoint plus sampling settings) on the paper's human
evaluation (docs/method.md section 6): *quality* trials rate one stimulus on acoustic quality, text
adherence and musicality (1-5 each); *diversity* trials rate how different two generations of the
same prompt by the same system sound (1-5). One quality stimulus per attention check is shown twice
(trial type ``quality_repeat``); a rater whose two answers differ by more than a point fails it.

The export (:mod:`musicdistill.listening.export`) writes the stimuli, the hidden key and the static
rating page (:mod:`musicdistill.listening.page`); the page writes one CSV of :data:`RATINGS_COLUMNS`
per rater; the analysis (:mod:`musicdistill.listening.analysis`) reads the key and those CSVs.

Each rater sees the trials in an order drawn from a small PRNG seeded by (the export's order seed,
the rater id). :func:`trial_order` is the reference implementation; the page's JavaScript computes
the same order bit for bit (FNV-1a to hash the seed text, mulberry32 to draw, Fisher-Yates to
shuffle), and the browser test checks that they agree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCORE_MIN, SCORE_MAX = 1, 5

TRIAL_QUALITY = "quality"
TRIAL_REPEAT = "quality_repeat"
TRIAL_DIVERSITY = "diversity"
TRIAL_TYPES = (TRIAL_QUALITY, TRIAL_REPEAT, TRIAL_DIVERSITY)

#: columns of the CSV the rating page downloads, in order
RATINGS_COLUMNS = (
    "rater_id",
    "test_id",
    "trial_type",
    "order_index",
    "stimulus_a",
    "stimulus_b",
    "question",
    "score",
    "seed",
    "plays",
    "started_at",
    "answered_at",
)
#: columns without which a ratings file cannot be used
REQUIRED_RATINGS_COLUMNS = ("rater_id", "trial_type", "stimulus_a", "stimulus_b", "question", "score")

#: columns of ``key.csv``, the hidden mapping from stimulus ids to systems
KEY_COLUMNS = (
    "test_id",
    "stimulus_id",
    "system",
    "checkpoint",
    "prompt_index",
    "prompt",
    "sample_index",
    "seed",
    "cfg_scale",
    "temperature",
    "top_k",
    "top_p",
    "duration_s",
    "sample_rate",
    "input_lufs",
    "gain_db",
    "output_lufs",
    "peak_dbfs",
    "attention_check",
)

RATER_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_RATER_ID = re.compile(RATER_ID_PATTERN)

_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Question:
    """One rating question: its CSV id, a short label, the question put to the rater and 5 anchor labels."""

    id: str
    label: str
    text: str
    anchors: tuple[str, str, str, str, str]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "text": self.text, "anchors": list(self.anchors)}


QUALITY_QUESTIONS = (
    Question(
        "acoustic_quality",
        "Acoustic quality",
        "How good is the sound itself: clean and clear, free of noise, clicks and distortion?",
        ("Bad", "Poor", "Fair", "Good", "Excellent"),
    ),
    Question(
        "text_adherence",
        "Match to the description",
        "How well does the music match the description shown above?",
        ("Not at all", "Slightly", "Partly", "Mostly", "Perfectly"),
    ),
    Question(
        "musicality",
        "Musicality",
        "How musical is it: a coherent melody, harmony and rhythm that sound like music?",
        ("Not musical", "Barely musical", "Somewhat musical", "Musical", "Very musical"),
    ),
)
DIVERSITY_QUESTION = Question(
    "diversity",
    "Difference",
    "How different are the two clips from each other (melody, rhythm, instruments, mood)?",
    (
        "Almost identical",
        "Slightly different",
        "Somewhat different",
        "Very different",
        "Completely different",
    ),
)
QUESTIONS = {q.id: q for q in (*QUALITY_QUESTIONS, DIVERSITY_QUESTION)}


def questions_for(trial_type: str) -> tuple[Question, ...]:
    """The questions asked in a trial of ``trial_type``."""
    if trial_type == TRIAL_DIVERSITY:
        return (DIVERSITY_QUESTION,)
    if trial_type in (TRIAL_QUALITY, TRIAL_REPEAT):
        return QUALITY_QUESTIONS
    raise ValueError(f"trial_type={trial_type!r} is unknown; expected one of {list(TRIAL_TYPES)}")


def check_rater_id(rater_id: str) -> str:
    """A rater id as the page accepts it (surrounding spaces removed): 1-64 of ``A-Z a-z 0-9 . _ -``."""
    text = str(rater_id).strip()
    if not _RATER_ID.fullmatch(text):
        raise ValueError(
            f"rater id {rater_id!r} must be 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
        )
    return text


# --------------------------------------------------------------------------------------------
# Seeds and the per-rater trial order (mirrored by the page's JavaScript)
# --------------------------------------------------------------------------------------------


def derived_seed(seed: int, purpose: str, test_id: str) -> int:
    """A 32-bit seed for one purpose ('order', 'ids', ...) of an export; one-way, so the order seed
    shown in the page and the CSVs reveals nothing about the stimulus ids."""
    digest = hashlib.sha256(f"musicdistill-listening:{purpose}:{seed}:{test_id}".encode()).hexdigest()
    return int(digest[:8], 16)


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a hash of the UTF-8 bytes of ``text``."""
    h = 0x811C9DC5
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & _MASK32
    return h


class Mulberry32:
    """The mulberry32 generator: a 32-bit state, uniform floats in [0, 1) with 32 random bits each."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK32

    def __call__(self) -> float:
        self.state = (self.state + 0x6D2B79F5) & _MASK32
        t = self.state
        t = ((t ^ (t >> 15)) * (t | 1)) & _MASK32
        t = (t ^ ((t + (((t ^ (t >> 7)) * (t | 61)) & _MASK32)) & _MASK32)) & _MASK32
        return ((t ^ (t >> 14)) & _MASK32) / 4294967296.0


def rater_seed(order_seed: int, rater_id: str) -> int:
    """The seed of one rater's trial order (logged in every row of the rater's CSV)."""
    return fnv1a32(f"{order_seed}:{check_rater_id(rater_id)}")


def shuffle_in_place(items: list[Any], rng: Mulberry32) -> None:
    """Fisher-Yates, drawing ``j = floor(rng() * (i + 1))`` for i = n-1 .. 1."""
    for i in range(len(items) - 1, 0, -1):
        j = int(rng() * (i + 1))
        items[i], items[j] = items[j], items[i]


def spread_repeats(order: list[int], trials: Sequence[dict[str, Any]]) -> None:
    """Move each attention-check repeat away from its original when the shuffle put them side by side.

    A repeat next to its original would test short-term memory, not consistency. For blocks of four
    or more trials, a repeat at distance < 2 is swapped with the trial ``n // 2`` places after the
    original (wrapping around).
    """
    n = len(order)
    if n < 4:
        return
    position = {trial: p for p, trial in enumerate(order)}
    for trial in sorted(t for t in order if trials[t].get("repeat_of") is not None):
        here, original = position[trial], position[trials[trial]["repeat_of"]]
        if abs(here - original) >= 2:
            continue
        target = (original + n // 2) % n
        moved = order[target]
        order[here], order[target] = moved, trial
        position[moved], position[trial] = here, target


def trial_order(trials: Sequence[dict[str, Any]], order_seed: int, rater_id: str) -> list[int]:
    """Indices of ``trials`` in the order rater ``rater_id`` sees them.

    Quality trials (repeats included) come first, shuffled, with repeats spread away from their
    originals; then the diversity trials, shuffled with the same generator.
    """
    rng = Mulberry32(rater_seed(order_seed, rater_id))
    quality = [i for i, t in enumerate(trials) if t["type"] != TRIAL_DIVERSITY]
    diversity = [i for i, t in enumerate(trials) if t["type"] == TRIAL_DIVERSITY]
    shuffle_in_place(quality, rng)
    spread_repeats(quality, trials)
    shuffle_in_place(diversity, rng)
    return quality + diversity
