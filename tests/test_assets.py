"""The shipped base in ``assets/``: every file matches the card's sha256, and the base loads and generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from musicdistill.codec.factory import load_codec
from musicdistill.generation.sampling import generate
from musicdistill.model.loading import load_generator
from musicdistill.storage.checkpoint import file_sha256

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CARD = ASSETS / "README.md"
ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", re.M)
MAX_BYTES = 30 * 1024 * 1024


def card_hashes() -> dict[str, tuple[int, str]]:
    return {path: (int(size), sha) for path, size, sha in ROW.findall(CARD.read_text(encoding="utf-8"))}


def shipped_files() -> list[str]:
    return sorted(p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file() and p != CARD)


def test_the_card_lists_every_file_with_its_size_and_sha256() -> None:
    table = card_hashes()
    assert table, f"{CARD} has no hash table"
    assert sorted(table) == shipped_files()
    for rel, (size, sha) in table.items():
        assert (ASSETS / rel).stat().st_size == size, rel
        assert file_sha256(ASSETS / rel) == sha, rel


def test_assets_stay_under_30_mb() -> None:
    assert sum((ASSETS / rel).stat().st_size for rel in shipped_files()) <= MAX_BYTES


def test_the_base_is_float16_and_records_its_codec() -> None:
    with safe_open(str(ASSETS / "base" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "F32" not in dtypes and "F16" in dtypes
    loaded = load_generator(ASSETS / "base", device=torch.device("cpu"))
    assert loaded.codec is not None
    assert loaded.codec.num_codebooks == load_codec(ASSETS / "codec").num_codebooks


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_the_shipped_base_loads_and_generates(cfg_scale: float) -> None:
    loaded = load_generator(ASSETS / "base", device=torch.device("cpu"))
    out = generate(
        loaded.model,
        ["a slow organ melody in A minor"],
        num_samples=2,
        duration=0.4,
        cfg_scale=cfg_scale,
        seed=0,
        codec=loaded.codec,
        text_encoder=loaded.text_encoder,
    )
    assert out.audio is not None and torch.isfinite(out.audio).all()
    assert out.codes.shape[:2] == (2, loaded.codec.num_codebooks)
    assert int(out.codes.max()) < loaded.codec.cardinality and int(out.codes.min()) >= 0


def test_shipped_text_files_name_no_machine_paths() -> None:
    for rel in shipped_files():
        if rel.endswith((".json", ".yaml", ".md")):
            text = (ASSETS / rel).read_text(encoding="utf-8")
            assert not re.search(r"(?<![\w.])/(work|home|tmp|root|Users|mnt)/", text), rel
