"""The Codec interface: the mel RVQ codec, the EnCodec adapters, the factories, the CLI and the errors."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from musicdistill.cli import main
from musicdistill.codec.encodec_adapters import EncodecPackageCodec, HFEncodecCodec, import_encodec_package
from musicdistill.codec.factory import fit_codec, load_codec
from musicdistill.codec.interface import Codec, validate_codes
from musicdistill.codec.melrvq import MelCodecSettings, MelRVQCodec
from musicdistill.config import CodecConfig
from musicdistill.dsp.features import LOG_FLOOR, MelSpec, resample

SR = 16000
SETTINGS = MelCodecSettings(
    sample_rate=SR, n_fft=256, hop_length=160, n_mels=32, fmin=30.0, fmax=8000.0, griffin_lim_iters=4
)


def synth_clips(n: int, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """[n, samples]: harmonic notes changing every 0.125 s plus short noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    clips = []
    for _ in range(n):
        wav = np.zeros_like(t)
        for start in np.arange(0, seconds, 0.125):
            f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
            seg = (t >= start) & (t < start + 0.125)
            env = np.exp(-(t[seg] - start) * rng.uniform(5, 30))
            wav[seg] += sum(np.sin(2 * np.pi * f0 * h * t[seg]) / h for h in (1, 2, 3)) * env
            burst = seg & (t < start + 0.01)
            wav[burst] += rng.normal(0, 0.3, burst.sum())
        clips.append(0.5 * wav / np.abs(wav).max())
    return torch.tensor(np.stack(clips), dtype=torch.float32)


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return synth_clips(8)


@pytest.fixture(scope="module")
def codec(clips: torch.Tensor) -> MelRVQCodec:
    return MelRVQCodec.fit(
        clips, SETTINGS, num_codebooks=3, cardinality=16, iters=5, max_frames=10_000, seed=0
    )


# ---- the mel RVQ codec ------------------------------------------------------------------------


def test_properties_and_protocol(codec: MelRVQCodec) -> None:
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.num_codebooks, codec.cardinality) == (SR, 3, 16)
    assert codec.frame_rate == SR / 160


@pytest.mark.parametrize("num_samples", [16000, 15873, 1])
def test_roundtrip_shapes_and_lengths(codec: MelRVQCodec, clips: torch.Tensor, num_samples: int) -> None:
    wav = clips[:3, None, :num_samples]
    codes = codec.encode(wav, SR)
    frames = -(-num_samples // 160)
    assert codes.shape == (3, 3, frames) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    out = codec.decode(codes)
    assert out.shape == (3, 1, frames * 160) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert codec.decode_mel(codes).shape == (3, 32, frames)


def test_other_sample_rates_are_resampled(codec: MelRVQCodec, clips: torch.Tensor) -> None:
    native = codec.encode(clips[:2, None], SR)
    up = resample(clips[:2], SR, 44100)
    codes = codec.encode(up[:, None], 44100)
    assert codes.shape == native.shape
    assert (codes[:, 0] == native[:, 0]).float().mean() > 0.8


def test_fit_is_deterministic_per_seed(clips: torch.Tensor, codec: MelRVQCodec) -> None:
    again = MelRVQCodec.fit(
        clips, SETTINGS, num_codebooks=3, cardinality=16, iters=5, max_frames=10_000, seed=0
    )
    other = MelRVQCodec.fit(
        clips, SETTINGS, num_codebooks=3, cardinality=16, iters=5, max_frames=10_000, seed=1
    )
    assert torch.equal(again.centroids, codec.centroids)
    assert torch.equal(again.mean, codec.mean) and torch.equal(again.scale, codec.scale)
    assert not torch.equal(other.centroids, codec.centroids)


def test_encode_and_decode_are_deterministic(codec: MelRVQCodec, clips: torch.Tensor) -> None:
    wav = clips[:2, None]
    codes = codec.encode(wav, SR)
    assert torch.equal(codes, codec.encode(wav, SR))
    assert torch.equal(codec.decode(codes), codec.decode(codes))


def test_more_codebooks_reconstruct_better(clips: torch.Tensor, codec: MelRVQCodec) -> None:
    target = codec.standardise(codec.mel(clips).transpose(1, 2))  # [N, T, D] in coded units
    errors = []
    for k in (1, 2, 3):
        prefix = MelRVQCodec(SETTINGS, codec.mean, codec.scale, codec.centroids[:k])
        codes = prefix.encode(clips[:, None], SR)
        rebuilt = sum(prefix.centroids[i][codes[:, i]] for i in range(k))
        errors.append((rebuilt - target).pow(2).mean().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * target.var().item()


def test_decode_mel_is_the_destandardised_centroid_sum(codec: MelRVQCodec) -> None:
    codes = torch.tensor([[[1, 2], [3, 4], [5, 6]]])
    mel = codec.decode_mel(codes)
    c = codec.centroids
    compressed = ((c[0, 1] + c[1, 3] + c[2, 5]) * codec.scale + codec.mean).clamp_min(LOG_FLOOR**0.25)
    assert torch.allclose(mel[0, :, 0], compressed.log() / 0.25, atol=1e-4)
    assert torch.allclose(codec.unstandardise(codec.standardise(mel[0].T)), mel[0].T, atol=1e-4)


def test_decode_keeps_the_spectral_envelope(codec: MelRVQCodec, clips: torch.Tensor) -> None:
    codes = codec.encode(clips[:4, None], SR)
    heard = codec.mel(codec.decode(codes))
    wanted = codec.decode_mel(codes)
    corr = torch.corrcoef(torch.stack([heard.flatten(), wanted.flatten()]))[0, 1]
    assert corr > 0.8


def test_save_load_identity(codec: MelRVQCodec, clips: torch.Tensor, tmp_path) -> None:
    codec.save(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "codec.json").read_text())
    assert meta["kind"] == "melrvq" and meta["num_codebooks"] == 3 and meta["settings"]["n_mels"] == 32
    loaded = load_codec(tmp_path / "c")
    assert isinstance(loaded, MelRVQCodec)
    wav = clips[:2, None]
    codes = codec.encode(wav, SR)
    assert torch.equal(loaded.encode(wav, SR), codes)
    assert torch.equal(loaded.decode(codes), codec.decode(codes))


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.full((1, 3, 5), 16), "16 at"),
        (torch.full((1, 3, 5), -1), "-1 at"),
        (torch.zeros(1, 3, 5, dtype=torch.float32), "dtype"),
        (torch.zeros(1, 2, 5, dtype=torch.long), r"\(1, 2, 5\)"),
        (torch.zeros(3, 5, dtype=torch.long), r"\(3, 5\)"),
    ],
)
def test_bad_codes_raise(codec: MelRVQCodec, codes: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.decode(codes)
    with pytest.raises(ValueError, match=message):
        codec.decode_mel(codes)


def test_bad_code_position_is_named() -> None:
    codes = torch.zeros(2, 4, 10, dtype=torch.long)
    codes[1, 2, 7] = 300
    with pytest.raises(ValueError, match=r"300 at \[batch 1, codebook 2, frame 7\]"):
        validate_codes(codes, 4, 256)


@pytest.mark.parametrize("shape", [(2, 2, 100), (100,), (2, 100)])
def test_bad_wav_shape_raises(codec: MelRVQCodec, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[B, 1, N\]"):
        codec.encode(torch.zeros(shape), SR)


def test_bad_sample_rate_raises(codec: MelRVQCodec) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        codec.encode(torch.zeros(1, 1, 100), 0)


def test_missing_directory_and_files(codec: MelRVQCodec, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_codec(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="codec.json"):
        load_codec(tmp_path / "empty")
    codec.save(tmp_path / "c")
    (tmp_path / "c" / "codec.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="codec.safetensors"):
        load_codec(tmp_path / "c")


def test_mismatched_files(codec: MelRVQCodec, clips: torch.Tensor, tmp_path) -> None:
    codec.save(tmp_path / "a")
    other = MelRVQCodec.fit(
        clips, SETTINGS, num_codebooks=3, cardinality=16, iters=2, max_frames=10_000, seed=5
    )
    other.save(tmp_path / "b")
    (tmp_path / "a" / "codec.safetensors").write_bytes((tmp_path / "b" / "codec.safetensors").read_bytes())
    with pytest.raises(ValueError, match="codec.safetensors does not match .*codec.json"):
        load_codec(tmp_path / "a")


def test_wrong_tensor_shapes_are_named(codec: MelRVQCodec, tmp_path) -> None:
    codec.save(tmp_path / "c")
    tensors = load_file(str(tmp_path / "c" / "codec.safetensors"))
    tensors["centroids"] = tensors["centroids"][:2]
    save_file(tensors, str(tmp_path / "c" / "codec.safetensors"))
    meta = json.loads((tmp_path / "c" / "codec.json").read_text())
    from musicdistill.storage.checkpoint import file_sha256

    meta["tensors"]["sha256"] = file_sha256(tmp_path / "c" / "codec.safetensors")
    (tmp_path / "c" / "codec.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"centroids have shape \(2, 16, 32\)"):
        load_codec(tmp_path / "c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a musicdistill codec"),
        ('{"format": "musicdistill-codec", "version": 1, "kind": "mp3"}', "unknown codec kind"),
    ],
)
def test_bad_codec_json(tmp_path, text: str, message: str) -> None:
    (tmp_path / "codec.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_codec(tmp_path)


def test_fit_rejects_bad_audio() -> None:
    with pytest.raises(ValueError, match="audio must be"):
        MelRVQCodec.fit(torch.zeros(16000), SETTINGS)
    with pytest.raises(ValueError, match="cardinality=64"):
        MelRVQCodec.fit(torch.zeros(1, 1600), SETTINGS, cardinality=64)


# ---- features -------------------------------------------------------------------------------------


def test_log_mel_framing_and_peak() -> None:
    mel = MelSpec(SR, n_fft=512, hop_length=160, n_mels=40, fmin=30.0, fmax=8000.0)
    sine = torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / SR)[None]
    out = mel(sine)
    assert out.shape == (1, 40, 100)
    assert mel.power(sine)[0, :, 50].max() == pytest.approx(0.25, rel=0.05)
    assert mel.filters[:, :].argmax(0)[int(1000 / SR * 512)] == out[0, :, 50].argmax()


def test_resample_keeps_a_tone() -> None:
    t = torch.arange(44100) / 44100
    y = resample(torch.sin(2 * torch.pi * 440 * t), 44100, 16000)
    assert y.shape == (16000,)
    ref = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)
    assert (y - ref)[200:-200].abs().max() < 1e-2


# ---- transformers EnCodec -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encodec_dir(tmp_path_factory):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(
        sampling_rate=24000,
        hidden_size=32,
        num_filters=8,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 2],
        codebook_size=64,
        codebook_dim=32,
        target_bandwidths=[1.8, 3.6],
        num_lstm_layers=1,
    )
    path = tmp_path_factory.mktemp("encodec")
    EncodecModel(config).save_pretrained(path)
    return path


def test_hf_encodec_adapter(tiny_encodec_dir, clips: torch.Tensor, tmp_path) -> None:
    codec = HFEncodecCodec.from_pretrained(str(tiny_encodec_dir), num_codebooks=4)
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.cardinality) == (
        24000,
        75.0,
        4,
        64,
    )
    codes = codec.encode(clips[:2, None], SR)  # 1 s at 16 kHz, resampled to 24 kHz
    assert codes.shape == (2, 4, 75) and codes.dtype == torch.int64
    out = codec.decode(codes)
    assert out.shape == (2, 1, 75 * 320) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="cardinality 64"):
        codec.decode(torch.full((1, 4, 3), 64))
    codec.save(tmp_path / "c")
    loaded = load_codec(tmp_path / "c")
    assert isinstance(loaded, HFEncodecCodec) and loaded.num_codebooks == 4
    assert torch.equal(loaded.encode(clips[:2, None], SR), codes)


def test_hf_encodec_bandwidth_choice(tiny_encodec_dir) -> None:
    assert HFEncodecCodec.from_pretrained(str(tiny_encodec_dir), num_codebooks=8).num_codebooks == 8
    assert HFEncodecCodec.from_pretrained(str(tiny_encodec_dir)).num_codebooks == 4
    with pytest.raises(ValueError, match=r"num_codebooks=3 .* 4 \(at 1.8 kbps\), 8 \(at 3.6 kbps\)"):
        HFEncodecCodec.from_pretrained(str(tiny_encodec_dir), num_codebooks=3)


def test_hf_encodec_through_fit_codec(tiny_encodec_dir) -> None:
    codec = fit_codec(
        CodecConfig(kind="encodec_hf", pretrained=str(tiny_encodec_dir), num_codebooks=4), None, SR
    )
    assert isinstance(codec, HFEncodecCodec)


def test_hf_encodec_missing_model(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFEncodecCodec.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="local directory"):
        HFEncodecCodec.from_pretrained("facebook/encodec_32khz")


# ---- the encodec package (optional extra) ---------------------------------------------------------


def test_encodec_package_missing_says_how_to_fix(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "encodec", None)  # makes 'import encodec' raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'musicdistill\[audio\]'.*torchaudio"):
        import_encodec_package()
    with pytest.raises(ImportError, match="torchaudio"):
        fit_codec(CodecConfig(kind="encodec", pretrained="encodec_24khz"), None, SR)


class _FakeEncodecModel(nn.Module):
    """A stand-in with the encodec 0.1.1 ``EncodecModel`` surface the adapter uses (24 kHz mono, 75 Hz)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(320, 8)
        self.sample_rate, self.channels, self.frame_rate = 24000, 1, 75
        self.target_bandwidths = [1.5, 3.0, 6.0, 12.0, 24.0]
        self.quantizer = types.SimpleNamespace(bins=1024)
        self.segment, self.bandwidth = 1.0, None

    def set_target_bandwidth(self, bandwidth: float) -> None:
        if bandwidth not in self.target_bandwidths:
            raise ValueError(bandwidth)
        self.bandwidth = bandwidth

    def encode(self, x: torch.Tensor) -> list[tuple[torch.Tensor, None]]:
        assert self.segment is None and x.shape[1] == self.channels
        k = int(self.bandwidth * 1000 // (self.frame_rate * 10))
        blocks = torch.nn.functional.pad(x[:, 0], (0, -x.shape[-1] % 320)).unflatten(-1, (-1, 320))
        codes = (self.proj(blocks)[..., :1].sigmoid() * 1023).long().transpose(1, 2).expand(-1, k, -1)
        return [(codes, None)]

    def decode(self, frames: list[tuple[torch.Tensor, None]]) -> torch.Tensor:
        codes, _ = frames[0]
        return (codes[:, :1].float() / 1023).repeat_interleave(320, dim=-1)

    @staticmethod
    def encodec_model_24khz(pretrained: bool = True) -> _FakeEncodecModel:
        return _FakeEncodecModel()


def test_encodec_package_adapter_with_a_stand_in(monkeypatch, clips: torch.Tensor, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "encodec", types.SimpleNamespace(EncodecModel=_FakeEncodecModel))
    codec = EncodecPackageCodec.from_pretrained("encodec_24khz", num_codebooks=4)
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.cardinality) == (
        24000,
        75.0,
        4,
        1024,
    )
    assert codec.bandwidth == 3.0
    codes = codec.encode(clips[:2, None], SR)
    assert codes.shape == (2, 4, 75) and codes.dtype == torch.int64
    assert codec.decode(codes).shape == (2, 1, 75 * 320)
    codec.save(tmp_path / "c")
    loaded = load_codec(tmp_path / "c")
    assert isinstance(loaded, EncodecPackageCodec)
    assert torch.equal(loaded.encode(clips[:2, None], SR), codes)


# ---- command line ---------------------------------------------------------------------------------


def test_cli_fit_and_roundtrip(tmp_path, capsys) -> None:
    from musicdistill.data.synth import synthesize_dataset

    manifest = synthesize_dataset(tmp_path / "data", num_clips=12, seed=0, duration=1.0, workers=1)
    out = tmp_path / "codec"
    overrides = [
        "data.duration=1.0",
        "codec.n_mels=32",
        "codec.n_fft=256",
        "codec.hop_length=160",
        "codec.cardinality=16",
        "codec.num_codebooks=2",
        "codec.kmeans_iters=3",
        "codec.griffin_lim_iters=4",
        "model.delays=[0,1]",
    ]
    assert main(["codec", "fit", "--data", str(manifest), "--out", str(out), *overrides]) == 0
    assert {p.name for p in out.iterdir()} >= {"codec.json", "codec.safetensors", "config.yaml"}
    assert "K=2 codebooks x V=16" in capsys.readouterr().out

    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((44100 // 2, 2))).astype(np.float32)
    sf.write(tmp_path / "in.wav", stereo, 44100)
    assert (
        main(
            [
                "codec",
                "roundtrip",
                "--codec",
                str(out),
                "--in",
                str(tmp_path / "in.wav"),
                "--out",
                str(tmp_path / "out.wav"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "50 frames x 2 codebooks (200 tokens/s)" in printed and "real-time factor" in printed
    info = sf.info(tmp_path / "out.wav")
    assert (info.samplerate, info.channels, info.frames) == (SR, 1, 50 * 160)


def test_cli_errors_are_clean(tmp_path, capsys) -> None:
    assert main(["codec", "roundtrip", "--codec", str(tmp_path), "--in", "x.wav", "--out", "y.wav"]) == 2
    assert "codec.json" in capsys.readouterr().err
