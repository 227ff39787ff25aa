"""The documentation renders without network access: docs/check_offline.py, the check that
``make docs`` runs on its build, catches remote scripts and stylesheets, and a small page built
with the documentation's configuration passes it, its formulas served by a MathJax of its own."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _load_check():
    spec = importlib.util.spec_from_file_location("check_offline", DOCS / "check_offline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check()

HEAD = """<link rel="stylesheet" href="_static/style.css">
<script src="_static/mathjax/tex-chtml.js"></script>"""


def write_site(root: Path, head: str = HEAD, css: str = "p { color: black }") -> Path:
    (root / "_static" / "mathjax").mkdir(parents=True)
    (root / "_static" / "mathjax" / "tex-chtml.js").write_text("/* MathJax */")
    (root / "_static" / "style.css").write_text(css)
    page = root / "index.html"
    page.write_text(f"<html><head>{head}</head><body><p>\\(x^2\\)</p></body></html>")
    return page


def test_a_local_site_passes(tmp_path):
    write_site(tmp_path)
    assert check.check_build(tmp_path) == []
    assert check.main([str(tmp_path)]) == 0


@pytest.mark.parametrize(
    "extra",
    [
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>',
        '<script defer src="http://example.org/x.js"></script>',
        '<script src="//code.jquery.com/jquery.js"></script>',
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        "<script>window.MathJax = {loader: {paths: {mathjax: "
        "'https://cdn.jsdelivr.net/npm/mathjax@3/es5'}}}</script>",
        '<script src="_static/missing.js"></script>',
    ],
)
def test_remote_or_missing_resources_fail(tmp_path, extra):
    write_site(tmp_path, HEAD + extra)
    problems = check.check_build(tmp_path)
    assert len(problems) == 1, problems
    assert check.main([str(tmp_path)]) == 1


def test_remote_imports_in_stylesheets_fail(tmp_path):
    write_site(tmp_path, css='@import url("https://fonts.googleapis.com/css2?family=Lato");')
    assert len(check.check_build(tmp_path)) == 1


def test_math_needs_mathjax_from_the_build(tmp_path):
    write_site(tmp_path, head='<link rel="stylesheet" href="_static/style.css">')
    assert check.check_build(tmp_path) == [f"{tmp_path}: no page loads MathJax from the build"]
    assert check.check_build(tmp_path, require_math=False) == []


def test_a_page_built_with_the_docs_configuration(tmp_path, monkeypatch):
    """The documentation's own extensions and theme, on a page with formulas."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # conf.py adds the checkout and docs/
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    if importlib.util.find_spec("sphinx-mathjax-offline") is None:
        pytest.skip("needs the [docs] extra")
    from sphinx.cmd.build import build_main

    src = tmp_path / "src"
    src.mkdir()
    # conf.py of the documentation, without the gallery (which runs the examples).
    (src / "conf.py").write_text(
        textwrap.dedent(
            f"""
            import runpy
            _conf = runpy.run_path({str(DOCS / "conf.py")!r})
            globals().update({{k: v for k, v in _conf.items() if not k.startswith("__")}})
            extensions = [e for e in extensions if e != "sphinx_gallery.gen_gallery"]
            del sphinx_gallery_conf
            html_static_path = [{str(DOCS / "_static")!r}]
            """
        )
    )
    (src / "index.rst").write_text(
        "Formulas\n========\n\nInline :math:`N = 12\\,n_\\mathrm{side}^2`, and displayed:\n\n"
        ".. math::\n\n   \\tilde{L} = \\frac{2L}{\\lambda_{\\max}} - I\n"
    )
    out = tmp_path / "html"
    status = build_main(
        ["-W", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), str(src), str(out)]
    )
    assert status == 0
    assert check.check_build(out) == []
    page = (out / "index.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page
    assert (out / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    # MathJax's fonts are served from the build too.
    assert list((out / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))


@pytest.mark.skipif(
    not (DOCS / "_build" / "html" / "index.html").is_file(), reason="make docs not run"
)
def test_the_built_documentation():
    assert check.check_build(DOCS / "_build" / "html") == []
