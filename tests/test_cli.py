"""The command line imports only the group it runs: --help and --version answer without torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

from musicdistill.cli import build_parser, chosen_commands, command_help, command_modules


def _group_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help for choice in sub._choices_actions}


def test_every_group_is_listed_with_the_help_it_registers() -> None:
    full, light = _group_helps(build_parser()), _group_helps(build_parser(()))
    assert set(full) == set(light) == set(command_modules())
    for name in command_modules():
        assert command_help(name) and light[name] == full[name] == command_help(name), name


def test_only_the_named_group_is_imported() -> None:
    assert chosen_commands(["-v", "run", "configs/default.yaml"]) == ("run",)
    assert chosen_commands(["--version"]) == () and chosen_commands(["rnu"]) == ()
    assert chosen_commands(["config", "keys"]) is None  # config keys lists every group's reads


def test_version_and_help_need_no_torch() -> None:
    code = (
        "import sys\n"
        "from musicdistill.cli import main\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "musicdistill" in out.stdout and "replicate" in out.stdout
