"""The built-in data's attributes and how its captions are written.

An attribute set (:func:`sample_attributes`) draws every attribute uniformly: instrument timbre,
tempo class (with a bpm jittered by +-5%), key, mode, register and drum pattern. A caption
(:func:`make_caption`) states some of them (each with :data:`STATE_PROBABILITY`) in one of several
styles: a sentence, "This is ...", a bare noun phrase, "Compose ...", or a comma-separated tag list.
Every attribute value has several surface forms (:data:`PHRASES`, :func:`value_phrases`), so one
attribute set admits many paraphrases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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

#: relative jitter of a clip's bpm around its tempo class's bpm
BPM_JITTER = 0.05


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
