"""The built site renders everything with the network cut off.

Opens every page of ``_build/html`` in headless Chromium (tools/site_check.py), with
every host but 127.0.0.1 unreachable, and checks that no page asks for anything
from outside, that chapter pages draw their charts and typeset their maths, and
that saved widgets are drawn. The counts go to ``_build/site_check.json``.

Skipped when the site has not been built (``make book`` builds it), unless the
environment sets ``COMPANION_REQUIRE_SITE=1`` (CI after a build), which turns a
missing site, browser or Playwright into a failure.
"""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools.site_check import CHAPTER_DIRS, CHROMIUM, check_site, summary_text  # noqa: E402

# COMPANION_SITE_DIR checks another build (e.g. a throwaway book); the report goes beside it.
SITE = Path(os.environ.get("COMPANION_SITE_DIR") or ROOT / "_build" / "html").resolve()
REPORT = SITE.parent / "site_check.json"
REQUIRE = os.environ.get("COMPANION_REQUIRE_SITE") == "1"


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (COMPANION_REQUIRE_SITE=1)")
    pytest.skip(f"{reason}; set COMPANION_REQUIRE_SITE=1 to make this a failure")


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        _unavailable(f"no built site at {SITE} (build it with `make book`)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    result = check_site(SITE, chapter_dirs=CHAPTER_DIRS)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(summary_text(result))
    return result


def _pages(site, pred=lambda d: True):
    return {rel: d for rel, d in site["pages"].items() if pred(d)}


def _fmt(bad: dict) -> str:
    return "\n".join(f"  {rel}: {why}" for rel, why in bad.items())


def test_no_page_requests_another_host(site):
    bad = {rel: d["outside_requests"] for rel, d in site["pages"].items() if d["outside_requests"]}
    assert not bad, "pages requested other hosts (the site must work offline):\n" + _fmt(bad)


def test_every_local_asset_exists(site):
    bad = {rel: d["local_failures"] for rel, d in site["pages"].items() if d["local_failures"]}
    assert not bad, "pages asked for files the site lacks:\n" + _fmt(bad)


def test_every_page_loads(site):
    bad = {rel: d["load_error"] for rel, d in site["pages"].items() if d.get("load_error")}
    assert not bad, "pages did not load:\n" + _fmt(bad)


def test_there_are_chapter_pages(site):
    chapters = _pages(site, lambda d: d["chapter"])
    assert chapters, f"no page under book/<{'|'.join(CHAPTER_DIRS)}>/ in the site"


def test_chapter_pages_draw_charts(site):
    bad = {}
    for rel, d in _pages(site, lambda d: d["chapter"]).items():
        if d["chart_errors"]:
            bad[rel] = f"vega-embed error(s): {d['chart_errors'][:2]}"
        elif d["charts_drawn"] < 1:
            bad[rel] = f"no chart drawn ({d['charts_expected']} Altair output(s) on the page)"
    assert not bad, "chapter pages without a working chart:\n" + _fmt(bad)


def test_no_chart_fails_anywhere(site):
    bad = {
        rel: f"{d['charts_drawn']}/{d['charts_expected']} drawn, errors {d['chart_errors'][:2]}"
        for rel, d in site["pages"].items()
        if d["chart_errors"] or d["charts_drawn"] < d["charts_expected"]
    }
    assert not bad, "charts not drawn:\n" + _fmt(bad)


def test_chapter_pages_render_maths(site):
    bad = {}
    for rel, d in _pages(site, lambda d: d["chapter"]).items():
        if d["mjx_containers"] < 1:
            bad[rel] = "no maths rendered by MathJax"
        elif d["raw_tex"] or d["math_errors"]:
            bad[rel] = f"raw TeX {d['raw_tex'][:2]}, MathJax errors {d['math_errors'][:2]}"
    assert not bad, "chapter pages whose maths did not render:\n" + _fmt(bad)


def test_every_page_with_maths_renders_it(site):
    bad = {
        rel: f"{d['mjx_containers']} rendered, raw TeX {d['raw_tex'][:2]}, errors {d['math_errors'][:2]}"
        for rel, d in site["pages"].items()
        if (d["math_elements"] and not d["mjx_containers"]) or d["raw_tex"] or d["math_errors"]
    }
    assert not bad, "maths left unrendered:\n" + _fmt(bad)


def test_every_saved_widget_renders(site):
    bad = {
        rel: f"{d['widget_views_rendered']} of {d['widget_views']} drawn, errors {d['widget_errors'][:2]}"
        for rel, d in site["pages"].items()
        if d["widget_views_rendered"] < d["widget_views"] or d["widget_errors"]
    }
    assert not bad, "saved widget views not drawn:\n" + _fmt(bad)


def test_no_console_errors(site):
    bad = {rel: d["console_errors"][:3] for rel, d in site["pages"].items() if d["console_errors"]}
    assert not bad, "console errors (known harmless ones are ignored in tools/site_check.py):\n" + _fmt(bad)
