"""The report's HTML pieces: escaping, the "not run" marker, and images and audio embedded as base64
data URIs (PNG figures; OGG/Vorbis audio, WAV when the encoder is unavailable), so the page can be
mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOT_RUN = '<p class="missing">not run</p>'


def esc(value: Any) -> str:
    return html.escape(str(value))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def audio_data_uri(path: Path) -> str:
    """A sound file as a data URI: OGG/Vorbis when the encoder works (about 4x smaller than 16-bit WAV), else WAV."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32")
        buf = io.BytesIO()
        sf.write(buf, audio, rate, format="OGG", subtype="VORBIS")
        return data_uri(buf.getvalue(), "audio/ogg")
    except (RuntimeError, ValueError, TypeError) as err:  # sf.LibsndfileError is a RuntimeError
        log.info("%s: no OGG/Vorbis encoding (%s); embedding the WAV", path, err)
        return data_uri(path.read_bytes(), "audio/wav")


def figure_html(fig, alt: str) -> str:
    """A matplotlib figure as an ``<img>`` with a PNG data URI (closes the figure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="{data_uri(buf.getvalue(), "image/png")}">'


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
