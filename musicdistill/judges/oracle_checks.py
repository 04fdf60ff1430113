"""Is each oracle head better than chance on held-out clips? The answer goes into the oracle's model.json.

A head trained on labels the audio does not carry (or on too few recordings) predicts no better than
always answering the most frequent value. Such a head must not decide claims. For every attribute an
oracle predicts, :func:`head_checks` compares its held-out accuracy with *chance*: the share of the
held-out clips that carry the most frequent held-out value (the best any constant answer scores).
Windows of one recording are not independent, so the margin counts held-out *files*: an attribute is
``at_chance`` when its accuracy is not above ``chance + 1.645 * sqrt(chance * (1 - chance) / files)``
(a one-sided 95 % bound). With one held-out value (chance 1) nothing can be shown, and the attribute
is at chance whatever its accuracy.

Written into ``metrics`` of ``oracle/model.json``:

- ``heads``: per head, its attributes, class count and per-attribute ``accuracy``, ``chance``,
  ``held_out_clips``, ``held_out_files`` and ``at_chance`` (None when not measured: no held-out clip);
- ``at_chance``: the attributes measured at chance;
- ``trusted_attributes``: the attributes measured above chance, the only ones claims should use.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from musicdistill.data.manifest import Entry

#: one-sided 95 % normal quantile
Z_ONE_SIDED = 1.645


def attribute_check(name: str, accuracy: float | None, held_out: Sequence[Entry]) -> dict[str, Any]:
    """Held-out accuracy of one attribute against chance (see the module docstring)."""
    labelled = [
        (str(e.attributes[name]), str(e.path))
        for e in held_out
        if e.attributes and e.attributes.get(name) is not None
    ]
    files = len({f for _, f in labelled})
    out: dict[str, Any] = {
        "attribute": name,
        "accuracy": accuracy,
        "held_out_clips": len(labelled),
        "held_out_files": files,
        "chance": None,
        "at_chance": None,
    }
    if accuracy is None or not labelled:
        return out
    chance = Counter(v for v, _ in labelled).most_common(1)[0][1] / len(labelled)
    bound = chance + Z_ONE_SIDED * math.sqrt(chance * (1.0 - chance) / files)
    out.update(chance=round(chance, 4), at_chance=bool(accuracy <= bound + 1e-9))
    return out


def head_checks(
    heads: Sequence[tuple[tuple[str, ...], int]],
    held_out: Sequence[Entry],
    accuracy: dict[str, float] | None,
) -> dict[str, Any]:
    """``heads``: (attributes, class count) per head; ``accuracy``: held-out accuracy per attribute on
    real clips (None when nothing was held out). Returns ``heads``, ``at_chance`` and
    ``trusted_attributes`` (see the module docstring)."""
    accuracy = accuracy or {}
    rows = []
    for attributes, classes in heads:
        checks = [attribute_check(a, accuracy.get(a), held_out) for a in attributes]
        measured = [c["at_chance"] for c in checks if c["at_chance"] is not None]
        rows.append(
            {
                "name": "+".join(attributes),
                "attributes": list(attributes),
                "classes": classes,
                "checks": checks,
                "at_chance": any(measured) if measured else None,
            }
        )
    checks = [c for row in rows for c in row["checks"]]
    return {
        "heads": rows,
        "at_chance": [c["attribute"] for c in checks if c["at_chance"] is True],
        "trusted_attributes": [c["attribute"] for c in checks if c["at_chance"] is False],
    }
