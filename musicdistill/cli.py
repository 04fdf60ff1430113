"""The ``musicdistill`` command line: parses arguments and dispatches; no ML logic lives here.

Each command group lives in ``musicdistill/commands/<group>.py`` and exposes
``register(subparsers)``; the handler it sets (``args.func``) returns an exit code.

Only the group a command line names is imported (most import torch): ``--help`` and ``--version``
list the others by the help line their ``register`` gives, read from the source without importing
it. ``config`` imports every group, since ``config keys`` lists which command reads each key.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import logging
import os
import pkgutil
import sys
from pathlib import Path

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
    "plan",
    "merge",
    "export",
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


def command_help(name: str) -> str:
    """The help line ``musicdistill/commands/<name>.py`` registers its group with, read without importing it."""
    source = (Path(pkg.__path__[0]) / f"{name}.py").read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_parser"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == name
        ):
            for keyword in node.keywords:
                if keyword.arg == "help" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return ""


def chosen_commands(argv: list[str]) -> tuple[str, ...] | None:
    """The command groups to import for ``argv``: the one it names, every group for ``config``
    (None), none when it names no group (``--help``, ``--version``, a typo)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first == "config":
        return None
    return (first,) if first in command_modules() else ()


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser(commands: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``commands``, only those groups are imported and registered and the
    others are listed by their help line (see the module doc)."""
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
        if commands is None or name in commands:
            importlib.import_module(f"musicdistill.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=command_help(name))
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_commands(argv))
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
