r"""The documentation site: it builds with warnings as errors, and a browser sees typeset math and working links.

What is checked, in order:

1. ``python -m sphinx -E -W --keep-going -b html docs docs/_build/html`` (the
   README's command) exits 0: no warning anywhere, docstrings included.
2. Every internal link of every built page resolves: the target file exists
   and, when the link has a ``#fragment``, the target page has that id
   (static check of the HTML; no browser needed).
3. Every function named in the equation table of docs/math.md links to its
   API entry.
4. In headless Chromium (Debian's ``chromium`` with ``chromedriver``, driven
   by Selenium), the math, derivations, theory and API pages are opened from
   a loopback HTTP server; MathJax (shipped by a Python package, no network)
   must have typeset every formula without an error, no raw TeX may remain in
   the visible text outside code, every link the browser sees on those pages
   must resolve, and every resource the page loaded (scripts, styles, fonts)
   must come from the site itself (it works offline).  A screenshot of each page is saved under
   ``docs/_build/screenshots/`` (see :data:`SCREENSHOTS`).

Only step 4 needs a browser; it is skipped, with the reason, when no Chromium
or chromedriver is installed.  ``.ci/run`` installs both with apt-get.  The
Python tools (Sphinx and its extensions, Selenium) come with the ``test``
extra, so their absence is a failure, not a skip.
"""

from __future__ import annotations

import functools
import importlib.util
import html.parser
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "docs" / "_build" / "html"
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
BUILD_CMD = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html"]

#: Pages the browser opens (relative to the site root), and whether each must hold math.
BROWSER_PAGES = {
    "index.html": False,
    "derivations.html": True,
    "math.html": True,
    "theory.html": True,
    "api/policy.html": True,
    "api/trpo.html": True,
    "api/tabular.html": True,
    "glossary.html": True,
    "experiments.html": False,
    "presets.html": False,
    "architecture.html": False,
}

#: TeX that must never reach the reader as text (outside code blocks).
RAW_TEX = re.compile(r"\\(frac|theta|sum|mathrm|hat|bar|nabla|sqrt|left|right|begin|end|pi|lambda|delta|top|cdot|log|alpha|beta)\b"
                     r"|\$\$|\\\(|\\\[|[_^]\{|\$[^\s$][^$\n]{0,80}\$")


@pytest.mark.parametrize("text, raw", [
    (r"the step \frac{1}{2} x", True), ("where $x$ is", True), ("$$F = J^T M J$$", True),
    (r"\(a + b\)", True), ("x_{k+1}", True), (r"\theta_{old}", True),
    ("θ_old = 0.5, β ≈ 0.14, ½ xᵀFx", False), ("costs 5 $ per run", False), ("a_b and x^2", False),
])
def test_raw_tex_detector__flags_tex_and_spares_unicode(text, raw):
    """The detector the browser check relies on (no browser needed)."""
    assert bool(RAW_TEX.search(text)) is raw


@pytest.fixture(scope="module")
def site() -> Path:
    """Build the site once for this module (about 20 s on one core)."""
    if importlib.util.find_spec("sphinx") is None:  # the test extra installs the docs tools: missing is an error
        pytest.fail("Sphinx is not installed: pip install -e '.[test]' (which includes the docs extra)")
    t0 = time.perf_counter()
    proc = subprocess.run(BUILD_CMD, cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, f"sphinx build failed (warnings are errors):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert (HTML / "index.html").is_file()
    print(f"site built in {elapsed:.1f} s")
    return HTML


def test_readme__gives_the_build_command_this_test_runs():
    """The README's one command is the build this module runs (plus -E -q: a fresh, quiet build)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "python -m sphinx -W --keep-going -b html docs docs/_build/html"
    assert command in readme
    assert [a for a in BUILD_CMD[1:] if a not in ("-E", "-q")] == command.split()[1:]


# ------------------------------------------------------------ static checks
class _Page(html.parser.HTMLParser):
    """The ids and the link targets of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if tag in ("a", "link", "img", "script") and a.get(key):
                self.links.append(a[key])


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _broken_links(root: Path, page_path: Path, links) -> list[str]:
    broken = []
    for link in links:
        url = urlparse(link)
        if url.scheme or link.startswith("//") or link.startswith("mailto:"):
            continue  # external links are not followed (the site is read offline)
        target, frag = urldefrag(link)
        target = target.split("?")[0]
        dest = (page_path.parent / unquote(target)).resolve() if target else page_path
        if dest.is_dir():
            dest = dest / "index.html"
        if not dest.is_file():
            broken.append(f"{page_path.relative_to(root)}: {link} (no file)")
            continue
        if frag and dest.suffix == ".html" and unquote(frag) not in _parse(dest).ids:
            broken.append(f"{page_path.relative_to(root)}: {link} (no id {frag!r})")
    return broken


def test_site__every_internal_link_resolves(site):
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    assert len(pages) >= 20
    broken = [b for p in pages for b in _broken_links(site, p, _parse(p).links)]
    assert not broken, "broken internal links:\n" + "\n".join(broken[:50])


def test_site__equation_table_links_every_function_to_its_api_entry(site):
    text = (site / "math.html").read_text(encoding="utf-8")
    table = text[text.index('id="the-table"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr.*?</tr>", table, re.S)[1:]
    assert len(rows) >= 20
    for row in rows:
        cells = re.findall(r"<td.*?</td>", row, re.S)
        assert len(cells) == 4, row
        links = re.findall(r'<a class="reference internal" href="(api/[\w.]+\.html#trpo_ref\.[\w.]+)"', cells[1])
        names = re.findall(r"trpo_ref\.[\w.]+", re.sub(r"<[^>]+>", "", cells[1]))
        assert links and len(links) == len(names), f"a function in this row is not linked to the API: {names}"
        for link in links:
            page, frag = link.split("#")
            assert frag in _parse(site / page).ids, link


def test_site__math_is_written_for_mathjax_and_mathjax_is_shipped(site):
    """The math pages carry TeX for MathJax, and MathJax itself is in the build (no CDN)."""
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for page in ("math.html", "derivations.html", "theory.html", "api/policy.html"):
        text = (site / page).read_text(encoding="utf-8")
        assert 'class="math' in text, page
        assert not re.search(r'<script[^>]+src="(https?:)?//', text), f"{page} loads a script from the network"


# ------------------------------------------------------------ the browser
def _find_browser() -> tuple[str, str] | None:
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found = _find_browser()
    if found is None:
        pytest.skip("no browser: Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


_TYPESET = """
const done = arguments[arguments.length - 1];
function collect(mathjax) {
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, .highlight, script, style, mjx-assistive-mml, .headerlink').forEach(e => e.remove());
  const holder = document.createElement('div');
  holder.style.position = 'absolute'; holder.style.left = '-99999px';
  holder.appendChild(clone); document.body.appendChild(holder);
  const text = clone.innerText; holder.remove();
  return {mathjax: mathjax,
          n_math: document.querySelectorAll('mjx-container').length,
          n_errors: document.querySelectorAll('mjx-merror, mjx-container [data-mjx-error]').length,
          n_unrendered: Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container')).length,
          text: text,
          links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
          resources: performance.getEntriesByType('resource').map(r => r.name)};
}
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done(collect(false)); }
else { MathJax.startup.promise.then(() => done(collect(true))).catch(err => done({mathjax: true, failure: String(err)})); }
"""


@pytest.mark.parametrize("page", list(BROWSER_PAGES))
def test_site__browser_sees_typeset_math_and_working_links(page, site, server, browser):
    browser.get(urljoin(server, page))
    result = browser.execute_async_script(_TYPESET)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000, f"screenshot {shot} is nearly empty"
    if BROWSER_PAGES[page]:  # a second picture, scrolled to the first displayed equation
        browser.execute_script("const m = document.querySelector('mjx-container[display=\"true\"]') || "
                               "document.querySelector('mjx-container'); if (m) m.scrollIntoView({block: 'center'});")
        browser.save_screenshot(str(shot.with_name(shot.stem + "_math.png")))
    assert "failure" not in result, f"{page}: MathJax failed: {result.get('failure')}"
    if BROWSER_PAGES[page]:
        assert result["mathjax"], f"{page}: MathJax did not load"
        assert result["n_math"] >= 5, f"{page}: only {result['n_math']} typeset formulas"
    assert result["n_errors"] == 0, f"{page}: {result['n_errors']} formulas have TeX errors"
    assert result["n_unrendered"] == 0, f"{page}: {result['n_unrendered']} math elements were not typeset"
    foreign = [r for r in result["resources"] if not r.startswith(server)]
    assert not foreign, f"{page}: the page loaded resources from outside the site (it must work offline): {foreign}"
    raw = sorted({m.group(0) for m in RAW_TEX.finditer(result["text"])})
    assert not raw, f"{page}: raw TeX in the visible text: {raw}"
    broken = []
    for link in result["links"]:
        if not link.startswith(server):
            continue  # external: not followed
        url = urlparse(link)
        dest = site / unquote(url.path.lstrip("/"))
        if dest.is_dir():
            dest = dest / "index.html"
        if not dest.is_file():
            broken.append(f"{link} (no file)")
        elif url.fragment and dest.suffix == ".html" and unquote(url.fragment) not in _parse(dest).ids:
            broken.append(f"{link} (no id {url.fragment!r})")
    assert not broken, f"{page}: broken links seen by the browser:\n" + "\n".join(broken)
