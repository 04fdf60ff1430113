"""``musicdistill embed``: train the reward embedder, the second embedder, the text-audio scorer and the
attribute oracle."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from musicdistill.codec.factory import load_codec
from musicdistill.commands.common import ConfigReads, add_config_args, config_from_args
from musicdistill.config import save_config
from musicdistill.judges.embedder import fit_and_save_embedder
from musicdistill.judges.log_mel import load_labelled_mels
from musicdistill.judges.oracle import fit_and_save_oracle
from musicdistill.judges.scorer import fit_and_save_scorer
from musicdistill.judges.second_embedder import fit_and_save_second_embedder

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "config.yaml"

_COMMON = (
    "Clips are read from MANIFEST at data.sample_rate and cropped/padded to data.duration; the model trains "
    "on the train split and is evaluated on the valid and test splits. The log-mel front end is the codec "
    "section's (n_mels, n_fft, hop_length, fmin, fmax). With --codec, the model also trains on the codec's "
    "reconstructions of the clips (as generations are decoded by it) and is evaluated on them too. OUT gets "
    "model.safetensors + model.json (settings and held-out metrics) + the resolved config.yaml."
)

#: data: clips; codec: the log-mel front end (model.delays is validated against codec.num_codebooks)
_INPUT = ("data", "codec", "model.delays")
TRAIN_READS = ConfigReads("musicdistill embed train", ("device", *_INPUT, "embed"))
SCORER_READS = ConfigReads("musicdistill embed scorer", ("device", *_INPUT, "scorer"))
SECOND_READS = ConfigReads("musicdistill embed second", ("device", *_INPUT, "second_embed"))
ORACLE_READS = ConfigReads("musicdistill embed oracle", (*_INPUT, "oracle"))


def _add_common(parser: argparse.ArgumentParser, reads: ConfigReads) -> None:
    parser.add_argument(
        "--data", metavar="MANIFEST", required=True, help="manifest (JSONL/CSV) or audio folder"
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="model folder to write")
    parser.add_argument(
        "--codec",
        metavar="DIR",
        help="codec directory ('musicdistill codec fit'); adds codec reconstructions",
    )
    add_config_args(parser, reads)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="train the diversity embedder, the text-audio scorer or the attribute oracle",
        description="The models that judge generations: the contrastive audio embedder (the "
        "diversity reward), a joint text-audio scorer (text adherence) and an attribute "
        "oracle for the built-in data (attribute adherence).",
    )
    g = p.add_subparsers(dest="embed_command", metavar="ACTION", required=True)

    train = g.add_parser(
        "train",
        help="train the contrastive audio embedder (the diversity reward model)",
        description="Train the audio embedder (embed section): two non-overlapping chunks of a clip are a "
        "positive pair, the other clips of the batch are negatives (symmetric InfoNCE). It trains on one "
        "half of the train split (a hash of each caption; 'embed second' trains on the other). Reports the "
        "held-out top-1 accuracy of finding a chunk's partner among 64 and 256 clips. " + _COMMON,
    )
    _add_common(train, TRAIN_READS)
    train.set_defaults(func=_train_embedder)

    scorer = g.add_parser(
        "scorer",
        help="train the joint text-audio scorer (text adherence)",
        description="Train the joint text-audio scorer (scorer section): a frozen sentence encoder plus a "
        "trained projection, and a conv audio tower, aligned with a CLIP loss on caption-clip pairs. "
        "Reports held-out text-to-audio recall@1 among 100 and among all held-out clips. " + _COMMON,
    )
    _add_common(scorer, SCORER_READS)
    scorer.set_defaults(func=_train_scorer)

    oracle = g.add_parser(
        "oracle",
        help="fit the attribute oracle on the built-in data's labels",
        description="Fit the attribute oracle (oracle section): one softmax regression per head on hand-made "
        "log-mel features; needs manifest rows with 'attributes' (the built-in data has them). "
        "Reports per-attribute held-out accuracy. " + _COMMON,
    )
    _add_common(oracle, ORACLE_READS)
    oracle.set_defaults(func=_fit_oracle)

    second = g.add_parser(
        "second",
        help="train the second audio embedder (evaluation diversity, independent of the reward)",
        description="Train the second audio embedder (second_embed section): a 2-D conv network over the "
        "log-mel trained with VICReg (two masked, shifted views of the same segment must agree; no "
        "negatives), on the half of the train split the reward embedder ('embed train') never sees "
        "(a hash of each caption decides the half). It gives the evaluation's diversity_second. Reports the "
        "held-out top-1 accuracy of finding a view's partner among 64 and 256 clips. " + _COMMON,
    )
    _add_common(second, SECOND_READS)
    second.set_defaults(func=_train_second)


def _prepare(args: argparse.Namespace):
    """The resolved config, the train and held-out log-mels, and the output folder."""
    cfg = config_from_args(args)
    codec = None
    if args.codec:
        codec = load_codec(args.codec)
    else:
        log.info(
            "no --codec: training on real clips only (generations are codec reconstructions; pass --codec "
            "to train on those too)"
        )
    train, held_out = load_labelled_mels(cfg, args.data, codec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / RESOLVED_CONFIG)
    return cfg, train, held_out, out


def _print(kind: str, out: Path, metrics: dict) -> int:
    print(json.dumps(metrics, indent=2))
    print(f"wrote {kind} to {out}")
    return 0


def _train_embedder(args: argparse.Namespace) -> int:
    cfg, train, held_out, out = _prepare(args)
    return _print("embedder", out, fit_and_save_embedder(cfg, train, held_out, out))


def _train_scorer(args: argparse.Namespace) -> int:
    cfg, train, held_out, out = _prepare(args)
    return _print("scorer", out, fit_and_save_scorer(cfg, train, held_out, out))


def _train_second(args: argparse.Namespace) -> int:
    cfg, train, held_out, out = _prepare(args)
    return _print("second embedder", out, fit_and_save_second_embedder(cfg, train, held_out, out))


def _fit_oracle(args: argparse.Namespace) -> int:
    cfg, train, held_out, out = _prepare(args)
    return _print("oracle", out, fit_and_save_oracle(cfg, train, held_out, out))
