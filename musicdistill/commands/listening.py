"""``musicdistill listening``: export a blind listening test, and analyse the ratings it collects."""

from __future__ import annotations

import argparse
import sys

from musicdistill.commands.common import ConfigReads, add_config_args, config_from_args
from musicdistill.listening.analysis import analyze
from musicdistill.listening.export import run_export
from musicdistill.listening.summary import write_summary

DESCRIPTION = """\
A human evaluation in the format of the paper's listening study: quality trials rate each clip on
acoustic quality, match to its description and musicality (1-5); diversity trials rate how different
two generations of one prompt by one system are (1-5).

  export   render every system on every prompt into a self-contained folder: raters/ (index.html,
           a static rating page that works from disk, and the anonymised, loudness-normalised clips)
           to hand out; key.csv (which clip is which system), export.json and webmushra.yaml to keep
  analyze  check the raters' CSVs against key.csv and write summary.md / summary.html / summary.json:
           per-system means with bootstrap intervals, prompt-matched win rates, Krippendorff's alpha,
           the attention check, and every rejected row with its file and line"""

EXPORT_EPILOG = """\
The systems, prompts and settings come from the config's listening section, e.g.:

  listening:
    systems:
      - {name: base_cfg3, checkpoint: runs/default/base, cfg_scale: 3.0}
      - {name: distilled, checkpoint: runs/default/distill/final, cfg_scale: 1.0}
    prompts: ["calm solo piano in C major", "fast drum and bass with a deep synth bass"]
    samples_per_prompt: 4
    duration: 4.0
    seed: 0

Each system may also set temperature, top_k, top_p (default: the generate section) and codec (default:
the codec recorded in the checkpoint's provenance).

examples:
  musicdistill listening export --config my_listening_test.yaml
  musicdistill listening export --config configs/default.yaml listening.seed=1 --out runs/lt1 --force"""

ANALYZE_EPILOG = """\
examples:
  musicdistill listening analyze --key runs/default/listening/key.csv --ratings ratings/
  musicdistill listening analyze --key key.csv --ratings ratings/ --out report/ --tolerance 1"""

EXPORT_READS = ConfigReads(
    "musicdistill listening export", ("name", "runs_dir", "device", "listening", "generate")
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listening",
        help="export a blind listening test and analyse its ratings",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="listening_command", metavar="ACTION")

    e = actions.add_parser(
        "export",
        help="render the systems into a rating page, stimuli and a hidden key",
        description=DESCRIPTION,
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(e, EXPORT_READS)
    e.add_argument(
        "--out", metavar="DIR", help="export folder (default: listening.out, else <run dir>/listening)"
    )
    e.add_argument("--force", action="store_true", help="replace the export folder if it is not empty")
    e.set_defaults(func=_export)

    a = actions.add_parser(
        "analyze",
        help="summarise the raters' CSVs against the key",
        description=DESCRIPTION,
        epilog=ANALYZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--key", required=True, metavar="FILE", help="key.csv of the export")
    a.add_argument(
        "--ratings",
        required=True,
        metavar="PATH",
        help="folder of the CSV files the raters downloaded (searched recursively), or one CSV file",
    )
    a.add_argument("--out", metavar="DIR", help="folder for the summary (default: analysis/ beside the key)")
    a.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="largest difference between a rater's two ratings of the repeated stimulus (default: 1)",
    )
    a.add_argument(
        "--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default: 2000)"
    )
    a.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    a.set_defaults(func=_analyze)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _export(args: argparse.Namespace) -> int:
    result = run_export(config_from_args(args), out=args.out, force=args.force)
    print(f"test {result.test_id}: {result.num_stimuli} stimuli, {len(result.trials)} trials")
    print(f"hand out: {result.raters_dir}")
    print(f"keep:     {result.key_path} (the key; never give it to raters)")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    result = analyze(args.key, args.ratings, tolerance=args.tolerance, n_boot=args.bootstrap, seed=args.seed)
    paths = write_summary(result, args.out)
    counts = result.ratings.problem_counts()
    print(
        f"{len(result.ratings.files)} file(s), {result.ratings.rows_read} rows, "
        f"{len(result.ratings.ratings)} accepted" + (f"; rejected: {counts}" if counts else "")
    )
    for rater, res in sorted(result.attention.items()):
        if res.excluded:
            print(f"rater {rater} excluded: attention check {res.status} ({res.detail()})")
    for m in result.means:
        print(f"  {m.system:>20}  {m.question:<17} {m.mean:.2f} [{m.low:.2f}, {m.high:.2f}]  n={m.n_ratings}")
    print(f"summary: {paths['markdown']} and {paths['html']}")
    if not result.means:
        print("error: no usable ratings; see the rejected rows in the summary", file=sys.stderr)
        return 1
    return 0
