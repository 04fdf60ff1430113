"""System names: display names stay as written, files and folders use :func:`slug`."""

from __future__ import annotations

import random
import re

import pytest

from musicdistill.config import GenerateConfig
from musicdistill.evaluation.systems import parse_systems, slug

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("base CFG 3", "base_cfg3"),
        ("base CFG 1.5", "base_cfg1.5"),
        ("base T=0.7", "base_t0.7"),
        ("quality (beta=0)", "quality_beta0"),
        ("diversity (beta=15)", "diversity_beta15"),
        ("merge lambda=0.5", "merge_lambda0.5"),
        ("merge_lam0.5", "merge_lam0.5"),
        ("Café  Nº 5", "cafe_no5"),
        ("../etc/passwd", "etc_passwd"),
        ("a\\b:c", "a_b_c"),
        ("..", ""),
        ("λ", ""),
    ],
)
def test_slug_examples(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_slug_is_lowercase_safe_ascii_and_idempotent() -> None:
    rng = random.Random(0)
    alphabet = "aZ09 ._-()=/\\,:;λé\t"
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        s = slug(name)
        assert s == "" or SLUG.match(s), (name, s)
        assert slug(s) == s, (name, s)


def _systems(*names: str):
    return parse_systems(
        [{"name": n, "checkpoint": f"/ckpt/{i}"} for i, n in enumerate(names)],
        GenerateConfig(),
        section="evaluate.systems",
    )


def test_parse_systems_keeps_display_names_and_gives_slugs() -> None:
    systems = _systems("base CFG 3", "diversity (beta=15)")
    assert [s.name for s in systems] == ["base CFG 3", "diversity (beta=15)"]
    assert [s.slug for s in systems] == ["base_cfg3", "diversity_beta15"]


def test_parse_systems_rejects_names_whose_files_would_collide_or_be_unnamed() -> None:
    with pytest.raises(ValueError, match=r"evaluate.systems\[1\].name='Base cfg 3'.*'base_cfg3'"):
        _systems("base CFG 3", "Base cfg 3")
    with pytest.raises(ValueError, match=r"evaluate.systems\[0\].name='λ' has no letters or digits"):
        _systems("λ")
