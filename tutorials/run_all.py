"""Run every tutorial in this folder top to bottom (CI sets PROBGEN_FAST=1 for small settings).

After each tutorial, every PNG it wrote (into ``$PROBGEN_TUTORIAL_OUT``, default
``tutorials/figures``) is opened and checked: large enough to read, and not blank (its pixels
vary).  A figure that fails stops the run with its name.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: Smallest side (pixels) of a figure a tutorial writes, and smallest area: a strip of images
#: (an interpolation row) is wide and short, not tiny.
MIN_SIDE = 64
MIN_AREA = 150 * 150
#: Smallest standard deviation of a figure's grey levels (0..1): below it the image is blank.
MIN_SPREAD = 0.01


def figure_problem(path: Path) -> str | None:
    """Why the PNG at ``path`` is not a usable figure (too small, blank), or None when it is."""
    import matplotlib.image

    pixels = np.asarray(matplotlib.image.imread(path), dtype=float)
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE or height * width < MIN_AREA:
        return f"{width}x{height} pixels, under {MIN_SIDE} on a side or {MIN_AREA} in all"
    grey = pixels[..., :3].mean(-1) if pixels.ndim == 3 else pixels
    if grey.std() < MIN_SPREAD:
        return f"blank (grey levels vary by {grey.std():.4f} < {MIN_SPREAD})"
    return None


def main() -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = Path(os.environ.get("PROBGEN_TUTORIAL_OUT", HERE / "figures"))
    for path in sorted(HERE.glob("[0-9][0-9]_*.py")):
        start = time.perf_counter()
        print(f"--- {path.name}", flush=True)
        runpy.run_path(str(path), run_name="__main__")
        written = [p for p in out.glob("*.png") if p.stat().st_mtime >= start - 1.0] if out.is_dir() else []
        bad = {p.name: why for p in sorted(written) if (why := figure_problem(p)) is not None}
        if bad:
            print(f"--- {path.name}: unusable figures: {bad}", flush=True)
            return 1
        print(
            f"--- {path.name}: {time.perf_counter() - start:.1f} s, {len(written)} figures checked",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
