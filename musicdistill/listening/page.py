"""The static rating page of a listening test: one self-contained ``index.html`` that needs no server.

The page embeds the test's trials as JSON (stimulus ids, prompts, questions; never a system name),
asks for a rater id, shows the trials in the rater's own order (the PRNG of
:func:`musicdistill.listening.vocabulary.trial_order`, re-implemented in the page's JavaScript), keeps
answers in the browser's localStorage so a reload resumes where the rater stopped, and at the end offers the
ratings as a CSV download (columns :data:`musicdistill.listening.vocabulary.RATINGS_COLUMNS`).

Element ids used by the browser test: ``#rater-id``, ``#start``, ``button.play``, radio inputs named
after the question ids, ``#next``, ``#download``.

The HTML, CSS and JavaScript live in the package-data file ``templates/rating_page.html`` (listed in
pyproject.toml's ``[tool.setuptools.package-data]``); this module only fills in its two placeholders,
``__TITLE__`` (HTML-escaped) and ``__DATA__`` (the trials as JSON).
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from musicdistill.listening.vocabulary import RATER_ID_PATTERN, RATINGS_COLUMNS, SCORE_MAX, SCORE_MIN


def _json_for_script(data: dict[str, Any]) -> str:
    """JSON that cannot end its ``<script>`` element early (``<``, ``>``, ``&`` escaped as \\u00XX)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


TEMPLATE = "templates/rating_page.html"
"""The page's template, relative to this package (``musicdistill.listening``)."""


@cache
def page_template() -> str:
    """The rating page's HTML with ``__TITLE__`` and ``__DATA__`` placeholders, read once from package data."""
    resource = resources.files(__package__)
    for part in TEMPLATE.split("/"):
        resource = resource / part
    return resource.read_text(encoding="utf-8")


def render_page(data: dict[str, Any]) -> str:
    """The page's HTML for ``data`` (see :func:`musicdistill.listening.export.page_data`)."""
    config = {
        **data,
        "columns": list(RATINGS_COLUMNS),
        "score_min": SCORE_MIN,
        "score_max": SCORE_MAX,
        "rater_pattern": RATER_ID_PATTERN,
    }
    values = {"TITLE": html.escape(str(data["title"])), "DATA": _json_for_script(config)}
    return re.sub(r"__(TITLE|DATA)__", lambda m: values[m.group(1)], page_template())
