"""Benchmark of the default codec (mel RVQ): fit time, encode+decode speed, reconstruction quality.

    .venv/bin/python bench/codec.py --data DATA/manifest.jsonl [--train-clips 500] [--plot /tmp/codec.png]

Without ``--data`` the built-in data is synthesised first (3000 clips, seed 0) into ``--data-dir``.
The codec is fitted with the default ``codec`` config on the first ``--train-clips`` clips of the
train split; quality and speed are measured on the test split (held-out captions).

Metrics, per clip, between the original x and the reconstruction y (16 kHz mono, y cut to len(x)),
all with librosa at n_fft 2048 and hop 512:

* chroma cosine: ``chroma_stft`` of x and y, both at the tuning ``estimate_tuning`` finds in x;
  cosine similarity per frame, averaged over frames; the table gives the mean over clips.
* onset rate: ``onset_detect`` onsets per second. librosa sizes its peak-picking windows as 30 ms,
  which rounds to 0 frames at 16 kHz / hop 512 and lets one attack fire in two adjacent frames, so
  ``pre_max`` and ``wait`` are set to 1 frame (32 ms). The figure is mean rate(y) / mean rate(x)
  over clips; the ratio with librosa's literal defaults is reported as well.
* centroid correlation: Pearson r over frames between ``spectral_centroid`` of x and of y; mean
  over clips.

Targets (issue 3): chroma >= 0.85, onset-rate ratio within 10 %, centroid r >= 0.9, fit on 500
clips of 4 s under 60 s, encode+decode at least 20x faster than real time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import librosa
import numpy as np
import torch

from musicdistill.codec.factory import fit_codec
from musicdistill.codec.melrvq import MelRVQCodec
from musicdistill.config import CodecConfig
from musicdistill.data.loading import load_dataset

SR = 16000
N_FFT = 2048
HOP = 512


def chroma_cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over frames of the cosine similarity of the two chromagrams (x's tuning used for both)."""
    tuning = float(librosa.estimate_tuning(y=x, sr=SR, n_fft=N_FFT))
    cx = librosa.feature.chroma_stft(y=x, sr=SR, n_fft=N_FFT, hop_length=HOP, tuning=tuning)
    cy = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, tuning=tuning)
    num = (cx * cy).sum(0)
    den = np.linalg.norm(cx, axis=0) * np.linalg.norm(cy, axis=0) + 1e-8
    return float((num / den).mean())


def onset_rate(x: np.ndarray, literal_defaults: bool = False) -> float:
    """Onsets per second (see the module docstring for the peak-picking windows)."""
    kwargs = {} if literal_defaults else {"pre_max": 1, "wait": 1}
    onsets = librosa.onset.onset_detect(y=x, sr=SR, hop_length=HOP, **kwargs)
    return len(onsets) / (len(x) / SR)


def centroid_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over frames of the two spectral-centroid tracks."""
    a = librosa.feature.spectral_centroid(y=x, sr=SR, n_fft=N_FFT, hop_length=HOP)[0]
    b = librosa.feature.spectral_centroid(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)[0]
    return float(np.corrcoef(a, b)[0, 1])


def quality(originals: np.ndarray, rebuilt: np.ndarray) -> dict[str, float]:
    """The three metrics over clips [N, S] and [N, S'] -> summary dict."""
    n = originals.shape[1]
    chroma, centroid, rx, ry, rx_lit, ry_lit = [], [], [], [], [], []
    for x, y in zip(originals, rebuilt[:, :n]):
        chroma.append(chroma_cosine(x, y))
        centroid.append(centroid_correlation(x, y))
        rx.append(onset_rate(x))
        ry.append(onset_rate(y))
        rx_lit.append(onset_rate(x, literal_defaults=True))
        ry_lit.append(onset_rate(y, literal_defaults=True))
    return {
        "clips": len(chroma),
        "chroma_cosine": float(np.mean(chroma)),
        "chroma_cosine_min": float(np.min(chroma)),
        "onset_rate_original": float(np.mean(rx)),
        "onset_rate_rebuilt": float(np.mean(ry)),
        "onset_rate_ratio": float(np.mean(ry) / np.mean(rx)),
        "onset_rate_ratio_librosa_literal_defaults": float(np.mean(ry_lit) / np.mean(rx_lit)),
        "centroid_corr": float(np.nanmean(centroid)),
        "centroid_corr_min": float(np.nanmin(centroid)),
    }


def timed(fn, *args):
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def roundtrip(codec: MelRVQCodec, audio: torch.Tensor, batch: int) -> tuple[np.ndarray, float, float]:
    """Encode+decode clips [N, S] in batches -> (rebuilt [N, S'], wall s, CPU s)."""
    outs, wall, cpu = [], 0.0, 0.0
    for i in range(0, audio.shape[0], batch):
        wav = audio[i : i + batch, None]
        out, w, c = timed(lambda x: codec.decode(codec.encode(x, SR)), wav)
        outs.append(out[:, 0].numpy())
        wall, cpu = wall + w, cpu + c
    return np.concatenate(outs), wall, cpu


def decoder_ceiling(codec: MelRVQCodec, audio: torch.Tensor, batch: int) -> np.ndarray:
    """Griffin-Lim from the unquantised log-mel: what the decoder alone keeps."""
    outs = []
    for i in range(0, audio.shape[0], batch):
        mel = codec.mel(audio[i : i + batch])
        outs.append(codec.mel.to_audio(mel, iters=codec.settings.griffin_lim_iters).numpy())
    return np.concatenate(outs)


def plot(
    originals: np.ndarray, rebuilt: np.ndarray, indices: list[int], scores: list[float], path: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mel_db(wav: np.ndarray, ref: float) -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=wav, sr=SR, n_fft=1024, hop_length=256, n_mels=128, fmin=30, fmax=8000
        )
        return librosa.power_to_db(mel, ref=ref, top_db=None)

    fig, axes = plt.subplots(len(indices), 2, figsize=(11, 2.6 * len(indices)), squeeze=False)
    for row, i in enumerate(indices):
        x, y = originals[i], rebuilt[i][: originals.shape[1]]
        ref = float(
            librosa.feature.melspectrogram(
                y=x, sr=SR, n_fft=1024, hop_length=256, n_mels=128, fmin=30, fmax=8000
            ).max()
        )
        for col, (name, wav) in enumerate((("original", x), ("reconstruction", y))):
            axes[row, col].imshow(
                mel_db(wav, ref), origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma"
            )
            axes[row, col].set_title(
                f"test clip {i}: {name}" + (f" (centroid r {scores[i]:.2f})" if col else "")
            )
            axes[row, col].set_ylabel("mel band")
    axes[-1, 0].set_xlabel("frame (16 ms)")
    axes[-1, 1].set_xlabel("frame (16 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=70)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="manifest of the built-in data (default: synthesise into --data-dir)")
    parser.add_argument(
        "--data-dir", default="/tmp/musicdistill_codec_bench", help="where to synthesise data"
    )
    parser.add_argument(
        "--num-clips", type=int, default=3000, help="clips to synthesise when --data is not given"
    )
    parser.add_argument("--train-clips", type=int, default=500, help="train clips the codec is fitted on")
    parser.add_argument("--test-clips", type=int, default=0, help="limit on test clips (0 = the whole split)")
    parser.add_argument("--batch", type=int, default=16, help="clips per encode+decode call")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--plot", default="/tmp/codec_reconstructions.png", help="spectrogram comparison PNG")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    manifest = args.data
    if manifest is None:
        from musicdistill.data.synth import synthesize_dataset

        manifest = str(
            synthesize_dataset(args.data_dir, args.num_clips, seed=0, sample_rate=SR, duration=4.0)
        )
    _, train = load_dataset(manifest, SR, 4.0, split="train")
    _, test = load_dataset(manifest, SR, 4.0, split="test")
    train = torch.from_numpy(train[: args.train_clips])
    test = torch.from_numpy(test[: args.test_clips or None])

    cfg = CodecConfig()
    codec, fit_wall, fit_cpu = timed(fit_codec, cfg, train, SR)
    test_seconds = test.shape[0] * test.shape[1] / SR
    rebuilt, rt_wall, rt_cpu = roundtrip(codec, test, args.batch)
    _, one_wall, one_cpu = roundtrip(codec, test[:4], 1)
    scores = quality(test.numpy(), rebuilt)
    ceiling = quality(test.numpy(), decoder_ceiling(codec, test, args.batch))
    per_clip = [centroid_correlation(x, y) for x, y in zip(test.numpy(), rebuilt)]
    order = np.argsort(per_clip)
    plot(
        test.numpy(),
        rebuilt,
        [int(order[0]), int(order[len(order) // 2]), int(order[-1])],
        per_clip,
        args.plot,
    )

    result = {
        "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average": os.getloadavg(),
        "config": {
            k: getattr(cfg, k)
            for k in (
                "n_mels",
                "n_fft",
                "hop_length",
                "power",
                "num_codebooks",
                "cardinality",
                "kmeans_iters",
                "griffin_lim_iters",
            )
        },
        "train_clips": int(train.shape[0]),
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
        "test_clips": int(test.shape[0]),
        "roundtrip_batch": args.batch,
        "roundtrip_x_realtime_wall": test_seconds / rt_wall,
        "roundtrip_x_realtime_cpu": test_seconds / rt_cpu,
        "roundtrip_batch1_x_realtime_wall": 4 * test.shape[1] / SR / one_wall,
        "quality": scores,
        "decoder_only_quality": ceiling,
        "plot": args.plot,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
