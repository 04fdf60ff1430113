"""``musicdistill config``: show or check configurations."""

from __future__ import annotations

import argparse

import yaml

from musicdistill.commands.common import add_config_args, config_from_args
from musicdistill.config import config_to_dict, describe_fields


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show every config key with its doc, or print a resolved config")
    g = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    keys = g.add_parser("keys", help="list every config key with its default and one line of doc")
    keys.set_defaults(func=_keys)
    show = g.add_parser("show", help="validate a config with overrides and print the resolved YAML")
    add_config_args(show)
    show.set_defaults(func=_show)


def _keys(args: argparse.Namespace) -> int:
    for key, default, doc in describe_fields():
        print(f"{key:32s} {default!r:>20}  {doc}")
    return 0


def _show(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0
