"""The Gradio page of the merge-slider demo (``musicdistill demo``; ``demo/app.py`` is a thin entry).

One prompt, a λ slider from the quality model (0) to the diversity model (1), G variations, and
optionally the same prompt through the CFG teacher. Every variation gets an audio player and a
log-mel spectrogram; a table shows each system's sampling time (seconds and frames/s, with the
model rows per sample, 1 without CFG and 2 with it) and the batch's diversity.

The page holds no module-level state: :func:`build_demo` closes over one
:class:`musicdistill.demo.engine.DemoEngine`. Audio and images are returned as numpy arrays, so
this code writes no files; Gradio caches what it serves in its temp folder, which the Blocks'
``delete_cache`` setting empties of files older than an hour. Bad input shows a warning and a
message in the page; nothing a user types reaches a file path.

API (``gradio_client``): ``/generate`` (the Generate button and Enter in the prompt box; one
endpoint) and ``/prepare`` (the λ slider's merge); every output is labelled (``message``,
``timings and diversity``, ``student variation 1``, ...). ``/generate_files`` takes the same
inputs and returns two values for programs: the WAV files (student first, then the teacher) and a
JSON read-out (the request, each system's timings, cost and diversity, and which file is which);
a bad request raises an error with the reason. Loading an example prompt is page-only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from musicdistill.demo.engine import DemoEngine, DemoResult, SystemOutput
from musicdistill.demo.requests import DemoInputError, validate_request
from musicdistill.dsp.features import log_mel

log = logging.getLogger(__name__)

#: audio/image slots per system; unused ones are hidden
MAX_SLOTS = 8
#: captions in the style of the built-in synthesised data (musicdistill.data.synth)
EXAMPLE_PROMPTS = (
    "a fast square lead melody in E minor with rock drums",
    "a calm breathy flute melody in F major, no drums",
    "a deep bass riff at a slow tempo over a four-on-the-floor kick",
    "a bell-like synth line in A minor with a breakbeat, played low",
    "an energetic electric organ solo with house drums, in a major key",
)
#: (every seconds, older than seconds): how Gradio empties its cache of served audio and images
DELETE_CACHE = (600, 3600)
#: the page's public API endpoints (``gradio_client``: ``client.predict(..., api_name="/generate")``);
#: the example prompts' loader is private (page-only)
API_GENERATE = "generate"
API_PREPARE = "prepare"
API_FILES = "generate_files"
API_DESCRIPTIONS = {
    API_FILES: (
        "Generate as /generate does; returns the WAV files (student variations, then the teacher's) and a "
        "JSON read-out (request, timings, model rows per sample, diversity, and each file's system)."
    ),
    API_GENERATE: (
        "Generate variations of a prompt with the student at the slider's value (λ of the merge, or w of "
        "a conditioned student) and optionally the CFG teacher; "
        "returns a message, the timings and diversity table, then for the student and then the teacher "
        f"{MAX_SLOTS} audio clips and {MAX_SLOTS} log-mel spectrograms (unused slots are empty)."
    ),
    API_PREPARE: (
        "Set the student to the slider's value ahead of the next request (λ: merge its weights; w: "
        "nothing to compute); returns a status line."
    ),
}

INTRO = """\
# Quality ↔ diversity: merged CFG-distilled students
Both endpoints were distilled from the same CFG teacher, so neither needs classifier-free guidance
(one model row per sample instead of two). **λ = 0** is the quality model (distilled with β = 0),
**λ = 1** the diversity model (distilled with a diversity reward); in between, their weights are
interpolated. Merged weights are computed when the slider moves and kept per slider step."""

INTRO_CONDITIONED = """\
# Quality ↔ diversity: one conditioned CFG-distilled student
One student was distilled from the CFG teacher with the diversity weight **w** as an input, so it needs
no classifier-free guidance (one model row per sample instead of two) and serves the whole range
with one set of weights: **w = 0** is its quality end, **w = 1** its diversity end (the reward
weighted by β = w · β_max in training). Moving the slider changes no weight; nothing is merged."""


def student_heading(symbol: str) -> str:
    """The heading over the student's clips: one conditioned model (``w``) or merged weights (``λ``)."""
    what = "one conditioned model at w" if symbol == "w" else "merged weights"
    return f"### Student: {what}, no CFG"


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def spectrogram_image(wav: np.ndarray, sample_rate: int, title: str = "") -> np.ndarray:
    """A log-mel spectrogram picture of a mono clip ``wav [samples]`` -> RGB ``uint8 [H, W, 3]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fmax = min(8000.0, sample_rate / 2)
    mel = log_mel(
        torch.as_tensor(wav, dtype=torch.float32)[None],
        sample_rate,
        n_fft=1024,
        hop_length=max(1, sample_rate // 100),
        n_mels=80,
        fmin=30.0,
        fmax=fmax,
    )[0]
    decibels = (10.0 / math.log(10.0)) * mel.numpy()  # natural log of power -> dB
    fig = Figure(figsize=(4.2, 1.7), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.24, 0.88, 0.64))
    seconds = len(wav) / sample_rate
    ax.imshow(
        decibels,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, seconds, 0, decibels.shape[0]),
        vmin=decibels.max() - 80.0,
        vmax=decibels.max(),
    )
    ax.set_xlabel("seconds", fontsize=7)
    ax.set_ylabel("mel band", fontsize=7)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_readout(result: DemoResult) -> str:
    """A Markdown table: per system its weights, CFG, rows per sample, times, frames/s and diversity."""
    request = result.request
    lines = [
        "| system | weights | model rows / sample | sampling (s) | frames/s | decoding (s) | diversity |",
        "|---|---|---|---|---|---|---|",
    ]
    for out in result.systems:
        lines.append(
            f"| {out.name} | {out.description} | {out.rows_per_sample} | {out.sampling_seconds:.3f} | "
            f"{out.frames_per_second:.1f} | {out.decode_seconds:.3f} | {_fmt(out.diversity)} |"
        )
    notes = [
        f"{request.num_variations} variation(s) × {result.systems[0].num_frames} frames of "
        f"“{request.prompt}”, seed {request.seed}, temperature {request.temperature:g}.",
        f"Diversity: mean pairwise 1 − cos between the variations' embeddings ({result.embedding}); "
        "it needs at least 2 variations.",
    ]
    if len(result.systems) == 2:
        student, teacher = result.systems
        ratio = teacher.sampling_seconds / max(student.sampling_seconds, 1e-9)
        notes.append(
            f"CFG cost: model rows per sample 1 vs 2; the teacher's sampling took {ratio:.2f}× the "
            "student's time."
        )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


# --------------------------------------------------------------------------------------------
# The request handler
# --------------------------------------------------------------------------------------------


def _slot_updates(out: SystemOutput | None) -> list[dict[str, Any]]:
    """``MAX_SLOTS`` audio updates then ``MAX_SLOTS`` image updates for one system (None hides all)."""
    import gradio as gr

    count = 0 if out is None else out.audio.shape[0]
    audio = [gr.update(value=(out.sample_rate, _pcm16(out.audio[i])), visible=True) for i in range(count)]
    images = [
        gr.update(
            value=spectrogram_image(out.audio[i], out.sample_rate, f"{out.name}, variation {i + 1}"),
            visible=True,
        )
        for i in range(count)
    ]

    def hidden() -> list[dict[str, Any]]:
        return [gr.update(value=None, visible=False) for _ in range(MAX_SLOTS - count)]

    return audio + hidden() + images + hidden()


def num_outputs() -> int:
    """Outputs of the handler: message, read-out, teacher column, then 2 × MAX_SLOTS slots per system."""
    return 3 + 4 * MAX_SLOTS


def make_handler(engine: DemoEngine) -> Callable[..., list[Any]]:
    """The Generate button's function: widget values in, :func:`num_outputs` updates out.

    Invalid input leaves the previous results in place and shows the reason (``gr.Warning`` and the
    message box); an unexpected failure is logged with its traceback and reported the same way.
    """

    def handle(
        prompt, lam, num_variations, duration, seed, temperature, compare_teacher, cfg_scale
    ) -> list[Any]:
        import gradio as gr

        try:
            result = engine.run(
                validate_request(
                    engine.limits,
                    prompt,
                    lam,
                    num_variations,
                    duration,
                    seed,
                    temperature,
                    compare_teacher,
                    cfg_scale,
                )
            )
        except DemoInputError as exc:
            return _failure(str(exc))
        except Exception as exc:  # the page must report any failure, not hang or crash
            log.exception("demo request failed")
            return _failure(f"Generation failed: {type(exc).__name__}: {exc}")
        teacher = result.systems[1] if len(result.systems) > 1 else None
        return [
            gr.update(value="", visible=False),
            gr.update(value=format_readout(result)),
            gr.update(visible=teacher is not None),
            *_slot_updates(result.systems[0]),
            *_slot_updates(teacher),
        ]

    return handle


def _failure(message: str) -> list[Any]:
    import gradio as gr

    gr.Warning(message)
    unchanged = [gr.update() for _ in range(num_outputs() - 1)]
    return [gr.update(value=f"**Cannot generate:** {message}", visible=True), *unchanged]


def make_prepare(engine: DemoEngine) -> Callable[[float], str]:
    """The slider's function: set the weights to λ ahead of the next request; returns a status line."""

    symbol = engine.dial.symbol

    def prepare(lam) -> str:
        try:
            seconds = engine.prepare(float(lam))
        except (TypeError, ValueError) as exc:
            return f"{symbol}={lam!r}: {exc}"
        if symbol == "w":
            return f"Diversity weight set: {engine.dial.describe()} (one model; no weights change)."
        return f"Weights set to λ = {engine.loaded_lam:g} ({seconds:.2f} s)."

    return prepare


def readout_record(result: DemoResult, files: list[list[str]]) -> dict[str, Any]:
    """The JSON read-out of ``/generate_files``: the request and each system's figures and files."""
    request = result.request
    return {
        "request": {
            "prompt": request.prompt,
            "lam": request.lam,
            "num_variations": request.num_variations,
            "duration": request.duration,
            "seed": request.seed,
            "temperature": request.temperature,
            "compare_teacher": request.compare_teacher,
            "cfg_scale": request.cfg_scale,
        },
        "embedding": result.embedding,
        "systems": [
            {
                "name": out.name,
                "description": out.description,
                "rows_per_sample": out.rows_per_sample,
                "sampling_seconds": round(out.sampling_seconds, 4),
                "decode_seconds": round(out.decode_seconds, 4),
                "frames_per_second": round(out.frames_per_second, 1),
                "diversity": out.diversity,
                "sample_rate": out.sample_rate,
                "files": [name.rsplit("/", 1)[-1] for name in names],
            }
            for out, names in zip(result.systems, files)
        ],
    }


def make_files_handler(engine: DemoEngine, folder: str) -> Callable[..., tuple[list[str], dict[str, Any]]]:
    """The ``/generate_files`` function: widget values in, (WAV paths under ``folder``, read-out) out."""

    def handle_files(
        prompt, lam, num_variations, duration, seed, temperature, compare_teacher, cfg_scale
    ) -> tuple[list[str], dict[str, Any]]:
        import tempfile

        import gradio as gr
        import soundfile as sf

        try:
            result = engine.run(
                validate_request(
                    engine.limits,
                    prompt,
                    lam,
                    num_variations,
                    duration,
                    seed,
                    temperature,
                    compare_teacher,
                    cfg_scale,
                )
            )
        except DemoInputError as exc:
            raise gr.Error(str(exc)) from None
        batch = tempfile.mkdtemp(prefix="request-", dir=folder)
        files: list[list[str]] = []
        for out in result.systems:
            names = []
            for i, clip in enumerate(out.audio):
                path = f"{batch}/{out.name.replace(' ', '_')}_{i + 1}.wav"
                sf.write(path, _pcm16(clip), out.sample_rate, subtype="PCM_16")
                names.append(path)
            files.append(names)
        return [p for names in files for p in names], readout_record(result, files)

    return handle_files


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def _system_slots(prefix: str) -> tuple[list[Any], list[Any]]:
    """``MAX_SLOTS`` audio players and spectrogram images, labelled ``<prefix> variation <i>`` (page and API)."""
    import gradio as gr

    audio, images = [], []
    for i in range(MAX_SLOTS):
        audio.append(
            gr.Audio(
                label=f"{prefix} variation {i + 1}",
                type="numpy",
                format="wav",
                interactive=False,
                visible=False,
                elem_id=f"{prefix}-audio-{i}",
            )
        )
        images.append(
            gr.Image(
                label=f"{prefix} variation {i + 1} log-mel spectrogram",
                type="numpy",
                format="png",
                interactive=False,
                visible=False,
                show_label=False,
                elem_id=f"{prefix}-spec-{i}",
            )
        )
    return audio, images


def build_demo(
    engine: DemoEngine, max_concurrency: int = 1, queue_size: int = 16, lam_step: float = 0.1
) -> Any:
    """The demo page (a ``gr.Blocks``) serving ``engine``, with its request queue configured.

    ``max_concurrency`` requests run at once (model work itself is serialised by the engine) and
    up to ``queue_size`` wait; ``lam_step`` is the slider's step (one cache entry per step).
    """
    import gradio as gr

    if (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or not 1 <= max_concurrency <= 64
    ):
        raise ValueError(f"max_concurrency={max_concurrency!r} must be an integer in [1, 64]")
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or not 1 <= queue_size <= 10_000:
        raise ValueError(f"queue_size={queue_size!r} must be an integer in [1, 10000]")
    if not 0.0 < lam_step <= 1.0:
        raise ValueError(f"lam_step={lam_step!r} must lie in (0, 1] (e.g. 0.1 or 0.25)")
    limits = engine.limits
    has_teacher = engine.teacher is not None
    with gr.Blocks(
        title="musicdistill: quality ↔ diversity", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as demo:
        gr.Markdown(INTRO_CONDITIONED if engine.dial.symbol == "w" else INTRO)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=2,
                    max_lines=4,
                    elem_id="prompt",
                    placeholder=EXAMPLE_PROMPTS[0],
                    info=f"Describe the music (at most {limits.max_prompt_chars} characters).",
                )
                gr.Examples(
                    examples=[[p] for p in EXAMPLE_PROMPTS],
                    inputs=[prompt],
                    label="Example prompts",
                    api_visibility="private",
                )
                lam = gr.Slider(
                    0.0,
                    1.0,
                    value=0.5,
                    step=lam_step,
                    label=f"{engine.dial.symbol}: quality (0) ↔ diversity (1)",
                    elem_id="lam",
                )
                weights = gr.Markdown(label="merge status", elem_id="weights")
                with gr.Row():
                    variations = gr.Slider(
                        1, limits.max_variations, value=4, step=1, label="Variations", elem_id="variations"
                    )
                    duration = gr.Slider(
                        limits.min_duration,
                        limits.max_duration,
                        value=engine.default_duration,
                        step=0.1,
                        label="Duration (s)",
                        elem_id="duration",
                    )
                with gr.Row():
                    seed = gr.Number(
                        value=0, precision=0, minimum=0, maximum=limits.max_seed, label="Seed", elem_id="seed"
                    )
                    temperature = gr.Slider(
                        0.0,
                        limits.max_temperature,
                        value=1.0,
                        step=0.05,
                        label="Temperature (0 = greedy)",
                        elem_id="temperature",
                    )
                with gr.Row():
                    compare = gr.Checkbox(
                        value=False,
                        interactive=has_teacher,
                        elem_id="compare",
                        label="Compare with the CFG teacher"
                        if has_teacher
                        else "Compare with the CFG teacher (start with --teacher to enable)",
                    )
                    cfg_scale = gr.Number(
                        value=3.0,
                        minimum=0.0,
                        maximum=limits.max_cfg_scale,
                        label="Teacher CFG scale",
                        interactive=has_teacher,
                        elem_id="cfg-scale",
                    )
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                message = gr.Markdown(label="message", visible=False, elem_id="message")
            with gr.Column(scale=3, min_width=400):
                readout = gr.Markdown(
                    "Generate to see timings and diversity here.",
                    label="timings and diversity",
                    elem_id="readout",
                )
                with gr.Row():
                    with gr.Column():
                        gr.Markdown(student_heading(engine.dial.symbol))
                        student_audio, student_images = _system_slots("student")
                    with gr.Column(visible=False) as teacher_column:
                        gr.Markdown("### CFG teacher (base model)")
                        teacher_audio, teacher_images = _system_slots("teacher")
        inputs = [prompt, lam, variations, duration, seed, temperature, compare, cfg_scale]
        outputs = [
            message,
            readout,
            teacher_column,
            *student_audio,
            *student_images,
            *teacher_audio,
            *teacher_images,
        ]
        handle, prepare = make_handler(engine), make_prepare(engine)
        files_out = gr.File(file_count="multiple", label="files", visible=False)
        readout_out = gr.JSON(label="read-out", visible=False)
        files_trigger = gr.Button(visible=False)
        files_trigger.click(
            make_files_handler(engine, _files_folder()),
            inputs=inputs,
            outputs=[files_out, readout_out],
            api_name=API_FILES,
            api_description=API_DESCRIPTIONS[API_FILES],
            concurrency_id="model",
        )
        lam.change(
            prepare,
            inputs=[lam],
            outputs=[weights],
            api_name=API_PREPARE,
            api_description=API_DESCRIPTIONS[API_PREPARE],
            concurrency_id="model",
            trigger_mode="always_last",
            show_progress="hidden",
        )
        gr.on(
            [button.click, prompt.submit],  # one endpoint for both ways of asking
            handle,
            inputs=inputs,
            outputs=outputs,
            api_name=API_GENERATE,
            api_description=API_DESCRIPTIONS[API_GENERATE],
            concurrency_id="model",
        )
    demo.queue(default_concurrency_limit=max_concurrency, max_size=queue_size)
    return demo


def _files_folder() -> str:
    """A folder for ``/generate_files``' WAV files (Gradio copies them into its cache, which
    ``DELETE_CACHE`` empties), removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="musicdistill-demo-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def launch_demo(
    engine: DemoEngine,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_concurrency: int = 1,
    queue_size: int = 16,
    lam_step: float = 0.1,
) -> None:
    """Serve the demo until interrupted (binds ``host``; 127.0.0.1 keeps it on this machine)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port {port!r} must be an integer in [1, 65535]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: anyone who can reach this address can use the demo", host)
    demo = build_demo(engine, max_concurrency, queue_size, lam_step)
    spectrogram_image(
        np.zeros(1600, dtype=np.float32), 16000
    )  # load matplotlib now, not on the first request
    demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, show_error=False, footer_links=[]
    )
