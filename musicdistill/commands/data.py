"""``musicdistill data``: write the built-in captioned-music set, or check a user manifest (clips, splits, labels)."""

from __future__ import annotations

import argparse
import sys

from musicdistill.config import DataConfig, OracleConfig
from musicdistill.data.checks import check_entries
from musicdistill.data.manifest import read_manifest
from musicdistill.data.synth import synthesize_dataset
from musicdistill.data.windows import LAST_WINDOW, Windowing

_DEFAULTS = DataConfig()
_ORACLE = OracleConfig()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthesize the built-in captioned-music data, or check a manifest")
    g = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = g.add_parser(
        "synth",
        help="write procedurally synthesized captioned clips (audio/*.wav + manifest.jsonl)",
        description=(
            "Synthesize clips whose instrument, tempo, key, mode, register and drum pattern are audible and "
            "labelled in manifest.jsonl. The same seed gives byte-identical files whatever --workers is."
        ),
    )
    synth.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created; rewritten if it exists)"
    )
    synth.add_argument(
        "--num-clips",
        type=int,
        metavar="N",
        default=_DEFAULTS.num_clips,
        help="number of clips (default %(default)s)",
    )
    synth.add_argument(
        "--seed", type=int, metavar="S", default=_DEFAULTS.seed, help="random seed (default %(default)s)"
    )
    synth.add_argument(
        "--sample-rate",
        type=int,
        metavar="HZ",
        default=_DEFAULTS.sample_rate,
        help="Hz (default %(default)s)",
    )
    synth.add_argument(
        "--duration",
        type=float,
        metavar="SEC",
        default=_DEFAULTS.duration,
        help="seconds per clip (default %(default)s)",
    )
    synth.add_argument(
        "--workers", type=int, metavar="N", default=_DEFAULTS.workers, help="processes (default %(default)s)"
    )
    synth.set_defaults(func=_synth)

    check = g.add_parser(
        "check",
        help="read every clip of a manifest and list the bad ones (missing, corrupt, silent, ...)",
        description=(
            "Check a JSONL/CSV manifest or a folder of audio files with same-stem .txt captions (and "
            "optional same-stem .json labels): cuts files longer than --duration into clips as training "
            "does, reports missing or unreadable files, empty captions, silent, too short and non-finite "
            "clips, the files, clips and captions per split, the sample rates and channel counts, and "
            "every attribute (label) with its values and counts and whether the attribute oracle can "
            "learn it. Exits 0 when bad clips exist (training skips them), 1 with --strict, and 1 when "
            "no clip is usable."
        ),
    )
    check.add_argument(
        "manifest", metavar="MANIFEST", help="manifest.jsonl, manifest.csv, or a folder of audio"
    )
    check.add_argument("--strict", action="store_true", help="exit 1 if any entry is bad")
    check.add_argument(
        "--sample-rate",
        type=int,
        metavar="HZ",
        default=_DEFAULTS.sample_rate,
        help="Hz (default %(default)s)",
    )
    check.add_argument(
        "--duration",
        type=float,
        metavar="SEC",
        default=_DEFAULTS.duration,
        help="seconds per clip; longer files are cut into several (default %(default)s)",
    )
    check.add_argument(
        "--window-hop",
        type=float,
        metavar="SEC",
        default=_DEFAULTS.window_hop,
        help="seconds between the starts of a long file's clips; 0 = --duration (default %(default)s)",
    )
    check.add_argument(
        "--last-window",
        choices=LAST_WINDOW,
        default=_DEFAULTS.last_window,
        help="a long file's final partial clip: drop it or pad it with silence (default %(default)s)",
    )
    check.add_argument(
        "--min-clips-per-class",
        type=int,
        metavar="N",
        default=_ORACLE.min_clips_per_class,
        help="training clips each value of an attribute needs for the oracle to learn it (default %(default)s)",
    )
    check.add_argument(
        "--min-duration",
        type=float,
        metavar="SEC",
        default=_DEFAULTS.min_duration,
        help="clips with less audio are 'too short' (default %(default)s)",
    )
    check.add_argument(
        "--workers",
        type=int,
        metavar="N",
        default=_DEFAULTS.workers,
        help="reader threads (default %(default)s)",
    )
    check.set_defaults(func=_check)


def _synth(args: argparse.Namespace) -> int:
    manifest = synthesize_dataset(
        args.out,
        args.num_clips,
        seed=args.seed,
        sample_rate=args.sample_rate,
        duration=args.duration,
        workers=args.workers,
    )
    print(manifest)
    return 0


def _check(args: argparse.Namespace) -> int:
    entries = read_manifest(args.manifest)
    report = check_entries(
        entries,
        args.sample_rate,
        args.duration,
        args.min_duration,
        workers=args.workers,
        windowing=Windowing(hop=args.window_hop, last=args.last_window),
        oracle=OracleConfig(min_clips_per_class=args.min_clips_per_class),
    )
    print(report.format())
    if report.usable == 0:
        print(f"error: no usable clip in {args.manifest}; fix the entries listed above", file=sys.stderr)
        return 1
    if args.strict and report.bad:
        print(f"error: {report.bad} bad entries in {args.manifest} (--strict)", file=sys.stderr)
        return 1
    return 0
