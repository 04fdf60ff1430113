"""Argument helpers shared by command groups: ``--config`` plus dotted overrides, checked against what
the command reads.

A YAML config file is shared by several commands, so it may hold sections a command does not read.
A ``section.key=value`` override on the command line is meant for the command at hand, and one the
command does not read would be ignored without a word (``musicdistill distill ...
distill.diversity_beta=60`` once trained the β = 0 model). So each command declares the config it
reads (:class:`ConfigReads`) and an override outside it is refused, naming what the command reads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from musicdistill.config import (
    MOVED_KEYS,
    Config,
    ConfigError,
    config_keys,
    config_sections,
    key_doc,
    load_config,
    moved_key_message,
    override_key,
)

#: the section that only the main job reads
MAIN_JOB_SECTION = "run"
MAIN_JOB = "musicdistill run"


def _within(key: str, scope: str) -> bool:
    """``key`` is ``scope`` or inside it (``'distill.beta'`` is within ``'distill'``)."""
    return key == scope or key.startswith(scope + ".")


@dataclass(frozen=True)
class ConfigReads:
    """The config a command reads, hence what its command-line overrides may set.

    ``keys``: sections (``'distill'``), dotted keys (``'model.backbone'``) or ``'*'`` (everything).
    ``ignores``: sections or keys inside ``keys`` the command does not read (the main job sets
    ``distill.beta`` itself). ``instead``: (key, hint) pairs for keys the command does not read: what
    it reads in their place; ``{value}`` in a hint is the override's value.
    """

    command: str
    keys: tuple[str, ...]
    ignores: tuple[str, ...] = ()
    instead: tuple[tuple[str, str], ...] = ()

    def reads(self, key: str) -> bool:
        """Whether the command reads the dotted ``key`` (a leaf key or a whole section)."""
        if any(_within(key, i) for i in self.ignores):
            return False
        return "*" in self.keys or any(_within(key, k) for k in self.keys)

    def describe(self) -> str:
        """What the command reads, for messages: ``'distill.*, generate.*, model.backbone, name'``."""
        sections = set(config_sections())
        named = [f"{k}.*" if k in sections else k for k in self.keys if k != "*"]
        text = ", ".join(named) if named else "every key"
        if "*" in self.keys and self.ignores:
            skipped = [f"{k}.*" if k in sections else k for k in self.ignores]
            text += " except " + ", ".join(skipped)
        return text

    def hint(self, key: str, value: str) -> str | None:
        """What the command reads in place of ``key`` (a hint for ``key`` or for its section)."""
        for scope, text in self.instead:
            if _within(key, scope):
                return text.format(value=value)
        return None


#: every ConfigReads declared so far (by :func:`declare_reads`), by command
_DECLARED: dict[str, ConfigReads] = {}


def declare_reads(parser: argparse.ArgumentParser, reads: ConfigReads) -> None:
    """Attach ``reads`` to a command's parser (``args.config_reads``) and record it for ``config keys``."""
    parser.set_defaults(config_reads=reads)
    _DECLARED[reads.command] = reads


def declared_reads() -> list[ConfigReads]:
    """The ConfigReads of every command whose parser has been built, in declaration order."""
    return list(_DECLARED.values())


def add_config_args(parser: argparse.ArgumentParser, reads: ConfigReads) -> None:
    """``--config FILE`` and trailing ``section.key=value`` overrides of what the command ``reads``."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default: built-in defaults; see configs/)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"dotted overrides applied after the file, e.g. pretrain.steps=200; this command reads "
        f"{reads.describe()}",
    )
    declare_reads(parser, reads)


def add_positional_config_args(parser: argparse.ArgumentParser, reads: ConfigReads) -> None:
    """``CONFIG`` and ``KEY=VALUE`` overrides as positionals, before or after the options (the main
    job's commands: ``musicdistill run CONFIG --force x KEY=VALUE``)."""
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        metavar="CONFIG",
        help="YAML config (e.g. configs/default.yaml; default: built-in defaults)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"dotted overrides, e.g. distill.steps=200; `{reads.command}` reads {reads.describe()}",
    )
    declare_reads(parser, reads)
    accept_late_positionals(parser)


def positional_config(args: argparse.Namespace, reads: ConfigReads) -> tuple[Config, str | None, list[str]]:
    """The config of a command set up with :func:`add_positional_config_args`, with the file and the
    overrides it came from (a first positional holding ``=`` is an override: no file was given)."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:
        overrides.insert(0, config)
        config = None
    overrides = _with_report_to(args, overrides)
    return load_command_config(config, overrides, reads), config, overrides


def _not_read(reads: ConfigReads, key: str, value: str) -> str:
    """The rest of the message for an override of ``key``, which the command does not read."""
    return reads.hint(key, value) or f"`{reads.command}` reads {reads.describe()}"


def check_overrides(overrides: list[str], reads: ConfigReads) -> None:
    """Refuse an override the command does not read, or of a key that moved, naming what it reads.

    Unknown keys are left to :func:`musicdistill.config.load_config` ("did you mean ...").
    """
    known = set(config_keys()) | set(config_sections())
    for text in overrides:
        key, value = override_key(text), text.partition("=")[2]
        if key in MOVED_KEYS:
            new = MOVED_KEYS[key]
            if reads.reads(new):
                raise ConfigError(moved_key_message(key, override=text))
            old_section = key.partition(".")[0]
            new_section = new.partition(".")[0]
            raise ConfigError(
                f"override '{text}': '{key}' is no longer in the '{old_section}' section: it moved to "
                f"'{new}' ({new_section}: {key_doc(new_section)}), which `{reads.command}` does not "
                f"read; {_not_read(reads, new, value)}"
            )
        if key not in known:  # a key inside a mapping-valued key ('run.diversity_distill.lr')
            key = next((k for k in config_keys() if _within(key, k)), key)
        if key in known and not reads.reads(key):
            where = ""
            if _within(key, MAIN_JOB_SECTION) and reads.command != MAIN_JOB:
                where = f" (the {MAIN_JOB_SECTION} section is read only by `{MAIN_JOB}`, the main job)"
            raise ConfigError(
                f"override '{text}': `{reads.command}` does not read {key}{where}; "
                f"{_not_read(reads, key, value)}"
            )


def load_command_config(path: str | None, overrides: list[str], reads: ConfigReads) -> Config:
    """:func:`musicdistill.config.load_config` after checking the overrides against what the command reads."""
    check_overrides(list(overrides), reads)
    return load_config(path, overrides)


def add_report_to(parser: argparse.ArgumentParser) -> None:
    """``--report-to tensorboard``: the training rows also go to TensorBoard (the ``report_to`` key)."""
    parser.add_argument(
        "--report-to",
        choices=("none", "tensorboard"),
        help="also send the training rows to TensorBoard (<out>/tensorboard; needs the tensorboard extra)",
    )


def _with_report_to(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    flag = getattr(args, "report_to", None)
    return [*overrides, f"report_to={flag}"] if flag else list(overrides)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of a command set up with :func:`add_config_args` (and :func:`add_report_to`)."""
    return load_command_config(args.config, _with_report_to(args, args.overrides), args.config_reads)


def accept_late_positionals(parser: argparse.ArgumentParser) -> None:
    """Let CONFIG and KEY=VALUE overrides also follow the options (``CONFIG --seeds 2,3 KEY=VALUE``).

    argparse fills the positionals from the words before the first option and leaves later ones
    unrecognised (bpo-14191); this parser takes them back: the first (when CONFIG was not
    given and it is no override) is CONFIG, the rest are overrides. Other leftovers stay errors.
    """
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        namespace, extras = parse(args, namespace)
        late = [a for a in extras if not a.startswith("-")]
        if late and getattr(namespace, "config", None) is None and "=" not in late[0]:
            namespace.config = late.pop(0)
        namespace.overrides = [*getattr(namespace, "overrides", []), *late]
        return namespace, [a for a in extras if a.startswith("-")]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
