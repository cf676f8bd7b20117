"""The book, end to end: every chapter executes on the lite profile, the HTML book builds, and
each page renders in headless Chromium (title, sidebar, figures, typeset math, no errors, and
nothing wider than the content column, with every toggle opened).

The first test of this module executes the whole book (``convexlab.book.build_book``), which
takes minutes: these tests are marked ``book``/``browser`` and run by ``make test``. Set
``CONVEXLAB_REUSE_BOOK=1`` to test an already built ``_build/html`` instead of rebuilding.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
import yaml

from convexlab.book import book_root, build_book, chapter_names, executed_dir

ROOT = book_root()
PROFILE = "lite"
HTML = ROOT / "_build" / "html"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


@pytest.fixture(scope="module")
def built_book() -> Path:
    index = HTML / "index.html"
    if not (os.environ.get("CONVEXLAB_REUSE_BOOK") == "1" and index.is_file()):
        index = build_book(PROFILE, root=ROOT, force=True)  # execute every chapter, whatever ran before
    return index


def _chapter_titles() -> dict[str, str]:
    titles = {}
    for name in chapter_names(ROOT):
        for line in (ROOT / "book" / f"{name}.md").read_text().splitlines():
            if line.startswith("# "):
                titles[name] = line[2:].strip()
                break
    return titles


# -- execution ---------------------------------------------------------------------------------


@pytest.mark.book
def test_every_chapter_executed_without_errors(built_book):
    executed = executed_dir(PROFILE, ROOT)
    for name in chapter_names(ROOT):
        notebook = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert "parameters" in code_cells[0].metadata.get("tags", []), f"{name}: first code cell must be the parameters cell"
        injected = [c for c in code_cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and f'profile = "{PROFILE}"' in injected[0].source, name
        errors = [o for c in code_cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert errors == [], f"{name} has error outputs: {[e.ename for e in errors]}"
        assert all(c.execution_count is not None for c in code_cells), f"{name}: a cell was not executed"
    timings = json.loads((executed / "timings.json").read_text())
    assert set(chapter_names(ROOT)) <= set(timings)


@pytest.mark.book
def test_chapters_follow_the_house_rules():
    """Chapters explain and call the library: no function definitions, no pip, no relative data paths,
    and no switching off of progress bars (the runner does that for batch runs; interactive users want them)."""
    for name in chapter_names(ROOT):
        text = (ROOT / "book" / f"{name}.md").read_text()
        code = "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S))
        assert not re.search(r"^\s*def\s", code, flags=re.M), f"{name} defines a function; move it to convexlab"
        assert "!pip" not in code and "%pip" not in code, name
        assert not re.search(r"""['"]\.\.?/""", code), f"{name} uses a relative path"
        assert "TQDM_DISABLE" not in code, f"{name} turns progress bars off for interactive users too"


# -- HTML --------------------------------------------------------------------------------------


@pytest.mark.book
def test_html_is_complete_offline(built_book):
    assert built_book.is_file()
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax must be served from the book"
    for name in chapter_names(ROOT):
        page = HTML / "book" / f"{name}.html"
        assert page.is_file(), page
        html = page.read_text()
        external = re.findall(r"""<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)\"""", html)
        external = [url for url in external if not url.startswith(("https://github.com", "https://mybinder.org"))]
        assert external == [], f"{name} loads {external} from the network"
        for src in re.findall(r'<img[^>]+src="([^"]+)"', html):
            if src.startswith("data:"):
                continue
            assert (page.parent / urlparse(src).path).resolve().is_file(), f"{name}: missing image {src}"
    # the convexity formula is numbered on the intro page, and the later chapters link to it
    intro = (HTML / "book" / "intro.html").read_text()
    assert 'id="equation-eq-graph-convexity"' in intro and '<span class="eqno">(1)' in intro
    for name in ("convexity", "layers", "pruning", "where-to-cut"):
        assert 'href="intro.html#equation-eq-graph-convexity">(1)</a>' in (HTML / "book" / f"{name}.html").read_text(), name


# -- browser -----------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _chromium()
    if found is None:
        message = (
            "headless Chromium is needed to check the rendered book; install it with "
            "`apt-get install chromium` (Debian/Ubuntu) and re-run"
        )
        if os.environ.get("CONVEXLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _rendered_dom(chromium: str, page: Path, tmp_path: Path) -> str:
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=15000", "--dump-dom", page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.browser
@pytest.mark.parametrize("chapter", chapter_names(ROOT))
def test_chapter_renders_in_chromium(chapter, built_book, chromium, tmp_path):
    from bs4 import BeautifulSoup

    dom = BeautifulSoup(_rendered_dom(chromium, HTML / "book" / f"{chapter}.html", tmp_path), "html.parser")
    titles = _chapter_titles()

    # the page's own title, and a sidebar that lists every chapter of _toc.yml
    assert titles[chapter] in dom.title.get_text(), dom.title.get_text()
    main = dom.find("main") or dom
    assert main.find("h1") is not None and titles[chapter] in main.find("h1").get_text()
    sidebar = dom.select_one("nav.bd-docs-nav") or dom.select_one(".bd-sidebar-primary")
    assert sidebar is not None, "no sidebar"
    linked = {Path(urlparse(a["href"]).path).stem for a in sidebar.find_all("a", href=True)}
    linked.add(chapter)  # the current page may be linked as "#"
    assert set(chapter_names(ROOT)) <= linked, f"sidebar misses {set(chapter_names(ROOT)) - linked}"

    # math: every math node typeset by MathJax, no raw LaTeX left
    math_nodes = main.select(".math")
    for node in math_nodes:
        assert node.find("mjx-container") is not None, f"math not typeset: {node.get_text()[:80]}"
    text = main.get_text(" ")
    assert not re.search(r"\\\(|\\\[|\$\$|\\frac|\\sum", text), "raw LaTeX in the rendered text"

    # the page opens with prose, not with two `profile = "lite"` cells: papermill's injected copy is
    # removed, the chapter's own parameters cell is folded (closed) behind a toggle
    assert not main.select(".tag_injected-parameters"), "papermill's injected cell is on the page"
    parameters = main.select(".tag_parameters")
    assert len(parameters) == 1 and "tag_hide-cell" in parameters[0]["class"]
    folded = parameters[0].find("details")
    assert folded is not None and not folded.has_attr("open"), "the parameters cell must start folded"
    # plotting code is folded too, so that a figure follows the prose it illustrates
    for figure_cell in main.select(".cell:has(figure)"):
        assert "tag_hide-input" in figure_cell["class"], figure_cell.get_text(" ")[:80]
        assert figure_cell.select_one("details .cell_input") is not None

    # no error output cells, and figures rendered as images
    assert not main.select(".output.error, .cell_output .traceback, .output.traceback")
    assert "Traceback (most recent call last)" not in text
    for figure in main.select("figure"):
        if figure.find("img") is None:
            continue
        assert figure.find("figcaption") is not None, "every figure needs a caption"


# The reader's window: a laptop screen, where the theme shows both sidebars beside the content column.
WINDOW = (1280, 900)
# Measures in the page itself (Chromium's --dump-dom runs the page's scripts, not ours): once the
# page and MathJax have settled, open every toggle (a folded cell must fit once a reader opens
# it too), then list each element of the article whose box ends right of the content column, and
# each scrolling box (code, tables) whose content is wider than the box. The report is written
# into the DOM as JSON, where --dump-dom returns it.
_MEASURE = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
    document.querySelectorAll(".toggle-hidden").forEach(function (el) { el.classList.remove("toggle-hidden"); });
    setTimeout(function () {
      var article = document.querySelector("article.bd-article") || document.querySelector("main");
      var box = article.getBoundingClientRect(), style = getComputedStyle(article);
      var right = box.right - parseFloat(style.paddingRight);
      var found = [], reported = [];
      article.querySelectorAll("*").forEach(function (el) {
        // document order: a box inside one already reported is part of the same overflow
        if (reported.some(function (outer) { return outer.contains(el); })) return;
        var r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) return;
        var overflowX = getComputedStyle(el).overflowX;
        var scrolls = (overflowX === "auto" || overflowX === "scroll") && el.scrollWidth > el.clientWidth + 1;
        var sticksOut = r.right > right + 1;
        if (!scrolls && !sticksOut) return;
        reported.push(el);
        found.push({tag: el.tagName.toLowerCase(), cls: String(el.className).slice(0, 80),
                    excess: Math.round(scrolls ? el.scrollWidth - el.clientWidth : r.right - right),
                    text: (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 100)});
      });
      var out = document.createElement("pre");
      out.id = "convexlab-overflow";
      out.textContent = JSON.stringify({column: Math.round(right - box.left - parseFloat(style.paddingLeft)), found: found});
      document.body.appendChild(out);
    }, 500);
  }, 3000);
});
</script>
"""


def overflow_report(chromium: str, page: Path, tmp_path: Path) -> dict:
    """What on ``page`` runs past the content column at :data:`WINDOW`: ``{"column": width in px,
    "found": [{tag, cls, excess (px), text}, ...]}`` (empty ``found``: everything fits)."""
    html = page.read_text()
    # a copy of the page with the measuring script; <base> keeps its relative links pointing into the book
    probe = tmp_path / f"measure-{page.stem}.html"
    head = f'<head><base href="{page.parent.as_uri()}/">'
    probe.write_text(html.replace("<head>", head, 1).replace("</body>", _MEASURE + "</body>", 1))
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-measure'}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars",
        "--virtual-time-budget=20000", "--dump-dom", probe.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<pre id="convexlab-overflow">(.*?)</pre>', result.stdout, flags=re.S)
    assert match, "the measuring script did not run (no report in the DOM)"
    from html import unescape

    return json.loads(unescape(match.group(1)))


@pytest.mark.browser
@pytest.mark.parametrize("chapter", chapter_names(ROOT))
def test_nothing_runs_past_the_content_column(chapter, built_book, chromium, tmp_path):
    report = overflow_report(chromium, HTML / "book" / f"{chapter}.html", tmp_path)
    assert report["column"] > 500, f"the content column is implausibly narrow: {report['column']} px"
    wide = [f"<{f['tag']} class='{f['cls']}'> {f['excess']} px too wide: {f['text']!r}" for f in report["found"]]
    assert wide == [], (f"{chapter}: wider than the {report['column']} px content column at {WINDOW[0]} px:\n"
                        + "\n".join(wide))


@pytest.mark.browser
def test_index_redirects_to_the_first_chapter(built_book, chromium, tmp_path):
    dom = _rendered_dom(chromium, HTML / "index.html", tmp_path)
    first = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    assert Path(first).name in dom
