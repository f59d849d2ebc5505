"""mkdocs hook: serve MathJax from the installed ``django-static-mathjax`` package.

The docs extra installs that package (MathJax 3's own files, no Django
needed); this hook adds the one script the pages load and its fonts to the
site, so neither ``mkdocs build`` nor a reader's browser reaches the network.
``pymdownx.arithmatex`` (generic mode) wraps each formula in ``\\(...\\)`` or
``\\[...\\]`` inside ``<span|div class="arithmatex">``; MathJax typesets those
(configuration: ``docs/javascripts/mathjax-config.js``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

#: where the files land in the site (mkdocs.yml's extra_javascript names the script)
SITE_DIR = "javascripts/mathjax"
#: the TeX-input, CommonHTML-output bundle and the fonts it loads relative to itself
WANTED = ("tex-chtml.js", "output/chtml/fonts/woff-v2")


def mathjax_es5_dir() -> Path:
    """The ``es5`` folder of the installed MathJax (PluginError if it is not installed)."""
    spec = importlib.util.find_spec("mathjax")
    root = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    es5 = root / "static" / "mathjax" / "es5" if root else None
    if es5 is None or not (es5 / WANTED[0]).is_file():
        raise PluginError("the docs render maths with MathJax from the 'django-static-mathjax' package, "
                          "which is not installed: pip install -e '.[docs]'")
    return es5


def on_files(files, config):
    es5 = mathjax_es5_dir()
    for want in WANTED:
        src = es5 / want
        for path in sorted(src.rglob("*")) if src.is_dir() else [src]:
            if path.is_file():
                rel = path.relative_to(es5).as_posix()
                files.append(File.generated(config, f"{SITE_DIR}/{rel}", abs_src_path=str(path)))
    return files
