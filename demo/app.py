"""Run the quality ↔ diversity demo from a source checkout: ``python demo/app.py --run runs/default``.

A thin entry point: the page lives in :mod:`musicdistill.demo.app` (``build_demo(engine) -> gr.Blocks``)
and the models in :mod:`musicdistill.demo.engine` (loaded by :mod:`musicdistill.demo.loading`), so ``musicdistill demo`` works from an installed
package too. Arguments are those of ``musicdistill demo --help``.
"""

from __future__ import annotations

import sys

from musicdistill.demo.app import build_demo, launch_demo

__all__ = ["build_demo", "launch_demo", "main"]


def main(argv: list[str] | None = None) -> int:
    from musicdistill.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
