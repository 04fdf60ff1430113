"""Write ``assets/``: the codec and the pretrained base (float16) that ``make run`` starts from.

    python scripts/ship_assets.py --codec work/codec --base work/base --out assets

The codec is copied through its own loader (so a broken folder is refused), the base is copied
with float16 weights and its provenance pointing at ``codec`` beside it, and the sha256 of every
file is printed as the Markdown table that ``assets/README.md`` (the card) carries;
``tests/test_assets.py`` checks the files against that table.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from musicdistill.codec.factory import load_codec
from musicdistill.storage.checkpoint import file_sha256
from musicdistill.storage.convert import convert_checkpoint

CARD = "README.md"


def hash_table(root: Path) -> str:
    """Markdown rows ``| `path` | bytes | sha256 |`` for every file under ``root`` but the card."""
    rows = ["| file | bytes | sha256 |", "| --- | --- | --- |"]
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CARD):
        rel = path.relative_to(root).as_posix()
        rows.append(f"| `{rel}` | {path.stat().st_size} | `{file_sha256(path)}` |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codec", required=True, type=Path, help="codec folder the base was trained on")
    parser.add_argument(
        "--base", required=True, type=Path, help="base checkpoint (musicdistill pretrain --out)"
    )
    parser.add_argument("--out", default=Path("assets"), type=Path, help="assets folder (default: assets)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_codec(args.codec).save(args.out / "codec")
    convert_checkpoint(args.base, args.out / "base", "float16", {"codec_dir": "codec"})
    print(hash_table(args.out))


if __name__ == "__main__":
    main()
