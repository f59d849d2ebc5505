"""The built documentation: maths typeset in a browser with no network (the Theory page opened in
headless Chromium, Debian package ``chromium``, which .ci/run installs), and the API reference
generated from the docstrings."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_MISSING = [m for m in ("mkdocs", "material", "mathjax", "mkdocstrings") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"docs extra not installed ({', '.join(_MISSING)}): "
                                                       "pip install -e '.[docs]'")


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_site_serves_mathjax_itself(site):
    page = (site / "theory" / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert "../javascripts/mathjax/tex-chtml.js" in scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts  # no CDN
    assert (site / "javascripts" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000
    fonts = list((site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) >= 20
    assert page.count('class="arithmatex"') >= 20  # the formulas are there for MathJax to find


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (Debian package 'chromium'; "
                                                ".ci/run installs it)")
def test_theory_page_formulas_are_typeset_in_chromium(site, tmp_path):
    page = site / "theory" / "index.html"
    source = page.read_text(encoding="utf-8")
    n_display = source.count('<div class="arithmatex">')
    n_inline = source.count('<span class="arithmatex">')
    assert n_display >= 5 and n_inline >= 20
    # every host name resolves to nothing: a page that needed the network would fail to typeset
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    containers = re.findall(r"<mjx-container\b[^>]*>", dom)
    display = [c for c in containers if 'display="true"' in c]
    assert len(containers) == n_display + n_inline, (len(containers), n_display, n_inline)
    assert len(display) == n_display
    # the TeX source is gone from the page's text: \[ z^{\tau+1} - z^{\tau} + \alpha = 0 \] is typeset ...
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom.split("<body", 1)[1]))
    assert r"z^{\tau+1}" in source.replace("\n", " ") and r"z^{\tau+1}" not in text
    assert not re.search(r"\\\[|\\\(", text)
    # ... as MathJax's glyphs: math-italic z (U+1D467) and alpha (U+1D6FC), TeX fonts
    assert "mjx-c1D467" in dom and "mjx-c1D6FC" in dom
    assert "MathJax_Math" in dom or "TEX-I" in dom


def test_api_reference_is_generated_from_the_docstrings(site):
    import asyncsim

    page = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))
    for obj in (asyncsim.simulate, asyncsim.load_scenario, asyncsim.Trace.delay_pmf, asyncsim.Trace.summary):
        first = " ".join(obj.__doc__.strip().split(".")[0].split())
        first = re.sub(r":\w+:`~?([^`]*)`", r"\1", first).replace("``", "")
        assert first in text, first
    assert "time : float | None = None" in text  # signatures with their annotations
    assert ":class:" not in text and ":func:" not in text  # Sphinx roles shown as code
