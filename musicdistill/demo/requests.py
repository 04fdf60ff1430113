"""What a demo request may ask for, and the check of one request's raw widget values.

:func:`validate_request` turns the page's (or the API's) raw values into a :class:`DemoRequest`, or
raises :class:`DemoInputError` with a message naming the field and its range, shown to the user as
is. The bounds (:class:`DemoLimits`) come from the loaded models (:class:`musicdistill.demo.engine.DemoEngine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from musicdistill.generation.guidance import MAX_CFG_SCALE

MAX_VARIATIONS = 8
MAX_SEED = 2**31 - 1
MAX_TEMPERATURE = 3.0


class DemoInputError(ValueError):
    """A demo request is invalid; the message is shown to the user as is."""


@dataclass(frozen=True)
class DemoLimits:
    """What a request may ask for; the page's widgets use the same bounds."""

    max_prompt_chars: int
    max_duration: float
    min_duration: float
    max_variations: int = MAX_VARIATIONS
    max_seed: int = MAX_SEED
    max_temperature: float = MAX_TEMPERATURE
    max_cfg_scale: float = MAX_CFG_SCALE


@dataclass(frozen=True)
class DemoRequest:
    """One validated request: G = ``num_variations`` samples of ``prompt`` per system."""

    prompt: str
    lam: float
    num_variations: int
    duration: float
    seed: int
    temperature: float
    compare_teacher: bool = False
    cfg_scale: float = 3.0


def _number(name: str, value: object) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DemoInputError(f"{name} is empty; enter a number")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DemoInputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise DemoInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DemoInputError(f"{name} must be a finite number, got {value!r}")
    return number


def _in_range(name: str, value: object, low: float, high: float, integer: bool = False) -> float:
    number = _number(name, value)
    if integer and not number.is_integer():
        raise DemoInputError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise DemoInputError(f"{name}={number:g} is out of range; it must lie in [{low:g}, {high:g}]")
    return number


def validate_request(
    limits: DemoLimits,
    prompt: object,
    lam: object,
    num_variations: object,
    duration: object,
    seed: object,
    temperature: object,
    compare_teacher: object = False,
    cfg_scale: object = 3.0,
) -> DemoRequest:
    """Check raw widget values against ``limits``; raises :class:`DemoInputError` naming field and range."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise DemoInputError("The prompt is empty; describe the music you want (or pick an example).")
    prompt = prompt.strip()
    if len(prompt) > limits.max_prompt_chars:
        raise DemoInputError(
            f"The prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}. Shorten it."
        )
    if not isinstance(compare_teacher, bool):
        raise DemoInputError(f"compare with the teacher must be true or false, got {compare_teacher!r}")
    return DemoRequest(
        prompt=prompt,
        lam=_in_range("λ", lam, 0.0, 1.0),
        num_variations=int(_in_range("variations", num_variations, 1, limits.max_variations, integer=True)),
        duration=_in_range("duration (s)", duration, limits.min_duration, limits.max_duration),
        seed=int(_in_range("seed", seed, 0, limits.max_seed, integer=True)),
        temperature=_in_range("temperature", temperature, 0.0, limits.max_temperature),
        compare_teacher=compare_teacher,
        cfg_scale=_in_range("CFG scale", cfg_scale, 0.0, limits.max_cfg_scale) if compare_teacher else 1.0,
    )
