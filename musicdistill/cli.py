"""The ``musicdistill`` command line: parses arguments and dispatches; no ML logic lives here.

Each command group lives in ``musicdistill/commands/<group>.py`` and exposes
``register(subparsers)``; the handler it sets (``args.func``) returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

import musicdistill.commands as pkg
from musicdistill import __version__
from musicdistill.config import ConfigError

log = logging.getLogger("musicdistill")

#: command groups listed first in ``--help``, in this order; any other module in
#: ``musicdistill/commands`` that has ``register`` follows alphabetically
PREFERRED_ORDER = (
    "run",
    "data",
    "codec",
    "embed",
    "pretrain",
    "generate",
    "distill",
    "merge",
    "evaluate",
    "listening",
    "demo",
    "config",
)


def command_modules() -> list[str]:
    """Names of the command-group modules in ``musicdistill/commands``."""
    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in ("common",)}
    ordered = [n for n in PREFERRED_ORDER if n in found]
    return ordered + sorted(found - set(ordered))


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicdistill",
        description=(
            "Finetune text-to-music token generators so they need no classifier-free guidance (CFG) "
            "at inference, yet stay diverse (diversity-rewarded CFG distillation, ICLR 2025)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'musicdistill COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"musicdistill {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(f"musicdistill.commands.{name}").register(sub)
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError, FileNotFoundError, ImportError, ValueError) as exc:
        if args.verbose:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
