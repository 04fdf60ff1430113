"""Argument helpers shared by command groups: --config plus dotted overrides."""

from __future__ import annotations

import argparse

from musicdistill.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and trailing ``section.key=value`` overrides."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default: built-in defaults; see configs/)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the file, e.g. pretrain.steps=200",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
