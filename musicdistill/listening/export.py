"""Listening-test export: systems x prompts -> anonymised, loudness-matched stimuli, key, rating page.

Layout of an export folder::

    key.csv          the hidden mapping: stimulus id -> system, prompt, sample, seed, settings, levels
    export.json      provenance: resolved settings, checkpoints and their hashes, counts, test id
    webmushra.yaml   the same test as a webMUSHRA config (copy raters/audio/* to the path it names)
    raters/          the folder handed to raters (nothing in it names a system)
        index.html   the rating page; works from disk, no server
        README.txt   what to do
        audio/<id>.wav

Stimuli are resampled to one rate, cropped to one length, faded in and out (10 ms), normalised to
``listening.loudness_lufs`` (ITU-R BS.1770-4 integrated loudness, see :mod:`musicdistill.dsp.loudness`)
and kept under ``listening.peak_dbfs`` by a look-ahead limiter, then written as bare 16-bit PCM WAV
(RIFF ``fmt`` and ``data`` chunks only: no metadata). Audio comes from a ``render(system, prompts,
num_samples, seed) -> Clips`` callable; :func:`generator_renderer` is the real one, backed by the
generator checkpoints and :func:`musicdistill.generation.sampling.generate`.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import logging
import math
import os
import random
import shutil
import wave
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from musicdistill import __version__
from musicdistill.codec.factory import load_codec
from musicdistill.config import Config, ListeningConfig, config_to_dict
from musicdistill.data.audio_io import resample
from musicdistill.dsp.loudness import Levels, fade, normalize_loudness
from musicdistill.evaluation.systems import SystemSpec, parse_systems
from musicdistill.generation.sampling import generate
from musicdistill.listening.page import render_page
from musicdistill.listening.vocabulary import (
    DIVERSITY_QUESTION,
    KEY_COLUMNS,
    QUALITY_QUESTIONS,
    TRIAL_DIVERSITY,
    TRIAL_QUALITY,
    TRIAL_REPEAT,
    derived_seed,
)
from musicdistill.model.loading import load_generator
from musicdistill.progress import track
from musicdistill.runtime import resolve_device
from musicdistill.storage.atomic import atomic_write_text
from musicdistill.storage.checkpoint import file_sha256

log = logging.getLogger(__name__)

RATERS_DIR = "raters"
AUDIO_DIR = "audio"
KEY_FILE = "key.csv"
EXPORT_JSON = "export.json"
WEBMUSHRA_FILE = "webmushra.yaml"


def read_prompts(cfg: ListeningConfig) -> list[str]:
    """``listening.prompts`` followed by the non-blank lines of ``listening.prompts_file``."""
    prompts = []
    for i, p in enumerate(cfg.prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"listening.prompts[{i}]={p!r} must be a non-empty string")
        prompts.append(p.strip())
    if cfg.prompts_file:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"listening.prompts_file={cfg.prompts_file!r} does not exist; give a text file "
                "with one prompt per line"
            )
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompts: set listening.prompts (a list) or listening.prompts_file")
    duplicates = sorted({p for p in prompts if prompts.count(p) > 1})
    if duplicates:
        raise ValueError(f"listening prompts repeat {duplicates[:3]}; every prompt must be unique")
    return prompts


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio in [-1, 1] -> the bytes of a bare 16-bit PCM WAV (``fmt`` and ``data`` chunks only)."""
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.tobytes())
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass
class Clips:
    """Rendered audio: ``audio [B·G, N]`` float32 mono (prompt-major rows) at ``sample_rate`` Hz."""

    audio: np.ndarray
    sample_rate: int


Renderer = Callable[[SystemSpec, list[str], int, int], Clips]


def _load_system(system: SystemSpec, device: Any):
    """(generator, text encoder, codec) of a system: its checkpoint, and its ``codec`` setting or the
    codec the checkpoint records."""
    model, encoder, codec, _ = load_generator(system.checkpoint, device, with_codec=not system.codec)
    if system.codec:
        if not Path(system.codec).is_dir():
            raise FileNotFoundError(
                f"{system.where}.codec={system.codec!r} is not a folder; give a codec folder "
                "written by 'musicdistill codec fit' (or the run's codec/)"
            )
        codec = load_codec(system.codec)
        if (codec.num_codebooks, codec.cardinality) != (model.num_codebooks, model.cardinality):
            raise ValueError(
                f"{system.where}.codec={system.codec!r} has {codec.num_codebooks} codebooks of "
                f"{codec.cardinality} entries; the checkpoint expects {model.num_codebooks} of "
                f"{model.cardinality}"
            )
    if codec is None:
        raise ValueError(
            f"{system.where} ({system.name}): checkpoint {system.checkpoint} records no codec; set "
            f"{system.where}.codec to the run's codec folder"
        )
    return model, encoder, codec


def generator_renderer(duration: float, device: Any = "cpu", batch_size: int | None = None) -> Renderer:
    """The renderer the CLI uses: open each system's checkpoint with :func:`musicdistill.model.loading.load_generator`
    and sample with :func:`musicdistill.generation.sampling.generate` under the system's settings."""

    def render(system: SystemSpec, prompts: list[str], num_samples: int, seed: int) -> Clips:
        model, encoder, codec = _load_system(system, device)
        try:
            result = generate(
                model,
                prompts,
                num_samples,
                duration,
                system.temperature,
                system.top_k,
                system.top_p,
                system.cfg_scale,
                seed,
                codec,
                text_encoder=encoder,
                batch_size=batch_size,
            )
        except ValueError as exc:
            raise ValueError(f"{system.where} ({system.name}): {exc}") from None
        return Clips(result.audio[:, 0].numpy(), int(codec.sample_rate))

    return render


# --------------------------------------------------------------------------------------------
# Stimuli, trials and the files of an export
# --------------------------------------------------------------------------------------------


@dataclass
class Stimulus:
    """One exported clip and everything the key records about it."""

    id: str
    system: SystemSpec
    prompt_index: int
    prompt: str
    sample_index: int
    seed: int
    levels: Levels | None = None
    attention_check: bool = False


@dataclass
class ExportResult:
    """Where an export went and what it holds."""

    out: Path
    raters_dir: Path
    key_path: Path
    test_id: str
    num_stimuli: int
    trials: list[dict[str, Any]] = field(default_factory=list)


def make_test_id(cfg: ListeningConfig, systems: list[SystemSpec], prompts: list[str]) -> str:
    """A short id of the test's design (settings, systems, prompts), written into the page and every CSV row."""
    blob = json.dumps(
        {
            "listening": config_to_dict(cfg),
            "systems": [asdict(s) for s in systems],
            "prompts": prompts,
            "version": 1,
        },
        sort_keys=True,
    )
    return "t" + hashlib.sha256(blob.encode()).hexdigest()[:11]


def stimulus_ids(count: int, seed: int) -> list[str]:
    """``count`` distinct random ids (10 hex digits) from ``seed``."""
    rng = random.Random(seed)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        new = f"{rng.getrandbits(40):010x}"
        if new not in seen:
            seen.add(new)
            ids.append(new)
    return ids


def build_trials(stimuli: list[Stimulus], cfg: ListeningConfig, test_id: str) -> list[dict[str, Any]]:
    """Quality trials (one per stimulus, plus the attention-check repeats) and diversity pairs.

    Trials name stimuli by id and carry the prompt (quality trials only); nothing names a system.
    """
    rng = random.Random(derived_seed(cfg.seed, "trials", test_id))
    trials: list[dict[str, Any]] = [
        {"type": TRIAL_QUALITY, "stimuli": [s.id], "prompt": s.prompt} for s in stimuli
    ]
    for original in sorted(rng.sample(range(len(stimuli)), min(cfg.attention_checks, len(stimuli)))):
        stimuli[original].attention_check = True
        trials.append(
            {
                "type": TRIAL_REPEAT,
                "stimuli": [stimuli[original].id],
                "prompt": stimuli[original].prompt,
                "repeat_of": original,
            }
        )
    groups: dict[tuple[int, int], list[Stimulus]] = {}
    for s in stimuli:
        groups.setdefault((s.system.index, s.prompt_index), []).append(s)
    for members in groups.values():
        pairs = list(combinations(members, 2))
        for a, b in rng.sample(pairs, min(cfg.diversity_pairs, len(pairs))):
            first, second = (a, b) if rng.random() < 0.5 else (b, a)
            trials.append({"type": TRIAL_DIVERSITY, "stimuli": [first.id, second.id], "prompt": ""})
    return trials


def prepare_audio(clips: list[tuple[np.ndarray, int]], cfg: ListeningConfig) -> tuple[list[np.ndarray], int]:
    """Bring every clip to one sample rate and length (the shortest), with fades. -> (clips [N], rate)."""
    rate = cfg.sample_rate or max(r for _, r in clips)
    same_rate = [resample(np.asarray(a, dtype=np.float32), r, rate) for a, r in clips]
    length = min(len(a) for a in same_rate)
    if max(len(a) for a in same_rate) - length > 0.05 * rate:
        log.info("stimuli cropped to the shortest clip, %.2f s", length / rate)
    return [fade(a[:length], rate) for a in same_rate], rate


def _key_rows(stimuli: list[Stimulus], test_id: str, duration: float, rate: int) -> list[dict[str, Any]]:
    rows = []
    for s in stimuli:
        lv = s.levels
        rows.append(
            {
                "test_id": test_id,
                "stimulus_id": s.id,
                "system": s.system.name,
                "checkpoint": s.system.checkpoint,
                "prompt_index": s.prompt_index,
                "prompt": s.prompt,
                "sample_index": s.sample_index,
                "seed": s.seed,
                **s.system.settings(),
                "duration_s": round(duration, 4),
                "sample_rate": rate,
                "input_lufs": round(lv.input_lufs, 2),
                "gain_db": round(lv.gain_db, 2),
                "output_lufs": round(lv.output_lufs, 2),
                "peak_dbfs": round(lv.peak_dbfs, 2),
                "attention_check": int(s.attention_check),
            }
        )
    return rows


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def page_data(cfg: ListeningConfig, test_id: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the rating page needs (and nothing that names a system)."""
    return {
        "test_id": test_id,
        "title": cfg.title,
        "order_seed": derived_seed(cfg.seed, "order", test_id),
        "require_playback": cfg.require_playback,
        "audio_dir": AUDIO_DIR,
        "questions": {
            "quality": [q.to_json() for q in QUALITY_QUESTIONS],
            "diversity": [DIVERSITY_QUESTION.to_json()],
        },
        "trials": trials,
    }


def webmushra_config(cfg: ListeningConfig, test_id: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The test as a webMUSHRA config: randomised likert_single_stimulus pages, three 1-5 scales per clip.

    Diversity pairs are likert_single_stimulus pages too: clip A is the page's stimulus and clip B an
    audio element in its content; the page id ``d_<A>_<B>`` names both. Audio paths point at
    ``configs/resources/<test id>/``, where raters/audio/* is to be copied.
    """
    prefix = f"configs/resources/{test_id}"

    def scale(q) -> list[dict[str, str]]:
        return [{"value": str(v), "label": f"{v} {a}"} for v, a in enumerate(q.anchors, start=1)]

    quality_pages, diversity_pages = [], []
    for t in trials:
        if t["type"] == TRIAL_DIVERSITY:
            a, b = t["stimuli"]
            diversity_pages.append(
                {
                    "type": "likert_single_stimulus",
                    "id": f"d_{a}_{b}",
                    "name": "Compare two clips",
                    "content": (
                        f"<p>Listen to clip A (the player below) and clip B: "
                        f"<audio controls src='{prefix}/{b}.wav'></audio></p><p>{DIVERSITY_QUESTION.text}</p>"
                    ),
                    "mustPlayback": "ended",
                    "mustRate": True,
                    "stimuli": {a: f"{prefix}/{a}.wav"},
                    "response": scale(DIVERSITY_QUESTION),
                }
            )
            continue
        (sid,) = t["stimuli"]
        items = "".join(f"<li><b>{q.label}</b>: {q.text}</li>" for q in QUALITY_QUESTIONS)
        quality_pages.append(
            {
                "type": "likert_single_stimulus",
                "id": f"q_{sid}" + ("_repeat" if t["type"] == TRIAL_REPEAT else ""),
                "name": "Rate the clip",
                "content": f"<p>Description: <i>{html.escape(t['prompt'])}</i></p><p>Answer on the three scales, "
                f"in this order:</p><ol>{items}</ol>",
                "mustPlayback": "ended",
                "mustRate": True,
                "stimuli": {sid: f"{prefix}/{sid}.wav"},
                "response": [scale(q) for q in QUALITY_QUESTIONS],
            }
        )
    first = trials[0]["stimuli"][0]
    pages: list[Any] = [
        {
            "type": "generic",
            "id": "instructions",
            "name": "Instructions",
            "content": "<p>You will hear short pieces of music generated from text descriptions. Use headphones in "
            "a quiet room. Part 1: rate each clip. Part 2: rate how different two clips are.</p>",
        },
        {
            "type": "volume",
            "id": "volume",
            "name": "Volume",
            "content": "Set a comfortable volume.",
            "stimulus": f"{prefix}/{first}.wav",
            "defaultVolume": 0.5,
        },
        ["random", *quality_pages],
    ]
    if diversity_pages:
        pages += [
            {
                "type": "generic",
                "id": "part2",
                "name": "Part 2",
                "content": "<p>Each page now plays two clips made from the same description.</p>",
            },
            ["random", *diversity_pages],
        ]
    pages.append(
        {
            "type": "finish",
            "name": "Thank you",
            "content": "Thank you for taking part!",
            "showResults": False,
            "writeResults": True,
            "questionnaire": [{"type": "text", "label": "Rater ID", "name": "rater_id"}],
        }
    )
    return {
        "testname": cfg.title,
        "testId": test_id,
        "bufferSize": 2048,
        "stopOnErrors": True,
        "showButtonPreviousPage": False,
        "remoteService": "service/write.php",
        "pages": pages,
    }


README = """\
Listening test {test_id}

1. Open index.html in a web browser (Chrome, Firefox, Edge or Safari). No internet is needed.
2. Use headphones in a quiet room. Enter the rater ID you were given and follow the page.
3. At the end, click "Download my ratings" and send the downloaded CSV file to the experimenter.

Keep this folder together: the page plays the files in audio/.
"""


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(
            f"export folder {out} is not empty; choose another --out (listening.out) or pass "
            "--force to replace it"
        )


def _write_stimuli(
    audio_dir: Path, stimuli: list[Stimulus], clips: list[np.ndarray], rate: int, cfg: ListeningConfig
) -> None:
    """Normalise each clip (recording its levels on the stimulus) and write it as ``<id>.wav``."""
    audio_dir.mkdir(parents=True)
    for s, clip in zip(stimuli, track(clips, desc="normalising stimuli", unit="clip", leave=False)):
        normalised, s.levels = normalize_loudness(clip, rate, cfg.loudness_lufs, cfg.peak_dbfs)
        if not math.isfinite(s.levels.input_lufs):
            log.warning(
                "stimulus %s (%s, prompt %d, sample %d) is silent",
                s.id,
                s.system.name,
                s.prompt_index,
                s.sample_index,
            )
        (audio_dir / f"{s.id}.wav").write_bytes(wav_bytes(normalised, rate))


def _write_documents(
    folder: Path,
    cfg: ListeningConfig,
    test_id: str,
    stimuli: list[Stimulus],
    trials: list[dict[str, Any]],
    rate: int,
) -> None:
    """The rating page and README (in raters/), the webMUSHRA config and the key (beside raters/)."""
    raters = folder / RATERS_DIR
    (raters / "index.html").write_text(render_page(page_data(cfg, test_id, trials)), encoding="utf-8")
    (raters / "README.txt").write_text(README.format(test_id=test_id), encoding="utf-8")
    yaml_text = yaml.safe_dump(webmushra_config(cfg, test_id, trials), sort_keys=False, allow_unicode=True)
    (folder / WEBMUSHRA_FILE).write_text(
        f"# webMUSHRA config of listening test {test_id}: copy raters/audio/*.wav to "
        f"configs/resources/{test_id}/ in your webMUSHRA folder.\n" + yaml_text,
        encoding="utf-8",
    )
    key_rows = _key_rows(stimuli, test_id, cfg.duration, rate)
    (folder / KEY_FILE).write_text(_csv_text(KEY_COLUMNS, key_rows), encoding="utf-8")


def export_listening_test(
    cfg: ListeningConfig,
    systems: list[SystemSpec],
    prompts: list[str],
    render: Renderer,
    out: str | Path,
    force: bool = False,
    provenance: dict[str, Any] | None = None,
) -> ExportResult:
    """Render every system on every prompt and write the export folder (see the module docstring).

    The folder is built beside ``out`` and renamed into place at the end, so an interrupted export
    leaves nothing half-written. Raises ValueError if ``out`` is not empty (unless ``force``).
    """
    out = Path(out)
    _check_out(out, force)
    if cfg.diversity_pairs and cfg.samples_per_prompt < 2:
        raise ValueError(
            f"listening.diversity_pairs={cfg.diversity_pairs} needs listening.samples_per_prompt >= 2 "
            f"(got {cfg.samples_per_prompt}); set diversity_pairs=0 for a quality-only test"
        )
    pairs_available = math.comb(cfg.samples_per_prompt, 2)
    if cfg.diversity_pairs > pairs_available:
        raise ValueError(
            f"listening.diversity_pairs={cfg.diversity_pairs} exceeds the {pairs_available} pairs that "
            f"samples_per_prompt={cfg.samples_per_prompt} allows; lower it or raise samples_per_prompt"
        )
    test_id = make_test_id(cfg, systems, prompts)
    g = cfg.samples_per_prompt
    rendered: list[tuple[np.ndarray, int]] = []
    stimuli: list[Stimulus] = []
    for system in track(systems, desc="rendering systems", unit="system"):
        clips = render(system, prompts, g, cfg.seed)
        audio = np.asarray(clips.audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] != len(prompts) * g:
            raise ValueError(
                f"{system.where} ({system.name}): the renderer returned audio of shape {audio.shape}; "
                f"expected [{len(prompts) * g}, samples] (prompts x samples_per_prompt)"
            )
        for row in range(audio.shape[0]):
            rendered.append((audio[row], clips.sample_rate))
            stimuli.append(Stimulus("", system, row // g, prompts[row // g], row % g, cfg.seed))
    audio_list, rate = prepare_audio(rendered, cfg)
    for s, new_id in zip(stimuli, stimulus_ids(len(stimuli), derived_seed(cfg.seed, "ids", test_id))):
        s.id = new_id
    trials = build_trials(stimuli, cfg, test_id)

    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_stimuli(staging / RATERS_DIR / AUDIO_DIR, stimuli, audio_list, rate, cfg)
        _write_documents(staging, cfg, test_id, stimuli, trials, rate)
        counts = Counter(t["type"] for t in trials)
        record = {
            "test_id": test_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "musicdistill": __version__,
            "listening": config_to_dict(cfg),
            "prompts": prompts,
            "systems": [asdict(s) for s in systems],
            "sample_rate": rate,
            "num_stimuli": len(stimuli),
            "num_trials": {kind: counts[kind] for kind in (TRIAL_QUALITY, TRIAL_REPEAT, TRIAL_DIVERSITY)},
            **(provenance or {}),
        }
        atomic_write_text(staging / EXPORT_JSON, json.dumps(record, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "listening test %s: %d stimuli, %d trials -> %s (hand out %s; keep %s)",
        test_id,
        len(stimuli),
        len(trials),
        out,
        out / RATERS_DIR,
        out / KEY_FILE,
    )
    return ExportResult(out, out / RATERS_DIR, out / KEY_FILE, test_id, len(stimuli), trials)


def run_export(cfg: Config, out: str | Path | None = None, force: bool = False) -> ExportResult:
    """``musicdistill listening export``: the config's systems, rendered by their checkpoints."""
    lc = cfg.listening
    systems = parse_systems(lc.systems, cfg.generate)
    prompts = read_prompts(lc)
    for s in systems:
        if not (Path(s.checkpoint) / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"{s.where}.checkpoint={s.checkpoint!r} is not a checkpoint folder (no "
                "model.safetensors); give a folder written by musicdistill"
            )
    target = Path(out or lc.out or cfg.run_dir / "listening")
    _check_out(target, force)
    hashes = {s.name: file_sha256(Path(s.checkpoint) / "model.safetensors") for s in systems}
    render = generator_renderer(lc.duration, resolve_device(cfg.device), cfg.generate.batch_size)
    return export_listening_test(
        lc,
        systems,
        prompts,
        render,
        target,
        force=force,
        provenance={"checkpoint_sha256": hashes, "generate_batch_size": cfg.generate.batch_size},
    )
