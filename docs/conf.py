"""Sphinx configuration of probgen's documentation: the guides in docs/*.md, an API reference
read from the numpydoc docstrings, and one page per tutorial with the figures it saved.

Build with ``make docs`` (warnings are errors).  The tutorial pages show the PNG files a run of
``make tutorials`` left in ``tutorials/figures``; the build never runs a tutorial.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
TUTORIALS = ROOT / "tutorials"
FIGURES = TUTORIALS / "figures"

sys.path.insert(0, str(ROOT))

import probgen  # noqa: E402

project = "probgen"
author = "The probgen authors"
copyright = "The probgen authors"
release = version = probgen.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc Parameters sections give the types
numpydoc_show_class_members = False  # methods are documented in place by autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_title = f"probgen {release}"
html_static_path: list[str] = []


def _title(script: Path) -> str:
    """The first line of a tutorial's module docstring, e.g. ``Tutorial 1: mixture models``."""
    text = script.read_text(encoding="utf-8")
    match = re.search(r'"""(.+?)\n', text)
    return match.group(1).strip().rstrip(".") if match else script.stem


def _tutorial_pages() -> None:
    """Write ``docs/tutorials/<script>.rst`` for every ``tutorials/NN_*.py``: its docstring's title,
    the figures it saved (``NN_*.png``), and the script itself."""
    out = DOCS / "tutorials"
    out.mkdir(exist_ok=True)
    names = []
    for script in sorted(TUTORIALS.glob("[0-9][0-9]_*.py")):
        number = script.stem.split("_", 1)[0]
        title = _title(script)
        lines = [title, "=" * len(title), ""]
        figures = sorted(FIGURES.glob(f"{number}_*.png")) if FIGURES.is_dir() else []
        if figures:
            lines += ["Figures from its last run (``make tutorials``):", ""]
            for fig in figures:
                lines += [f".. figure:: /../tutorials/figures/{fig.name}", "   :width: 90%", "",
                          f"   ``{fig.name}``", ""]
        else:
            lines += ["Run ``make tutorials`` to draw this tutorial's figures.", ""]
        lines += [
            "The script",
            "----------",
            "",
            f"Run it with ``python tutorials/{script.name}`` (``PROBGEN_FAST=1`` for short settings).",
            "",
            f".. literalinclude:: ../../tutorials/{script.name}",
            "   :language: python",
            "",
        ]
        page = out / f"{script.stem}.rst"
        text = "\n".join(lines)
        if not page.exists() or page.read_text(encoding="utf-8") != text:
            page.write_text(text, encoding="utf-8")
        names.append(script.stem)
    index = ["Tutorials", "=========", "", ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {name}" for name in names]
    text = "\n".join(index) + "\n"
    target = out / "index.rst"
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


_tutorial_pages()


def _skip_sklearn_routing(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods (metadata routing): they are
    scikit-learn's, documented there, and their docstrings refer to its own glossary."""
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_routing)
