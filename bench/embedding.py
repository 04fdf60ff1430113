"""Embedders and oracle on the built-in data: training time and held-out quality.

Stages, each timed (wall and process CPU seconds):

1. data: ``--data`` (a manifest or folder), or ``--num-clips`` clips synthesised into ``--workdir``;
2. codec: ``--codec``, or the default mel RVQ codec fitted on the train split;
3. log-mels of every clip and their codec reconstructions (``decode_mel(encode_mel(.))``);
4. the contrastive embedder, the joint scorer (MiniLM captions included) and the oracle, each
   trained on the train split (real + reconstructed) and evaluated on the valid + test clips;
5. Griffin-Lim: ``--gl-clips`` held-out clips decoded to audio by the codec, as generations are;
   the oracle, the embedder and the scorer are evaluated on those waveforms too;
6. the per-step reward cost: embedding 32 decoded log-mels (``embed_mel``) and 32 waveforms.

Usage: python bench/embedding.py [--data DIR] [--num-clips 8000] [--codec DIR] [--threads 1]
       [--gl-clips 128] [--workdir /tmp/md_bench_embedding] [--out bench/embedding.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from musicdistill.codec.factory import fit_codec
from musicdistill.codec.interface import load_codec  # noqa: E402
from musicdistill.config import Config  # noqa: E402
from musicdistill.data.synth import synthesize_dataset  # noqa: E402
from musicdistill.judges.embedder import (  # noqa: E402
    chunk_retrieval_accuracy,
    embed_audio,
    embed_mel,
    fit_and_save_embedder,
    load_embedder,
)
from musicdistill.judges.log_mel import ClipMels, load_labelled_mels, waveform_mels  # noqa: E402
from musicdistill.judges.oracle import (  # noqa: E402
    attribute_accuracy,
    fit_and_save_oracle,
    load_oracle,
    predict_attributes,
)
from musicdistill.judges.scorer import fit_and_save_scorer, load_joint_scorer, text_to_audio_recall  # noqa: E402


class Timer:
    """Records (wall, CPU) seconds of named stages."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.stages[name] = {
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
        }
        print(f"[{name}] {self.stages[name]}", flush=True)
        return result


def griffin_lim_checks(codec, cfg: Config, held, models: dict, count: int) -> dict:
    """Decode ``count`` held-out clips to audio with the codec and evaluate every model on the waveforms."""
    from musicdistill.data.audio_io import load_audio

    entries = held.entries[:count]
    rate = cfg.data.sample_rate
    wav = torch.from_numpy(np.stack([load_audio(e, rate, cfg.data.duration) for e in entries]))
    decoded = torch.cat(
        [codec.decode(codec.encode(wav[i : i + 16, None], rate))[:, 0] for i in range(0, count, 16)]
    )
    decoded = decoded[:, : wav.shape[1]]
    attributes = [e.attributes for e in entries]
    out = {"clips": count}
    oracle, embedder, scorer = models["oracle"], models["embedder"], models["scorer"]
    out["oracle_accuracy"] = {
        k: round(v, 4)
        for k, v in attribute_accuracy(predict_attributes(oracle, decoded, rate), attributes).items()
    }
    mels = ClipMels(
        waveform_mels(embedder.mel, wav, rate), waveform_mels(embedder.mel, decoded, rate), held.mels.settings
    )
    out["embedder_top1"] = {
        f"b{count}_{a}_vs_{b}": round(chunk_retrieval_accuracy(embedder, mels, count, views=(a, b)), 4)
        for a, b in (("real", "real"), ("recon", "recon"), ("real", "recon"))
    }
    captions = [e.caption for e in entries]
    out["scorer"] = {
        name: text_to_audio_recall(scorer, captions, m, count, attributes=attributes)
        for name, m in (("real", mels.real), ("griffin_lim", mels.recon))
    }
    return out


def reward_cost(embedder, held, rate: int, repeats: int = 5) -> dict:
    """Seconds to embed 32 clips from decoded log-mels and from waveforms (best of ``repeats``)."""
    log_mel = held.mels.recon[:32].float()
    wav = torch.randn(32, int(rate * 4.0)) * 0.1

    def best(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(min(times), 4)

    return {
        "embed_mel_32_s": best(lambda: embed_mel(embedder, log_mel)),
        "embed_audio_32_s": best(lambda: embed_audio(embedder, wav, rate)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="manifest or folder (default: synthesise --num-clips clips)")
    parser.add_argument("--num-clips", type=int, default=8000)
    parser.add_argument("--codec", help="codec directory (default: fit the default codec)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared box)"
    )
    parser.add_argument("--gl-clips", type=int, default=128, help="held-out clips decoded with Griffin-Lim")
    parser.add_argument("--workdir", default="/tmp/md_bench_embedding")
    parser.add_argument("--out", default="bench/embedding.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config()
    work = Path(args.workdir)
    timer = Timer()
    data = args.data
    if data is None:
        data = work / "data"
        if not (data / "manifest.jsonl").is_file():
            timer("synth", lambda: synthesize_dataset(data, args.num_clips, seed=0, workers=2))
    if args.codec:
        codec = load_codec(args.codec)
    else:
        from musicdistill.data.loading import load_dataset

        _, clips = load_dataset(data, cfg.data.sample_rate, cfg.data.duration, split="train")
        codec = timer(
            "codec_fit", lambda: fit_codec(cfg.codec, torch.from_numpy(clips), cfg.data.sample_rate)
        )
        del clips
    train, held = timer("load_and_mels", lambda: load_labelled_mels(cfg, data, codec))
    results: dict = {"train_clips": len(train), "held_out_clips": len(held)}
    results["embedder"] = timer(
        "embedder", lambda: fit_and_save_embedder(cfg, train, held, work / "embedder")
    )
    results["scorer"] = timer("scorer", lambda: fit_and_save_scorer(cfg, train, held, work / "scorer"))
    results["oracle"] = timer("oracle", lambda: fit_and_save_oracle(cfg, train, held, work / "oracle"))
    models = {
        "embedder": load_embedder(work / "embedder"),
        "oracle": load_oracle(work / "oracle"),
        "scorer": load_joint_scorer(work / "scorer"),
    }
    results["reward_cost"] = reward_cost(models["embedder"], held, cfg.data.sample_rate)
    if args.gl_clips > 1:
        count = min(args.gl_clips, len(held))
        results["griffin_lim"] = timer(
            "griffin_lim", lambda: griffin_lim_checks(codec, cfg, held, models, count)
        )
    results["stages"] = timer.stages
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
