"""Checks that a built HTML documentation works without network access.

Every page must load its scripts and stylesheets from the build itself (no ``http://``,
``https://`` or ``//host`` address, no inline script naming a CDN), and the MathJax script that
renders the formulas must be in the build, so that a reader without internet sees formulas, not
raw LaTeX. The stylesheets in the build must not import fonts or styles from another host.
``make docs`` runs it after the HTML build::

    python docs/check_offline.py docs/_build/html
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Inline scripts (a MathJax configuration, say) that would fetch from these load remote code.
CDN = re.compile(r"https?://[^\s\"']*(cdn|jsdelivr|unpkg|googleapis|cloudflare)", re.I)
# url(...) and @import in a stylesheet, absolute or protocol-relative.
CSS_REMOTE = re.compile(r"""(?:url\(\s*|@import\s+)["']?(?:https?:)?//""", re.I)


class _Resources(HTMLParser):
    """The scripts and stylesheets a page loads, and its inline scripts' text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if attrs.get("src"):
                self.scripts.append(attrs["src"])
            else:
                self._in_script = True
                self.inline.append("")
        elif tag == "link" and "stylesheet" in (attrs.get("rel") or "").lower().split():
            if attrs.get("href"):
                self.stylesheets.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.inline[-1] += data


def is_remote(url: str) -> bool:
    """Whether a script or stylesheet address points outside the build."""
    parts = urlsplit(url.strip())
    return bool(parts.scheme and parts.scheme != "file") or url.strip().startswith("//")


def _local_file(page: Path, url: str) -> Path:
    return (page.parent / unquote(urlsplit(url).path)).resolve()


def check_page(page: Path) -> tuple[list[str], list[str]]:
    """Returns (problems, MathJax scripts) of one HTML page."""
    parser = _Resources()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    problems, mathjax = [], []
    for kind, urls in (("script", parser.scripts), ("stylesheet", parser.stylesheets)):
        for url in urls:
            if is_remote(url):
                problems.append(f"{page}: {kind} from another host: {url}")
            elif not _local_file(page, url).is_file():
                problems.append(f"{page}: {kind} missing from the build: {url}")
            elif kind == "script" and "mathjax" in url.lower():
                mathjax.append(url)
    for text in parser.inline:
        match = CDN.search(text)
        if match:
            problems.append(f"{page}: inline script loads from a CDN: {match.group(0)}")
    return problems, mathjax


def check_build(root: str | Path, require_math: bool = True) -> list[str]:
    """All problems of a built HTML tree; with ``require_math``, also fails when no page loads
    MathJax from the build (the pages with formulas must)."""
    root = Path(root)
    pages = sorted(root.rglob("*.html"))
    if not pages:
        return [f"{root}: no HTML page"]
    problems, math_pages = [], 0
    for page in pages:
        page_problems, mathjax = check_page(page)
        problems += page_problems
        math_pages += bool(mathjax)
    for css in sorted(root.rglob("*.css")):
        match = CSS_REMOTE.search(css.read_text(encoding="utf-8", errors="replace"))
        if match:
            problems.append(f"{css}: loads from another host: {match.group(0)}")
    if require_math and not math_pages:
        problems.append(f"{root}: no page loads MathJax from the build")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html_dir", help="the HTML build, e.g. docs/_build/html")
    args = p.parse_args(argv)
    problems = check_build(args.html_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.html_dir}: every page loads its scripts and stylesheets from the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
