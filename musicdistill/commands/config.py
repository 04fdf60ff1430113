"""``musicdistill config``: show or check configurations, and which command reads which key."""

from __future__ import annotations

import argparse

import yaml

from musicdistill.commands.common import ConfigReads, add_config_args, config_from_args, declared_reads
from musicdistill.config import MOVED_KEYS, config_sections, config_to_dict, describe_fields, key_doc

PREFIX = "musicdistill "

#: 'config show' prints whatever it is given, so every key is its to override
SHOW_READS = ConfigReads("musicdistill config show", ("*",))

KEYS_EPILOG = """\
Each section is headed by the commands that read it; a key read by other commands than its section
names them in brackets. A YAML file may hold sections a command does not read (one file serves
several commands), but a KEY=VALUE override the command does not read is refused."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show every config key with its doc, or print a resolved config")
    g = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    keys = g.add_parser(
        "keys",
        help="list every config key with its default, one line of doc and the commands that read it",
        epilog=KEYS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.set_defaults(func=_keys)
    show = g.add_parser("show", help="validate a config with overrides and print the resolved YAML")
    add_config_args(show, SHOW_READS)
    show.set_defaults(func=_show)


def readers(key: str, declared: list[ConfigReads]) -> list[str]:
    """Short names of the commands that read ``key`` ('distill', 'run', ...), leaving out those that
    read every key without exception (``config show``)."""
    return sorted(
        r.command.removeprefix(PREFIX)
        for r in declared
        if not (r.keys == ("*",) and not r.ignores) and r.reads(key)
    )


def key_lines(declared: list[ConfigReads]) -> list[str]:
    """The lines ``config keys`` prints: a header per section, then its keys."""
    sections = set(config_sections())
    lines: list[str] = []
    current = None
    for key, default, doc in describe_fields():
        section = key.partition(".")[0] if "." in key else ""
        if section != current:
            current = section
            header = "# top level"
            if section in sections:
                who = ", ".join(readers(section, declared)) or "no command"
                header = f"# {section}: {key_doc(section)} (read by: {who})"
            lines.extend(([""] if lines else []) + [header])
        mine = readers(key, declared)
        note = ""
        if not section or mine != readers(section, declared):
            note = f"  [read by: {', '.join(mine) or 'no command'}]"
        lines.append(f"{key:32s} {default!r:>20}  {doc}{note}")
    lines.extend(["", "# moved keys: a YAML file or override that names the old key is refused"])
    lines.extend(f"{old:32s} -> {new}" for old, new in MOVED_KEYS.items())
    return lines


def _keys(args: argparse.Namespace) -> int:
    print("\n".join(key_lines(declared_reads())))
    return 0


def _show(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0
