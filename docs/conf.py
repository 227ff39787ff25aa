"""Sphinx configuration of the pyg_sphere documentation (``make docs``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the package and examples/ from the checkout

import pyg_sphere  # noqa: E402

project = "pyg_sphere"
author = "pyg_sphere contributors"
copyright = "2025, pyg_sphere contributors"
version = release = pyg_sphere.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "myst_parser",  # docs/benchmarks.md and the results pages
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path = []

# Google-style docstrings, with PyG's "Shapes:" section.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: no duplicate of documented properties
napoleon_custom_sections = ["Shapes"]

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autoclass_content = "class"

# `sphinx -b doctest docs docs/_build/doctest` runs the testcode blocks of the pages; the
# docstrings' examples run under pytest (--doctest-modules), with their modules' globals.
doctest_test_doctest_blocks = ""

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"pyg_sphere {release}"
html_static_path = []
html_theme_options = {
    "description": "Deep learning on the HEALPix sphere with PyTorch Geometric",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
