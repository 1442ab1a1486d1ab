"""Sphinx configuration of the trpo_ref documentation site.

Build (from the repository root; warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Sources are the Markdown pages of docs/ (MyST) and the package's numpydoc
docstrings (autodoc + numpydoc).  Math is typeset by a MathJax 3 that a
Python package ships (``sphinx-mathjax-offline``), copied into
``_static/mathjax``: nothing is fetched from the network at build or view time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

project = "trpo_ref"
author = "trpo_ref contributors"
copyright = "2026, trpo_ref contributors"
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "docstring_fixes",
    "autolink_code",
]

# ---------------------------------------------------------------- sources
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
suppress_warnings = ["myst.header"]  # pages start at level 1 and may skip a level in tables of contents

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3          # [text](page.md#a-heading) links resolve
myst_dmath_double_inline = True

# ---------------------------------------------------------------- API
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"        # the numpydoc Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set = set()

# ---------------------------------------------------------------- math, offline
# MathJax 3 as shipped by the sphinx-mathjax-offline package (a directory that
# is not an importable module name; located through its spec).
_spec = importlib.util.find_spec("sphinx-mathjax-offline")
if _spec is None or not _spec.submodule_search_locations:
    raise RuntimeError("the docs need the 'docs' extra: pip install -e '.[docs]' (sphinx-mathjax-offline missing)")
_MATHJAX_STATIC = Path(list(_spec.submodule_search_locations)[0]) / "static"
html_static_path = [str(_MATHJAX_STATIC), "_static"]
mathjax_path = "mathjax/tex-chtml.js"

# ---------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = "trpo_ref"
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 5,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
html_copy_source = False
# The top-level pages have no section navigation to show: give their width to the text.
html_sidebars = {"*": [], "api/*": ["sidebar-nav-bs"]}
