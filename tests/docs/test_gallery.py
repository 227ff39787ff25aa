"""The examples are pages of the documentation's gallery (sphinx-gallery): each has a titled
reST docstring, and the small settings the gallery runs it with (docs/gallery.py) are the ones
its page names."""

import ast
import importlib.util
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NOT_RUN = {"reproduce_paper.py", "infer_cosmo.py"}  # minutes to hours: shown without running


def _gallery():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "docs" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gallery = _gallery()


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text()), clean=False)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_docstring_is_a_titled_page(path):
    lines = docstring(path).lstrip("\n").splitlines()
    title, underline = lines[0], lines[1]
    assert title and set(underline) == {"="} and len(underline) == len(title), lines[:2]
    # The first paragraph after the title is the script's --help description.
    assert docstring(path).split("\n\n")[1].strip()


def test_the_gallery_runs_every_quick_example(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # conf.py adds the checkout and docs/
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))["sphinx_gallery_conf"]
    run = {p.name for p in EXAMPLES if re.search(conf["filename_pattern"], str(p))}
    assert run == {p.name for p in EXAMPLES} - NOT_RUN
    assert set(gallery.ARGS) == run
    assert conf["reset_argv"] == "gallery.reset_argv"


@pytest.mark.parametrize("name", sorted(gallery.ARGS))
def test_each_page_names_its_settings(name):
    # A literal block may continue a command on the next line with a backslash.
    text = " ".join(docstring(ROOT / "examples" / name).replace("\\\n", " ").split())
    command = f"python examples/{name} {gallery.ARGS[name]}".strip()
    assert "The output on this page comes from" in text
    assert command in text, command


def test_reset_argv(tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "WORK", str(tmp_path / "gallery"))
    stale = tmp_path / "gallery" / "classify_cosmologies" / "run" / "last.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_text("an earlier build's run")
    src = ROOT / "examples" / "classify_cosmologies.py"
    argv = gallery.reset_argv({}, {"src_file": str(src)})
    assert argv[: len(gallery.ARGS[src.name].split())] == gallery.ARGS[src.name].split()
    # A fresh run in the gallery's folder, named relative to examples/ where the gallery runs it.
    assert not stale.exists()
    data, out = argv[argv.index("--data-dir") + 1], argv[argv.index("--out") + 1]
    for path in (data, out):
        assert (src.parent / path).resolve().is_relative_to(tmp_path / "gallery")
    assert gallery.reset_argv({}, {"src_file": str(ROOT / "examples" / "masked_region.py")}) == []
