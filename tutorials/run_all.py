"""Run every tutorial in this folder top to bottom (CI sets PROBGEN_FAST=1 for small settings)."""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for path in sorted(HERE.glob("[0-9][0-9]_*.py")):
        start = time.perf_counter()
        print(f"--- {path.name}", flush=True)
        runpy.run_path(str(path), run_name="__main__")
        print(f"--- {path.name}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
