"""The documentation cannot drift: generated pages are current and the site builds strictly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from asyncsim._docgen import PAGES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("rel", sorted(PAGES))
def test_generated_reference_is_current(rel):
    committed = (ROOT / "docs" / rel).read_text(encoding="utf-8")
    assert committed == PAGES[rel](), f"docs/{rel} is stale: run `python -m asyncsim._docgen docs`"


def test_every_scenario_field_is_documented():
    text = (ROOT / "docs" / "reference" / "scenario.md").read_text()
    for key in ("`workers`", "`compute`", "`bandwidth_gbps`", "`oversubscription`", "`aggregate`", "`bound`",
                "`restart_after`", "`mtbf`", "`cost_per_worker_hour`", "`components`"):
        assert key in text


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mathjax", "mkdocstrings")),
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                          "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "theory" / "index.html").exists()
