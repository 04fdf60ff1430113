"""How the built-in data's clips sound: additive instruments, melodies, a pad and drums, mixed.

:func:`render_clip` turns an attribute set (:mod:`musicdistill.data.captions`) into audio: a random
melody on the key's scale in the register's octaves (:func:`melody_notes`) played by the
instrument's :class:`Timbre` (:func:`render_notes`), a sustained tonic-triad pad
(:func:`render_pad`) and the drum pattern (:func:`render_drums`), all on one beat grid. Melody,
rhythm, drum sounds and pad voicing are drawn from the generator passed in, so one attribute set
admits many different clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from musicdistill.data.captions import KEYS

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
#: melody MIDI range [low, high) per register: octaves 2-3 and 5-6
REGISTER_MIDI = {"low": (36, 60), "high": (72, 96)}


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
