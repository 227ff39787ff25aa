"""Sphinx configuration of the pyg_sphere documentation (``make docs``)."""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # the package and examples/ from the checkout
sys.path.insert(0, DOCS)  # gallery.py, named below by its import path

import pyg_sphere  # noqa: E402

project = "pyg_sphere"
author = "pyg_sphere contributors"
copyright = "2025, pyg_sphere contributors"
version = release = pyg_sphere.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax copied into the build (_static/mathjax), so that formulas render without network
    # access; docs/check_offline.py checks that no page loads anything from another host.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "myst_parser",  # docs/benchmarks.md and the results pages
    "sphinx_gallery.gen_gallery",  # examples/ as the tutorials gallery
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

# "forward()" rather than "SphericalChebConv.forward()" in a page's table of contents: the
# sidebar is narrow.
toc_object_entries_show_parents = "hide"

# The tutorials: every script of examples/ becomes a page with its text, code, printed output
# and figures. They run on the small settings of docs/gallery.py (the scripts' defaults are
# sized for real runs); reproduce_paper.py takes minutes to hours and is shown without running.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"^(?!.*(reproduce_paper|infer_cosmo)\.py$)",
    "reset_argv": "gallery.reset_argv",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,  # a broken example fails the build, not just its page
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    # The computation-times page loads jQuery and DataTables from CDNs: not in an offline build.
    "write_computation_times": False,
    "show_signature": False,
}

html_theme = "furo"
html_title = f"pyg_sphere {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
