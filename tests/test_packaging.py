"""What a non-editable install ships: every subpackage, and exactly the data files the code reads.

pyproject.toml's ``[tool.setuptools.package-data]`` must name only patterns that match real files,
and every non-Python file inside ``musicdistill/`` (templates the code reads through
``importlib.resources``) must be covered by one of them; otherwise an installed wheel would lack it
while the editable checkout works. The slow test builds a real wheel, installs it into a scratch
folder and renders a listening page from there, outside the repository.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools
import tomllib

from musicdistill.listening import page

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "musicdistill"
CODE_SUFFIXES = {".py", ".pyc"}
RELATIVE_FILE = re.compile(r"^[\w.-]+(/[\w.-]+)*\.[A-Za-z0-9]+$")


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def package_dir(package: str) -> Path:
    return ROOT.joinpath(*package.split("."))


def matched_files(package_data: dict[str, list[str]]) -> dict[tuple[str, str], set[Path]]:
    """``(package, pattern) -> files it matches`` (setuptools globs each pattern in its package's folder)."""
    return {
        (pkg, pattern): {p for p in package_dir(pkg).glob(pattern) if p.is_file()}
        for pkg, patterns in package_data.items()
        for pattern in patterns
    }


def empty_patterns(package_data: dict[str, list[str]]) -> list[str]:
    return [f"{pkg}: {pattern}" for (pkg, pattern), files in matched_files(package_data).items() if not files]


def data_files() -> set[Path]:
    """Every non-Python file inside the package source tree."""
    return {
        p
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in CODE_SUFFIXES and "__pycache__" not in p.parts
    }


def loaded_files() -> set[Path]:
    """Files the code names by a relative path that exists next to the module naming it.

    Every string literal shaped like ``dir/name.ext`` is resolved against its module's folder; one
    that names an existing file there is a file the module reads at run time (importlib.resources
    or ``Path(__file__).parent / ...``), and so must ship.
    """
    found = set()
    for module in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and RELATIVE_FILE.match(node.value)
            ):
                candidate = module.parent / node.value
                if candidate.is_file():
                    found.add(candidate)
    return found


def uncovered(files: set[Path], package_data: dict[str, list[str]]) -> list[str]:
    covered = set().union(*matched_files(package_data).values()) if package_data else set()
    return sorted(str(p.relative_to(ROOT)) for p in files - covered)


def test_every_package_data_pattern_matches_a_file() -> None:
    package_data = setuptools_table()["package-data"]
    assert package_data, "pyproject.toml has no [tool.setuptools.package-data]"
    assert empty_patterns(package_data) == []


def test_every_data_file_and_every_file_the_code_loads_is_package_data() -> None:
    package_data = setuptools_table()["package-data"]
    template = PACKAGE / "listening" / page.TEMPLATE
    assert template in loaded_files(), "the listening page's template is not found by loaded_files()"
    assert uncovered(data_files() | loaded_files(), package_data) == []


def test_the_checks_catch_a_stale_pattern_and_a_missing_one() -> None:
    """The old table (``configs/*.yaml``, a folder that does not exist) fails both checks."""
    stale = {"musicdistill": ["configs/*.yaml"]}
    assert empty_patterns(stale) == ["musicdistill: configs/*.yaml"]
    assert "musicdistill/listening/templates/rating_page.html" in uncovered(data_files(), stale)


def test_packages_find_includes_every_subpackage() -> None:
    include = setuptools_table()["packages"]["find"]["include"]
    found = set(setuptools.find_packages(where=str(ROOT), include=include))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk - found == set()
    assert found - on_disk == set()
    assert {
        "musicdistill.listening",
        "musicdistill.demo",
        "musicdistill.evaluation",
        "musicdistill.storage",
    } <= found


def test_the_page_template_is_read_from_package_data() -> None:
    template = page.page_template()
    assert template.startswith("<!DOCTYPE html>")
    assert template.count("__TITLE__") == 2 and template.count("__DATA__") == 1


RENDER = """
import json, sys
from musicdistill.listening import page
data = json.loads(sys.argv[1])
print(page.__file__)
sys.stdout.write(page.render_page(data))
"""


@pytest.mark.slow
def test_an_installed_wheel_ships_the_template_and_renders_the_page(tmp_path: Path) -> None:
    """Build a real (non-editable) wheel from a copy of the sources, install it, render a page outside the repo."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "musicdistill", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel")],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "musicdistill/listening/templates/rating_page.html" in names
    for sub in ("storage", "dsp", "data", "codec", "model", "generation", "training", "judges"):
        assert f"musicdistill/{sub}/__init__.py" in names
    for sub in ("evaluation", "listening", "pipeline", "demo", "commands"):
        assert f"musicdistill/{sub}/__init__.py" in names

    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, cwd=tmp_path
    )
    data = {"title": "Wheel <check>", "trials": [], "questions": {}}
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", RENDER, json.dumps(data)],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    where, _, rendered = result.stdout.partition("\n")
    assert Path(where).is_relative_to(site)
    assert rendered == page.render_page(data)
