"""The built-in captioned-music data: datasets of procedurally synthesised clips with labelled attributes.

Each clip draws an attribute set and a caption stating some of it (:mod:`musicdistill.data.captions`), and
is rendered from the attributes (:mod:`musicdistill.data.render`), so one caption admits many different
valid clips. This module writes datasets of such clips: ``audio/NNNNNN.wav``, ``manifest.jsonl`` and
``synth.json``.

Clip ``i`` of a dataset depends only on ``(seed, i)``, so the number of worker processes never
changes a byte of the output. The attribute schema written to the manifest is a contract used by
the attribute oracle and the evaluation::

    {"instrument": str, "tempo": "slow"|"medium"|"fast", "bpm": float, "key": "C".."B",
     "mode": "major"|"minor", "register": "low"|"high", "drums": "none"|pattern,
     "stated": [attribute names the caption states]}
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import multiprocessing
import os
import re
import wave
from pathlib import Path
from typing import Any

import numpy as np

from musicdistill.data.captions import ATTRIBUTE_VALUES, make_caption, sample_attributes
from musicdistill.data.manifest import split_for_caption
from musicdistill.data.render import render_clip
from musicdistill.progress import Progress
from musicdistill.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: bump when the generator's output changes, so that cached datasets are rebuilt
SYNTH_VERSION = 1

AUDIO_DIR = "audio"
MANIFEST_NAME = "manifest.jsonl"
SETTINGS_NAME = "synth.json"
_CLIP_NAME = re.compile(r"^\d{6,}\.wav$")


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index``: a function of (seed, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def synth_record(
    seed: int, index: int, sample_rate: int, duration: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Clip ``index``'s manifest record and its 16-bit PCM samples (int16 [samples])."""
    rng = clip_rng(seed, index)
    attributes = sample_attributes(rng)
    caption, stated = make_caption(attributes, rng)
    audio = render_clip(attributes, rng, sample_rate, duration)
    pcm = np.round(audio * 32767.0).astype(np.int16)
    record = {
        "path": f"{AUDIO_DIR}/{index:06d}.wav",
        "caption": caption,
        "duration": float(duration),
        "sample_rate": int(sample_rate),
        "split": split_for_caption(caption),
        "attributes": {**attributes, "stated": stated},
    }
    return record, pcm


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file's bytes for int16 [samples]."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.astype("<i2").tobytes())
    return buffer.getvalue()


def _publish(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder and rename, so a clip is never seen half-written.

    Unlike :func:`musicdistill.storage.atomic.atomic_write_bytes` this skips the per-file fsync (it costs
    more than synthesising the clip); :func:`synthesize_dataset` syncs once before the manifest.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _keep_arrays_on_the_heap() -> None:
    """Worker initializer: stop glibc from mmap-ing (and page-faulting) every 256 KB temporary array.

    Rendering allocates a few dozen clip-sized float32 arrays per clip; with glibc's default
    thresholds each is a fresh mmap, and the page faults cost about a third of the CPU time. Raising
    the mmap and trim thresholds of the worker process keeps them in the reused heap. Elsewhere
    (no glibc), nothing changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD


def _write_chunk(job: tuple[Path, int, list[int], int, float]) -> list[dict[str, Any]]:
    out, seed, indices, sample_rate, duration = job
    records = []
    for index in indices:
        record, pcm = synth_record(seed, index, sample_rate, duration)
        _publish(out / record["path"], wav_bytes(pcm, sample_rate))
        records.append(record)
    return records


def synth_settings(num_clips: int, seed: int, sample_rate: int, duration: float) -> dict[str, Any]:
    """What determines a dataset's bytes (written to ``synth.json``); worker count is not part of it."""
    return {
        "version": SYNTH_VERSION,
        "num_clips": num_clips,
        "seed": seed,
        "sample_rate": sample_rate,
        "duration": duration,
        "attributes": {k: list(v) for k, v in ATTRIBUTE_VALUES.items()},
    }


def dataset_is_current(out: str | Path, num_clips: int, seed: int, sample_rate: int, duration: float) -> bool:
    """True when ``out`` holds a complete dataset written with exactly these settings."""
    out = Path(out)
    try:
        saved = json.loads((out / SETTINGS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return saved == synth_settings(num_clips, seed, sample_rate, duration) and (out / MANIFEST_NAME).is_file()


def _check_args(num_clips: int, seed: int, sample_rate: int, duration: float, workers: int) -> None:
    if num_clips < 1:
        raise ValueError(f"num_clips={num_clips}: must be at least 1")
    if seed < 0:
        raise ValueError(f"seed={seed}: must be >= 0")
    if not 8000 <= sample_rate <= 96000:
        raise ValueError(f"sample_rate={sample_rate}: must be between 8000 and 96000 Hz")
    if not 0.25 < duration <= 60.0:
        raise ValueError(f"duration={duration}: must be above 0.25 and at most 60 seconds")
    if workers < 1:
        raise ValueError(f"workers={workers}: must be at least 1")


def synthesize_dataset(
    out: str | Path,
    num_clips: int,
    seed: int = 0,
    sample_rate: int = 16000,
    duration: float = 4.0,
    workers: int = 2,
) -> Path:
    """Write ``out/audio/NNNNNN.wav``, ``out/manifest.jsonl`` and ``out/synth.json``; return the manifest path.

    Rerunning into an existing folder first removes its manifest and settings (so an interrupted
    run never leaves a manifest that mixes two runs), rewrites every clip, deletes clips left over
    from a larger earlier run, and publishes the manifest and settings last, atomically.
    """
    _check_args(num_clips, seed, sample_rate, duration, workers)
    out = Path(out)
    (out / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    for name in (SETTINGS_NAME, MANIFEST_NAME):
        (out / name).unlink(missing_ok=True)
    chunk = max(1, min(64, num_clips // (4 * workers) or 1))
    jobs = [
        (out, seed, list(range(i, min(i + chunk, num_clips))), sample_rate, duration)
        for i in range(0, num_clips, chunk)
    ]
    records: list[dict[str, Any]] = []
    progress = Progress("synthesizing clips", num_clips, unit="clip")
    if workers == 1:
        for part in map(_write_chunk, jobs):
            records.extend(part)
            progress.update(len(records))
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_keep_arrays_on_the_heap) as pool:
            for part in pool.imap(_write_chunk, jobs):
                records.extend(part)
                progress.update(len(records))
    progress.close()
    wanted = {Path(r["path"]).name for r in records}
    for stale in (out / AUDIO_DIR).iterdir():
        if _CLIP_NAME.match(stale.name) and stale.name not in wanted:
            stale.unlink()
    if hasattr(os, "sync"):
        os.sync()  # the clips reach the disk before the manifest that lists them
    atomic_write_text(out / MANIFEST_NAME, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    settings = synth_settings(num_clips, seed, sample_rate, duration)
    atomic_write_text(out / SETTINGS_NAME, json.dumps(settings, indent=2) + "\n")
    splits = {s: sum(r["split"] == s for r in records) for s in ("train", "valid", "test")}
    log.info("wrote %d clips to %s (splits %s)", num_clips, out, splits)
    return out / MANIFEST_NAME
