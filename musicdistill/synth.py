"""The built-in captioned-music data: procedurally synthesised clips with audible, labelled attributes.

Every clip draws an instrument timbre, a tempo class (with a bpm jittered by +-5%), a key and mode, a
register and a drum pattern; melody, rhythm, drum sounds and pad voicing are drawn at random per clip,
so one caption admits many different valid clips. Captions come from varied templates and
paraphrases, and some leave attributes unstated (the ``stated`` list says which they mention).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicdistill.atomic import atomic_write_text
from musicdistill.data import split_for_caption

log = logging.getLogger(__name__)

#: bump when the generator's output changes, so that cached datasets are rebuilt
SYNTH_VERSION = 1

INSTRUMENTS = ("pluck", "organ", "flute", "square_lead", "bell", "bass")
TEMPO_BPM = {"slow": 70.0, "medium": 100.0, "fast": 140.0}
KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor")
REGISTERS = ("low", "high")
DRUM_PATTERNS = ("none", "rock", "four_on_the_floor", "breakbeat")

#: every attribute with its possible values (``bpm`` is a number and not listed)
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "instrument": INSTRUMENTS,
    "tempo": tuple(TEMPO_BPM),
    "key": KEYS,
    "mode": MODES,
    "register": REGISTERS,
    "drums": DRUM_PATTERNS,
}
ATTRIBUTE_NAMES = tuple(ATTRIBUTE_VALUES)

#: probability that a caption states each attribute
STATE_PROBABILITY = {
    "instrument": 0.85,
    "tempo": 0.8,
    "key": 0.5,
    "mode": 0.7,
    "register": 0.75,
    "drums": 0.7,
}

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
#: melody MIDI range [low, high) per register: octaves 2-3 and 5-6
REGISTER_MIDI = {"low": (36, 60), "high": (72, 96)}
BPM_JITTER = 0.05


# --------------------------------------------------------------------------------------------
# Attributes and captions
# --------------------------------------------------------------------------------------------


def sample_attributes(rng: np.random.Generator) -> dict[str, Any]:
    """Draw every attribute uniformly; ``bpm`` is the tempo class's bpm jittered by +-5%."""
    attrs: dict[str, Any] = {name: str(rng.choice(values)) for name, values in ATTRIBUTE_VALUES.items()}
    bpm = TEMPO_BPM[attrs["tempo"]] * rng.uniform(1 - BPM_JITTER, 1 + BPM_JITTER)
    attrs["bpm"] = round(float(bpm), 2)
    return attrs


#: surface forms of every attribute value: ``adj`` goes before the noun, ``clause`` after it, ``tag``
#: in a comma-separated tag list. Key and mode are phrased together by :func:`_key_mode_phrases`.
PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "instrument": {
        "pluck": {"noun": ("plucked synth", "pluck", "plucked string", "harp-like pluck")},
        "organ": {"noun": ("organ", "electric organ", "drawbar organ", "church organ")},
        "flute": {"noun": ("flute", "breathy flute", "soft flute", "airy flute")},
        "square_lead": {"noun": ("square lead", "square-wave lead", "chiptune lead", "8-bit square synth")},
        "bell": {"noun": ("bell", "bells", "chimes", "bell-like synth")},
        "bass": {"noun": ("synth bass", "bass synth", "bass", "electric bass")},
    },
    "tempo": {
        "slow": {
            "adj": ("slow", "laid-back", "relaxed", "unhurried"),
            "clause": ("at a slow tempo", "at a slow pace"),
            "tag": ("slow", "slow tempo"),
        },
        "medium": {
            "adj": ("medium-tempo", "mid-tempo", "moderately paced", "moderate-tempo"),
            "clause": ("at a medium tempo", "at a moderate pace"),
            "tag": ("medium tempo", "mid-tempo"),
        },
        "fast": {
            "adj": ("fast", "upbeat", "energetic", "quick"),
            "clause": ("at a fast tempo", "at a quick pace"),
            "tag": ("fast", "fast tempo"),
        },
    },
    "register": {
        "low": {
            "adj": ("low", "low-pitched", "deep"),
            "clause": ("in a low register", "in the low register", "played low"),
            "tag": ("low register", "low-pitched"),
        },
        "high": {
            "adj": ("high", "high-pitched", "soaring"),
            "clause": ("in a high register", "in the upper register", "played high"),
            "tag": ("high register", "high-pitched"),
        },
    },
    "drums": {
        "none": {
            "clause": ("without drums", "with no drums", "with no percussion", "and no drums"),
            "tag": ("no drums", "no percussion", "drumless"),
        },
        "rock": {
            "clause": (
                "with a rock beat",
                "with rock drums",
                "over a kick-snare-hat rock groove",
                "backed by a rock drum kit",
            ),
            "tag": ("rock drums", "rock beat"),
        },
        "four_on_the_floor": {
            "clause": (
                "with a four-on-the-floor beat",
                "over a four-on-the-floor kick",
                "with a dance beat that kicks on every beat",
                "with house drums",
            ),
            "tag": ("four-on-the-floor beat", "four-on-the-floor drums", "house beat"),
        },
        "breakbeat": {
            "clause": (
                "with a breakbeat",
                "over breakbeat drums",
                "with syncopated broken-beat drums",
                "with a funky breakbeat",
            ),
            "tag": ("breakbeat", "breakbeat drums"),
        },
    },
}
NOUNS = ("melody", "tune", "line", "phrase", "riff", "solo")
GENERIC_NOUNS = ("melody", "tune", "piece", "song", "instrumental")


def value_phrases(attribute: str, value: str) -> tuple[str, ...]:
    """Every surface form a caption may use for ``attribute=value`` (instrument, tempo, register, drums)."""
    forms = PHRASES[attribute][value]
    return tuple(p for group in forms.values() for p in group)


def _key_mode_phrases(key: str | None, mode: str | None, tag: bool) -> tuple[str, ...]:
    """Phrases that state the key and/or mode; a key name is always next to its mode or 'key of'."""
    if key and mode:
        return (
            (f"{key} {mode}", f"key: {key} {mode}")
            if tag
            else (f"in {key} {mode}", f"in the key of {key} {mode}")
        )
    if key:
        return (f"key of {key}",) if tag else (f"in the key of {key}",)
    return (f"{mode} key", f"{mode} mode") if tag else (f"in a {mode} key", f"in a {mode} mode")


def _bpm_clause(bpm: float, rng: np.random.Generator) -> str:
    forms = ("at {} bpm", "at around {} BPM", "at roughly {} bpm")
    return str(rng.choice(forms)).format(int(round(bpm)))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou8" else "a"


def make_caption(
    attributes: dict[str, Any], rng: np.random.Generator, stated: list[str] | None = None
) -> tuple[str, list[str]]:
    """A caption for ``attributes`` and the names of the attributes it states.

    ``stated=None`` draws which attributes to state (each with :data:`STATE_PROBABILITY`, at least
    one); pass a list to force them, e.g. all of :data:`ATTRIBUTE_NAMES` for evaluation prompts.
    """
    if stated is None:
        stated = [name for name in ATTRIBUTE_NAMES if rng.random() < STATE_PROBABILITY[name]]
        if not stated:
            stated = [str(rng.choice(ATTRIBUTE_NAMES))]
    unknown = sorted(set(stated) - set(ATTRIBUTE_NAMES))
    if unknown:
        raise ValueError(f"stated={unknown} are not attributes; choose from {list(ATTRIBUTE_NAMES)}")
    stated = [name for name in ATTRIBUTE_NAMES if name in stated]
    style = str(rng.choice(("sentence", "this_is", "bare", "compose", "tags")))
    caption = (
        _tag_caption(attributes, stated, rng)
        if style == "tags"
        else _sentence_caption(attributes, stated, style, rng)
    )
    return caption, stated


def _tag_caption(attrs: dict[str, Any], stated: list[str], rng: np.random.Generator) -> str:
    tags = []
    if "instrument" in stated:
        tags.append(str(rng.choice(PHRASES["instrument"][attrs["instrument"]]["noun"])))
    if "tempo" in stated:
        tags.append(
            _bpm_clause(attrs["bpm"], rng).removeprefix("at ")
            if rng.random() < 0.2
            else str(rng.choice(PHRASES["tempo"][attrs["tempo"]]["tag"]))
        )
    for name in ("register", "drums"):
        if name in stated:
            tags.append(str(rng.choice(PHRASES[name][attrs[name]]["tag"])))
    if "key" in stated or "mode" in stated:
        key = attrs["key"] if "key" in stated else None
        mode = attrs["mode"] if "mode" in stated else None
        tags.append(str(rng.choice(_key_mode_phrases(key, mode, tag=True))))
    order = rng.permutation(len(tags))
    text = ", ".join(tags[i] for i in order)
    return text[0].upper() + text[1:]


def _sentence_caption(attrs: dict[str, Any], stated: list[str], style: str, rng: np.random.Generator) -> str:
    adjectives: list[str] = []
    clauses: list[str] = []
    for name in ("tempo", "register"):
        if name not in stated:
            continue
        forms = PHRASES[name][attrs[name]]
        if name == "tempo" and rng.random() < 0.2:
            clauses.append(_bpm_clause(attrs["bpm"], rng))
        elif rng.random() < 0.6:
            adjectives.append(str(rng.choice(forms["adj"])))
        else:
            clauses.append(str(rng.choice(forms["clause"])))
    if "key" in stated or "mode" in stated:
        key = attrs["key"] if "key" in stated else None
        mode = attrs["mode"] if "mode" in stated else None
        clauses.append(str(rng.choice(_key_mode_phrases(key, mode, tag=False))))
    if "drums" in stated:
        clauses.append(str(rng.choice(PHRASES["drums"][attrs["drums"]]["clause"])))
    if "instrument" in stated:
        head = [str(rng.choice(PHRASES["instrument"][attrs["instrument"]]["noun"])), str(rng.choice(NOUNS))]
    else:
        head = [str(rng.choice(GENERIC_NOUNS))]
    phrase = " ".join(adjectives + head)
    clauses = [clauses[i] for i in rng.permutation(len(clauses))]
    tail = ""
    for i, clause in enumerate(clauses):
        tail += (" " if i == 0 else str(rng.choice((", ", " ", ", and ")))) + clause
    if style == "bare":
        return phrase[0].upper() + phrase[1:] + tail
    lead = {"sentence": "", "this_is": "This is ", "compose": "Compose "}[style]
    text = f"{lead}{_article(phrase)} {phrase}{tail}."
    return text[0].upper() + text[1:]


# --------------------------------------------------------------------------------------------
# Sound
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timbre:
    """An additive instrument: partials (frequency ratios and amplitudes) under one note envelope.

    Partial ``r`` decays at ``decay + decay_slope * r`` per second, so upper partials die first.
    """

    ratios: tuple[float, ...]
    amps: tuple[float, ...]
    attack: float  # seconds
    release: float  # seconds after the note's gate closes
    decay: float = 0.0  # 1/s, every partial
    decay_slope: float = 0.0  # extra 1/s per unit of frequency ratio
    vibrato: float = 0.0  # relative frequency depth at VIBRATO_HZ
    tremolo: float = 0.0  # relative amplitude depth at TREMOLO_HZ (a rotating-speaker organ)
    breath: float = 0.0  # level of white noise that follows the envelope
    legato: tuple[float, float] = (0.55, 0.95)  # range of the per-clip gate length, as a fraction of the note


VIBRATO_HZ = 5.5
TREMOLO_HZ = 6.5


def _harmonics(count: int, step: int = 1) -> tuple[float, ...]:
    return tuple(float(h) for h in range(1, count + 1, step))


TIMBRES: dict[str, Timbre] = {
    "pluck": Timbre(
        _harmonics(10),
        tuple(1.0 / h for h in range(1, 11)),
        attack=0.002,
        release=0.05,
        decay=2.5,
        decay_slope=3.0,
    ),
    "organ": Timbre(
        (1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
        (1.0, 0.8, 0.6, 0.5, 0.3, 0.25),
        attack=0.01,
        release=0.03,
        tremolo=0.3,
        legato=(0.85, 1.0),
    ),
    "flute": Timbre(
        (1.0, 2.0, 3.0),
        (1.0, 0.12, 0.05),
        attack=0.08,
        release=0.08,
        vibrato=0.006,
        breath=0.05,
        legato=(0.8, 1.0),
    ),
    "square_lead": Timbre(
        _harmonics(15, 2),
        tuple(1.0 / h for h in range(1, 16, 2)),
        attack=0.005,
        release=0.04,
        decay=0.4,
        legato=(0.4, 0.7),
    ),
    "bell": Timbre(
        (1.0, 2.0, 2.76, 5.40, 8.93),
        (1.0, 0.6, 0.5, 0.35, 0.25),
        attack=0.001,
        release=0.6,
        decay=0.6,
        decay_slope=0.6,
    ),
    "bass": Timbre(
        _harmonics(6),
        tuple(h**-2.0 for h in range(1, 7)),
        attack=0.006,
        release=0.05,
        decay=0.1,
        decay_slope=0.3,
        legato=(0.75, 1.0),
    ),
}


@dataclass(frozen=True)
class Notes:
    """A monophonic note list on the sample grid: onsets and gate lengths in samples, MIDI pitch, velocity."""

    onsets: np.ndarray  # int64 [notes], sorted; may start before 0
    gates: np.ndarray  # int64 [notes]
    midi: np.ndarray  # int64 [notes]
    velocity: np.ndarray  # float64 [notes]


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _scale_pitches(key: str, mode: str, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """MIDI pitches of the scale in [low, high), and a mask of those that belong to the tonic triad."""
    tonic = KEYS.index(key)
    scale = SCALES[mode]
    pitches = np.array([p for p in range(low, high) if (p - tonic) % 12 in scale])
    triad = {scale[0], scale[2], scale[4]}
    return pitches, np.array([(p - tonic) % 12 in triad for p in pitches])


def melody_notes(
    attrs: dict[str, Any], origin: float, rng: np.random.Generator, sample_rate: int, duration: float
) -> Notes:
    """A random melody on the scale, on an eighth-note grid starting at ``origin`` seconds (<= 0).

    Every beat gets a note (a triad tone) and each off-beat eighth one with probability 0.5, so the
    onset rate follows the tempo; pitches move in small steps with occasional leaps.
    """
    eighth = 30.0 / attrs["bpm"]
    slots = np.arange(int(np.ceil((duration - origin) / eighth)) + 1)
    on_beat = slots % 2 == 0
    play = on_beat | (rng.random(slots.size) < 0.5)
    slots, on_beat = slots[play], on_beat[play]
    times = origin + slots * eighth
    pitches, chord = _scale_pitches(attrs["key"], attrs["mode"], *REGISTER_MIDI[attrs["register"]])
    steps = rng.choice([-2, -1, 0, 1, 2], size=slots.size, p=[0.15, 0.33, 0.04, 0.33, 0.15])
    leaps = rng.random(slots.size) < 0.1
    steps = np.where(leaps, rng.choice([-5, -4, -3, 3, 4, 5], size=slots.size), steps)
    chord_idx = np.flatnonzero(chord)
    pos = int(rng.choice(chord_idx[len(chord_idx) // 4 : len(chord_idx) * 3 // 4 + 1]))
    index = np.empty(slots.size, dtype=np.int64)
    for i in range(slots.size):  # a bounded random walk; a few dozen notes per clip
        pos = int(np.clip(pos + steps[i], 0, len(pitches) - 1))
        if on_beat[i]:  # snap to the nearest triad tone, breaking ties in the direction of motion
            pos = int(chord_idx[np.argmin(np.abs(chord_idx - pos - 0.25 * np.sign(steps[i])))])
        index[i] = pos
    gap = np.diff(np.append(slots, slots[-1] + 2))
    articulation = rng.uniform(*TIMBRES[attrs["instrument"]].legato)
    onsets = np.round(times * sample_rate).astype(np.int64)
    gates = np.maximum(np.round(np.minimum(gap, 2) * eighth * articulation * sample_rate), 1).astype(np.int64)
    velocity = np.where(on_beat, 1.0, 0.8) * rng.uniform(0.85, 1.0, size=slots.size)
    return Notes(onsets, gates, pitches[index].astype(np.int64), velocity)


def _sine(hz: float, sample_rate: int, num_samples: int, start: float = 0.0) -> np.ndarray:
    """sin(2 pi (hz t + start)) -> float32 [num_samples]; the phase is wrapped to one cycle first."""
    cycles = np.arange(num_samples, dtype=np.float32) * np.float32(hz / sample_rate) + np.float32(start)
    return np.sin(np.float32(2 * np.pi) * (cycles - np.floor(cycles)))


def render_notes(
    notes: Notes, timbre: Timbre, rng: np.random.Generator, sample_rate: int, num_samples: int
) -> np.ndarray:
    """Additive synthesis of a monophonic note list -> float32 [num_samples], peak about 1.

    Per-note values are laid out per sample with ``np.repeat``; phase runs on continuously across
    notes, and each note's envelope (attack, decay, release after the gate) ends with a 4 ms fade
    just before the next onset, so notes never click. float32 throughout: numpy's vectorised sin and
    exp are several times faster than in float64.
    """
    lengths = np.diff(np.clip(notes.onsets, 0, num_samples), prepend=0, append=num_samples)

    def per_sample(values: np.ndarray, silence: float = 0.0) -> np.ndarray:
        """Per-note values [count] -> float32 [num_samples] (``silence`` before the first onset)."""
        return np.repeat(np.append(np.float32(silence), values.astype(np.float32)), lengths)

    inc = midi_to_hz(notes.midi) / sample_rate  # cycles per sample
    start_cycles = np.cumsum(np.append(0.0, inc[:-1] * np.diff(notes.onsets))) % 1.0
    first = max(int(notes.onsets[0]), 0)
    offset = np.repeat(np.append(first, notes.onsets), lengths)
    elapsed = (np.arange(num_samples) - offset).astype(np.float32)  # samples since the onset
    cycles = per_sample(start_cycles) + per_sample(inc) * elapsed
    phase = np.float32(2 * np.pi) * (cycles - np.floor(cycles))
    if timbre.vibrato:
        wobble = _sine(VIBRATO_HZ, sample_rate, num_samples)
        phase += per_sample(timbre.vibrato * inc * sample_rate / VIBRATO_HZ) * wobble
    since = elapsed / np.float32(sample_rate)
    envelope = np.minimum(elapsed / np.float32(timbre.attack * sample_rate), 1.0)
    envelope *= np.exp(
        np.maximum(elapsed - per_sample(notes.gates), 0.0) / np.float32(-timbre.release * sample_rate)
    )
    until_next = per_sample(np.append(np.diff(notes.onsets), 2 * num_samples), 1.0) - elapsed
    envelope *= np.minimum(until_next / np.float32(0.004 * sample_rate), 1.0)
    envelope *= per_sample(notes.velocity / sum(timbre.amps))
    if timbre.decay:
        envelope *= np.exp(since * np.float32(-timbre.decay))
    if timbre.tremolo:
        swirl = _sine(TREMOLO_HZ, sample_rate, num_samples)
        envelope *= 1.0 - np.float32(timbre.tremolo) * (0.5 + 0.5 * swirl)
    out = _partials(timbre, phase, since, per_sample(inc * sample_rate), sample_rate)
    if timbre.breath:
        hiss = np.convolve(
            rng.standard_normal(num_samples, dtype=np.float32), np.full(4, 0.5, np.float32), "same"
        )
        out += np.float32(timbre.breath * sum(timbre.amps)) * hiss  # noise low-passed below about 4 kHz
    return out * envelope


def _partials(
    timbre: Timbre, phase: np.ndarray, since: np.ndarray, freq: np.ndarray, sample_rate: int
) -> np.ndarray:
    """Sum of the timbre's partials -> float32 [samples]; partials above 0.45 * sample_rate are muted.

    Integer ratios use the recurrence sin((h+1)x) = 2 cos(x) sin(hx) - sin((h-1)x) instead of one
    sin per partial.
    """
    nyquist = 0.45 * sample_rate
    top = float(freq.max())
    slope = np.exp(since * np.float32(-timbre.decay_slope)) if timbre.decay_slope else None
    out = np.zeros_like(phase)

    def add(wave_: np.ndarray, ratio: float, amp: float, fade: np.ndarray | None) -> None:
        term = wave_ * np.float32(amp)
        if fade is not None:
            term *= fade
        if ratio * top >= nyquist:
            term *= freq < np.float32(nyquist / ratio)
        np.add(out, term, out=out)

    if all(r.is_integer() for r in timbre.ratios):
        amp_of = {int(r): a for r, a in zip(timbre.ratios, timbre.amps)}
        below, current = np.zeros_like(phase), np.sin(phase)
        two_cos = np.float32(2.0) * np.cos(phase)
        fade = None if slope is None else slope.copy()
        for h in range(1, max(amp_of) + 1):
            if h in amp_of:
                add(current, h, amp_of[h], fade)
            below, current = current, two_cos * current - below
            if fade is not None:
                fade *= slope
        return out
    for ratio, amp in zip(timbre.ratios, timbre.amps):
        fade = None if slope is None else np.exp(since * np.float32(-timbre.decay_slope * ratio))
        add(np.sin(np.float32(ratio) * phase), ratio, amp, fade)
    return out


def render_pad(
    key: str, mode: str, rng: np.random.Generator, sample_rate: int, num_samples: int
) -> np.ndarray:
    """A sustained tonic triad of sines around middle C (MIDI 54-73) -> float32 [num_samples], peak <= 1."""
    root = 60 + KEYS.index(key)
    if root > 66:
        root -= 12
    voices = np.array([root, root + SCALES[mode][2], root + 7])
    if rng.random() < 0.3:  # first inversion: the root moves up an octave
        voices[0] += 12
    out = np.zeros(num_samples, dtype=np.float32)
    for f, start in zip(midi_to_hz(voices), rng.uniform(0, 1, size=3)):
        out += _sine(f, sample_rate, num_samples, start)
    swell = np.minimum(np.arange(num_samples, dtype=np.float32) / np.float32(0.3 * sample_rate), 1.0)
    return out * swell / np.float32(3.0)


#: hits per 16-step bar (sixteenth notes): kick, snare, closed hi-hat
DRUM_STEPS: dict[str, dict[str, tuple[int, ...]]] = {
    "rock": {"kick": (0, 8), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14)},
    "four_on_the_floor": {"kick": (0, 4, 8, 12), "snare": (4, 12), "hat": (2, 6, 10, 14)},
    "breakbeat": {"kick": (0, 2, 10), "snare": (4, 7, 12, 15), "hat": (0, 2, 4, 6, 8, 10, 12, 14)},
}


def _drum_sounds(rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
    """One-shot kick, snare and hi-hat samples with small per-clip variations."""

    def time(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sample_rate)) / sample_rate

    t = time(0.3)
    sweep = rng.uniform(45, 60) + 110 * np.exp(-t / 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-t / rng.uniform(0.09, 0.15))
    t = time(0.2)
    noise = np.diff(rng.standard_normal(t.size + 1))
    snare = 0.5 * noise * np.exp(-t / 0.06) + 0.6 * np.sin(2 * np.pi * rng.uniform(170, 210) * t) * np.exp(
        -t / 0.04
    )
    t = time(0.08)
    hiss = np.diff(rng.standard_normal(t.size + 2), n=2)
    hat = 0.25 * hiss * np.exp(-t / rng.uniform(0.015, 0.03))
    return {"kick": kick, "snare": snare, "hat": hat}


def render_drums(
    pattern: str, bpm: float, origin: float, rng: np.random.Generator, sample_rate: int, num_samples: int
) -> np.ndarray:
    """The drum pattern repeated on the bar grid that starts at ``origin`` seconds -> float32 [num_samples]."""
    out = np.zeros(num_samples)
    if pattern == "none":
        return out.astype(np.float32)
    sounds = _drum_sounds(rng, sample_rate)
    sixteenth = 15.0 / bpm
    gains = {"kick": 0.9, "snare": 0.6, "hat": rng.uniform(0.3, 0.5)}
    bars = int(np.ceil((num_samples / sample_rate - origin) / (16 * sixteenth)))
    for name, steps in DRUM_STEPS[pattern].items():
        sound = sounds[name] * gains[name]
        for bar in range(bars):
            for step in steps:
                start = int(round((origin + (16 * bar + step) * sixteenth) * sample_rate))
                if 0 <= start < num_samples:
                    end = min(start + sound.size, num_samples)
                    out[start:end] += sound[: end - start] * rng.uniform(0.85, 1.0)
    return out.astype(np.float32)


def render_clip(
    attributes: dict[str, Any], rng: np.random.Generator, sample_rate: int = 16000, duration: float = 4.0
) -> np.ndarray:
    """Synthesize one clip for ``attributes`` -> float32 [round(duration * sample_rate)], peak 0.9."""
    num_samples = int(round(duration * sample_rate))
    origin = -rng.uniform(0.0, 60.0 / attributes["bpm"])
    notes = melody_notes(attributes, origin, rng, sample_rate, duration)
    melody = render_notes(notes, TIMBRES[attributes["instrument"]], rng, sample_rate, num_samples)
    pad = render_pad(attributes["key"], attributes["mode"], rng, sample_rate, num_samples)
    drums = render_drums(attributes["drums"], attributes["bpm"], origin, rng, sample_rate, num_samples)
    mix = melody + rng.uniform(0.2, 0.3) * pad + rng.uniform(0.5, 0.7) * drums
    return (0.9 * mix / max(float(np.abs(mix).max()), 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

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

    Unlike :func:`musicdistill.atomic.atomic_write_bytes` this skips the per-file fsync (it costs
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
    with tqdm(total=num_clips, desc="synthesizing clips", unit="clip") as bar:
        if workers == 1:
            results = map(_write_chunk, jobs)
            for part in results:
                records.extend(part)
                bar.update(len(part))
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_keep_arrays_on_the_heap) as pool:
                for part in pool.imap(_write_chunk, jobs):
                    records.extend(part)
                    bar.update(len(part))
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
