"""Loading every usable clip of a manifest: rows are cut into windows, each clip is read, checked,
mixed down, resampled and cropped or padded, and bad clips are skipped with a logged summary (or
raise, ``strict``) -> (clip entries, float32 [N, samples]).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from musicdistill.config import DataConfig
from musicdistill.data.checks import CheckReport, Problem, check_settings, describe, inspect_all
from musicdistill.data.manifest import SPLIT_ALIASES, SPLITS, Entry, read_manifest
from musicdistill.data.windows import DEFAULT_WINDOWING, Windowing, expand_windows, windowing_of

log = logging.getLogger(__name__)


def load_dataset(
    manifest: str | Path | list[Entry],
    sample_rate: int,
    duration: float,
    split: str | None = None,
    strict: bool = False,
    workers: int = 2,
    min_duration: float = 0.5,
    windowing: Windowing | None = DEFAULT_WINDOWING,
) -> tuple[list[Entry], np.ndarray]:
    """Load every usable clip of a manifest (or entry list) -> (clip entries, float32 [N, samples]).

    Entries longer than one clip are cut into windows (``windowing``; None: the first ``duration``
    seconds of each), one returned entry per clip. ``split`` keeps one split. Bad clips are skipped
    with a logged summary; ``strict`` raises instead. Raises ValueError when no usable clip remains.
    """
    check_settings(sample_rate, duration, min_duration)
    entries = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    name = str(manifest) if isinstance(manifest, (str, Path)) else "the given entries"
    if split is not None:
        wanted = SPLIT_ALIASES.get(split, split)
        if wanted not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")
        present = Counter(e.split for e in entries)
        entries = [e for e in entries if e.split == wanted]
        if not entries:
            raise ValueError(f"{name} has no entries in split '{wanted}' (splits present: {dict(present)})")
    rows = len(entries)
    entries = expand_windows(entries, duration, windowing, min_duration, workers)
    num_samples = int(round(duration * sample_rate))
    audio = np.empty((len(entries), num_samples), dtype=np.float32)
    kept: list[Entry] = []
    problems: list[Problem] = []
    for entry, found in zip(
        entries, inspect_all(entries, sample_rate, duration, min_duration, True, workers, "loading clips")
    ):
        if found.problems:
            problems.extend(found.problems)
            if strict:
                raise ValueError(
                    f"{name}: bad clip in strict mode: {describe(found.problems)}; fix or remove it, "
                    "or load without strict to skip bad clips"
                )
            continue
        audio[len(kept)] = found.clip
        kept.append(entry)
    if problems:
        report = CheckReport(total=len(entries), usable=len(kept), seconds=0.0, problems=problems)
        log.warning(
            "skipped %d of %d clips in %s: %s (run 'musicdistill data check %s' for the list)",
            report.bad,
            len(entries),
            name,
            report.summary(),
            name,
        )
        for p in problems[:5]:
            log.warning("  %s", p.describe())
    if not kept:
        raise ValueError(
            f"no usable clip in {name}: all {len(entries)} entries are bad "
            f"({describe(problems[:3])}); run 'musicdistill data check' on it for the full list"
        )
    if len(kept) < len(entries):
        audio = audio[: len(kept)].copy()
    log.info(
        "loaded %d clips of %.1f s at %d Hz from %d rows of %s",
        len(kept),
        duration,
        sample_rate,
        rows,
        name,
    )
    return kept, audio


def load_data(
    data: DataConfig, manifest: str | Path | list[Entry], split: str | None = None
) -> tuple[list[Entry], np.ndarray]:
    """:func:`load_dataset` with every setting from the ``data`` section (rate, duration, windows, ...)."""
    return load_dataset(
        manifest,
        data.sample_rate,
        data.duration,
        split=split,
        strict=data.strict,
        workers=data.workers,
        min_duration=data.min_duration,
        windowing=windowing_of(data),
    )
