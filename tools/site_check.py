"""Open every page of the built site in headless Chromium, cut off from the network,
and count what rendered.

The site is served over http on 127.0.0.1 (a ``http.server`` in a thread, on a
free port). Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) runs
with every other host unresolvable; on top of that a route handler aborts and
records every request to a host other than 127.0.0.1 (``data:`` and ``blob:``
URLs are local). For each page it counts:

- outside requests (must be zero) and local requests that failed (404, ...);
- Vega charts drawn (``.vega-embed`` holding ``svg.marks`` or a ``canvas``) out of
  the Altair outputs on the page, and chart error messages;
- MathJax output (``mjx-container``), MathJax errors (``mjx-merror``) and maths
  elements still holding raw TeX (``\\(``, ``\\[`` or ``$$``);
- saved widget views (``script[type="application/vnd.jupyter.widget-view+json"]``)
  and how many of them the html-manager drew;
- console errors and uncaught exceptions, except the known, harmless one (see
  :data:`IGNORED_CONSOLE`).

Usage::

    python tools/site_check.py _build/html [--json _build/site_check.json] [--screenshots DIR]

Exit status 0 when no problem was found, 1 otherwise, 2 when the check could not
run (no such folder, no browser).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
CHAPTER_DIRS = ("memory", "compression", "generalization", "positional", "continual")
LOCAL_HOST = "127.0.0.1"
LOCAL_SCHEMES = ("data", "blob", "about")

#: Console messages that are known and harmless, with the reason. This one only:
#: sphinx-thebe writes its inline configuration script (``const THEBE_JS_URL = ...``)
#: twice into every page, so the second copy throws "Identifier 'THEBE_JS_URL' has
#: already been declared". The first copy has already set the values, and thebe is
#: never started on this site (no "live code" button), so nothing is lost.
IGNORED_CONSOLE = (
    (re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),
     "sphinx-thebe declares THEBE_JS_URL twice (known, harmless)"),
)

# Pages in these folders of the built site are assets, not pages of the book.
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads", "_sphinx_design_static"}

_WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
_CHART_BOX = '.companion-chart, [id^="altair-viz-"]'

# Is the page done? Charts drawn or failed, widget views drawn, maths typeset.
_READY_JS = """() => {
  const boxes = [...document.querySelectorAll('%(box)s')];
  const charts = boxes.every(b => b.querySelector('svg.marks, svg .marks, canvas, .error'));
  const views = [...document.querySelectorAll('%(view)s')];
  const widgets = views.every(s => {
    const p = s.parentElement;
    return p && (p.querySelector('.jupyter-widgets, .widget-subarea > *') !== null);
  });
  const maths = [...document.querySelectorAll('.math')];
  const math = maths.every(m => m.querySelector('mjx-container, mjx-merror'));
  return charts && widgets && math;
}""" % {"box": _CHART_BOX, "view": _WIDGET_VIEW}

# What rendered on the page.
_PROBE_JS = r"""() => {
  const out = {};
  const boxes = new Set(document.querySelectorAll('%(box)s'));
  document.querySelectorAll('.vega-embed').forEach(e => {
    if (![...boxes].some(b => b.contains(e) || e.contains(b))) boxes.add(e);
  });
  out.charts_expected = boxes.size;
  out.charts_drawn = 0;
  out.chart_errors = [];
  boxes.forEach(b => {
    const drawn = b.querySelector('.vega-embed svg.marks, .vega-embed svg .marks, .vega-embed canvas')
      || (b.classList.contains('vega-embed') && b.querySelector('svg.marks, svg .marks, canvas'));
    const err = b.querySelector('.error, .companion-chart-error');
    if (drawn && !err) out.charts_drawn += 1;
    if (err) out.chart_errors.push(err.textContent.trim().slice(0, 300));
  });
  out.mjx_containers = document.querySelectorAll('mjx-container').length;
  out.math_errors = [...document.querySelectorAll('mjx-merror')]
    .map(e => (e.getAttribute('data-mjx-error') || e.textContent || '').slice(0, 200));
  const maths = [...document.querySelectorAll('.math')];
  out.math_elements = maths.length;
  out.raw_tex = [];
  maths.forEach(m => {
    if (m.querySelector('mjx-container')) return;
    const t = m.textContent;
    if (t.includes('\\(') || t.includes('\\[') || t.includes('$$')) out.raw_tex.push(t.trim().slice(0, 120));
  });
  const views = [...document.querySelectorAll('%(view)s')];
  out.widget_views = views.length;
  out.widget_views_rendered = 0;
  out.widget_errors = [];
  views.forEach(s => {
    const p = s.parentElement;
    const w = p && p.querySelector('.jupyter-widgets, .widget-subarea > *');
    const text = w ? w.textContent : '';
    if (w && text.includes('Error displaying widget')) out.widget_errors.push(text.slice(0, 200));
    else if (w && (w.childElementCount > 0 || w.querySelector('[class*="widget-"]'))) out.widget_views_rendered += 1;
  });
  out.widget_elements = document.querySelectorAll('.jupyter-widgets').length;
  out.title = document.title;
  return out;
}""" % {"box": _CHART_BOX, "view": _WIDGET_VIEW}


_EMPTY_PROBE = dict(
    charts_expected=0, charts_drawn=0, chart_errors=[], mjx_containers=0, math_errors=[],
    math_elements=0, raw_tex=[], widget_views=0, widget_views_rendered=0, widget_errors=[],
    widget_elements=0, title="",
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 at a free port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer((LOCAL_HOST, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="site-check-http", daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL_HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def find_pages(html_dir: Path) -> list[str]:
    """Paths (relative, with ``/``) of the site's HTML pages, assets excluded."""
    pages = []
    for p in sorted(html_dir.rglob("*.html")):
        rel = p.relative_to(html_dir)
        if rel.parts[0] in SKIP_DIRS or any(part.startswith(".") for part in rel.parts):
            continue
        pages.append(rel.as_posix())
    return pages


def is_chapter_page(rel: str, chapter_dirs=CHAPTER_DIRS) -> bool:
    parts = rel.split("/")
    return len(parts) >= 3 and parts[0] == "book" and parts[1] in chapter_dirs


_REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*url=([^"'>\s]+)""", re.I)


def redirect_target(path: Path) -> str | None:
    """Target of a page that only redirects (``<meta http-equiv="refresh">``), else None."""
    head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    m = _REFRESH.search(head)
    return m.group(1) if m else None


def _ignored(text: str) -> str | None:
    for pattern, reason in IGNORED_CONSOLE:
        if pattern.search(text):
            return reason
    return None


def _page_problems(d: dict) -> list[str]:
    probs = []
    if d.get("load_error"):
        probs.append(f"page did not load: {d['load_error']}")
    if d["outside_requests"]:
        probs.append(f"{len(d['outside_requests'])} request(s) to other hosts: {d['outside_requests'][:3]}")
    if d["local_failures"]:
        probs.append(f"{len(d['local_failures'])} local request(s) failed: {d['local_failures'][:3]}")
    if d["console_errors"]:
        probs.append(f"{len(d['console_errors'])} console error(s): {d['console_errors'][:3]}")
    if d.get("redirect"):
        return probs
    if d["chart_errors"]:
        probs.append(f"chart error(s): {d['chart_errors'][:3]}")
    if d["charts_drawn"] < d["charts_expected"]:
        probs.append(f"{d['charts_expected'] - d['charts_drawn']} of {d['charts_expected']} chart(s) not drawn")
    if d["raw_tex"]:
        probs.append(f"{len(d['raw_tex'])} maths element(s) left as raw TeX: {d['raw_tex'][:3]}")
    if d["math_errors"]:
        probs.append(f"MathJax error(s): {d['math_errors'][:3]}")
    if d["math_elements"] and not d["mjx_containers"]:
        probs.append("page holds maths but MathJax rendered none")
    if d["widget_errors"]:
        probs.append(f"widget error(s): {d['widget_errors'][:3]}")
    if d["widget_views_rendered"] < d["widget_views"]:
        probs.append(f"{d['widget_views'] - d['widget_views_rendered']} of {d['widget_views']} saved widget view(s) not drawn")
    if d["chapter"]:
        if d["charts_drawn"] < 1:
            probs.append("chapter page draws no chart")
        if d["mjx_containers"] < 1:
            probs.append("chapter page renders no maths")
    return probs


def check_site(
    html_dir,
    *,
    chapter_dirs=CHAPTER_DIRS,
    pages: list[str] | None = None,
    chromium: str = CHROMIUM,
    timeout_ms: int = 30_000,
    render_wait_ms: int = 10_000,
    settle_ms: int = 300,
    screenshot_dir=None,
) -> dict:
    """Open every page of ``html_dir`` offline in Chromium and count what rendered.

    Parameters
    ----------
    html_dir : path
        The built site (``_build/html``).
    chapter_dirs : sequence of str
        Pages under ``book/<one of these>/`` are chapter pages: each must draw at
        least one chart and render maths.
    pages : list of str, optional
        Only these pages (paths relative to ``html_dir``); default all.
    chromium : str
        Browser executable.
    timeout_ms : int
        Page load limit (until the network is idle).
    render_wait_ms : int
        How long to wait, after loading, for charts, maths and widgets to appear.
    settle_ms : int
        Extra wait after they appeared (or the wait ran out).
    screenshot_dir : path, optional
        Save a full-page PNG of every page there.

    Returns
    -------
    dict
        ``{"ok", "html_dir", "n_pages", "totals": {...}, "pages": {rel: {...}},
        "problems": [...]}``; ``ok`` is True when ``problems`` is empty.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    html_dir = Path(html_dir).resolve()
    if not html_dir.is_dir():
        raise FileNotFoundError(f"no built site at {html_dir}")
    if not Path(chromium).is_file():
        raise FileNotFoundError(f"no Chromium at {chromium} (apt-get install chromium)")
    rel_pages = find_pages(html_dir) if pages is None else list(pages)
    if not rel_pages:
        raise FileNotFoundError(f"no HTML pages under {html_dir}")
    shots = Path(screenshot_dir) if screenshot_dir else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    started = time.monotonic()
    with serve(html_dir) as base, sync_playwright() as pw:
        port = urlsplit(base).port
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(service_workers="block", viewport={"width": 1280, "height": 900})
        current: dict = {}

        def is_local(url: str) -> bool:
            parts = urlsplit(url)
            if parts.scheme in LOCAL_SCHEMES:
                return True
            return parts.hostname == LOCAL_HOST and parts.port == port

        def route(r):
            url = r.request.url
            if is_local(url):
                r.continue_()
            else:
                current.setdefault("outside", []).append(url)
                r.abort("blockedbyclient")

        context.route("**/*", route)

        for rel in rel_pages:
            current.clear()
            d = {
                "chapter": is_chapter_page(rel, chapter_dirs),
                "redirect": None,
                "outside_requests": [],
                "local_failures": [],
                "console_errors": [],
                "console_ignored": [],
                **{k: (list(v) if isinstance(v, list) else v) for k, v in _EMPTY_PROBE.items()},
            }
            if not (html_dir / rel).is_file():
                d["load_error"] = "no such page"
                d["problems"] = _page_problems(d)
                results[rel] = d
                continue
            target = redirect_target(html_dir / rel)
            if target is not None:
                # A bare redirect (Jupyter Book writes index.html so): not opened, since
                # the browser would only show the target page again; its target must exist.
                d["redirect"] = target
                dest = (html_dir / rel).parent / target.split("#")[0].split("?")[0]
                if "://" in target or not dest.is_file():
                    d["load_error"] = f"redirects to {target}, which is not a page of the site"
                d["problems"] = _page_problems(d)
                results[rel] = d
                continue
            page = context.new_page()

            def on_console(msg, d=d):
                if msg.type != "error":
                    return
                text = msg.text
                loc = (msg.location or {}).get("url", "")
                reason = _ignored(text)
                if reason is None and "ERR_BLOCKED_BY_CLIENT" in text:
                    reason = "blocked outside request (counted in outside_requests)"
                if reason is None and "Failed to load resource" in text and loc and not is_local(loc):
                    reason = "blocked outside request (counted in outside_requests)"
                if reason is None and "Failed to load resource" in text:
                    reason = "failed local request (counted in local_failures)"
                entry = f"{text} [{loc}]" if loc else text
                (d["console_ignored"] if reason else d["console_errors"]).append(
                    {"text": entry[:500], "reason": reason} if reason else entry[:500]
                )

            def on_pageerror(err, d=d):
                text = f"uncaught: {err}"
                reason = _ignored(text)
                if reason:
                    d["console_ignored"].append({"text": text[:500], "reason": reason})
                else:
                    d["console_errors"].append(text[:500])

            def on_response(resp, d=d):
                if resp.status >= 400 and is_local(resp.url):
                    d["local_failures"].append(f"{resp.status} {resp.url[len(base) - 1:]}")

            def on_failed(req, d=d):
                if is_local(req.url) and not req.url.startswith(("data:", "blob:")):
                    d["local_failures"].append(f"{req.failure} {req.url[len(base) - 1:]}")

            page.on("console", on_console)
            page.on("pageerror", on_pageerror)
            page.on("response", on_response)
            page.on("requestfailed", on_failed)
            t0 = time.monotonic()
            try:
                resp = page.goto(base + rel, wait_until="networkidle", timeout=timeout_ms)
                if resp is not None and resp.status >= 400:
                    d["load_error"] = f"HTTP {resp.status}"
            except PlaywrightError as exc:
                d["load_error"] = str(exc).splitlines()[0][:300]
            if not d.get("load_error"):
                try:
                    page.wait_for_function(_READY_JS, timeout=render_wait_ms, polling=100)
                    d["rendered_in_time"] = True
                except PlaywrightError:
                    d["rendered_in_time"] = False
                page.wait_for_timeout(settle_ms)
            try:
                d.update(page.evaluate(_PROBE_JS))
            except PlaywrightError as exc:
                d["load_error"] = d.get("load_error") or f"probe failed: {str(exc).splitlines()[0][:300]}"
            if shots and not d.get("load_error"):
                name = rel.replace("/", "__").removesuffix(".html") + ".png"
                page.screenshot(path=str(shots / name), full_page=True)
                d["screenshot"] = str(shots / name)
            d["seconds"] = round(time.monotonic() - t0, 2)
            d["outside_requests"] = sorted(set(current.get("outside", [])))
            seen: set[str] = set()
            failures = []
            for f in d["local_failures"]:  # one entry per URL (a 404 is also reported as aborted)
                url = f.split(" ", 1)[-1]
                if url not in seen and not url.startswith("/favicon.ico"):
                    seen.add(url)
                    failures.append(f)
            d["local_failures"] = failures
            page.close()
            d["problems"] = _page_problems(d)
            results[rel] = d

        context.close()
        browser.close()

    totals = {
        "pages": len(results),
        "chapter_pages": sum(d["chapter"] for d in results.values()),
        "outside_requests": sum(len(d["outside_requests"]) for d in results.values()),
        "local_failures": sum(len(d["local_failures"]) for d in results.values()),
        "charts_expected": sum(d["charts_expected"] for d in results.values()),
        "charts_drawn": sum(d["charts_drawn"] for d in results.values()),
        "chart_errors": sum(len(d["chart_errors"]) for d in results.values()),
        "mjx_containers": sum(d["mjx_containers"] for d in results.values()),
        "math_errors": sum(len(d["math_errors"]) for d in results.values()),
        "raw_tex": sum(len(d["raw_tex"]) for d in results.values()),
        "pages_with_math": sum(bool(d["math_elements"] or d["mjx_containers"]) for d in results.values()),
        "widget_views": sum(d["widget_views"] for d in results.values()),
        "widget_views_rendered": sum(d["widget_views_rendered"] for d in results.values()),
        "console_errors": sum(len(d["console_errors"]) for d in results.values()),
        "console_ignored": sum(len(d["console_ignored"]) for d in results.values()),
        "pages_with_problems": sum(bool(d["problems"]) for d in results.values()),
        "seconds": round(time.monotonic() - started, 1),
    }
    problems = [f"{rel}: {p}" for rel, d in results.items() for p in d["problems"]]
    return {
        "ok": not problems,
        "html_dir": str(html_dir),
        "n_pages": len(results),
        "totals": totals,
        "problems": problems,
        "pages": results,
    }


def summary_text(result: dict) -> str:
    t = result["totals"]
    lines = [
        f"Site check of {result['html_dir']}: {t['pages']} page(s), {t['chapter_pages']} chapter page(s), {t['seconds']} s",
        f"  outside requests      {t['outside_requests']}",
        f"  local failures        {t['local_failures']}",
        f"  charts drawn          {t['charts_drawn']} / {t['charts_expected']}  (errors: {t['chart_errors']})",
        f"  maths rendered        {t['mjx_containers']} mjx-container(s) on {t['pages_with_math']} page(s)"
        f"  (raw TeX left: {t['raw_tex']}, MathJax errors: {t['math_errors']})",
        f"  widget views drawn    {t['widget_views_rendered']} / {t['widget_views']}",
        f"  console errors        {t['console_errors']}  (ignored as known: {t['console_ignored']})",
        "",
        f"  {'page':<52} {'charts':>7} {'mjx':>5} {'widgets':>8} {'out':>4} {'err':>4}",
    ]
    for rel, d in result["pages"].items():
        mark = "!" if d["problems"] else " "
        lines.append(
            f"{mark} {rel[:52]:<52} {d['charts_drawn']:>3}/{d['charts_expected']:<3} {d['mjx_containers']:>5} "
            f"{d['widget_views_rendered']:>3}/{d['widget_views']:<4} {len(d['outside_requests']):>4} "
            f"{len(d['console_errors']):>4}"
        )
    if result["problems"]:
        lines += ["", f"PROBLEMS ({len(result['problems'])}):"] + [f"  - {p}" for p in result["problems"]]
    else:
        lines += ["", "No problem found."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built site offline in headless Chromium.")
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--json", type=Path, help="write the full result as JSON here")
    parser.add_argument("--screenshots", type=Path, help="save a full-page PNG of every page here")
    parser.add_argument("--page", action="append", help="check only this page (relative path); repeatable")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    try:
        result = check_site(args.html_dir, pages=args.page, chromium=args.chromium,
                            screenshot_dir=args.screenshots)
    except (FileNotFoundError, ImportError) as exc:
        print(f"site_check: {exc}", file=sys.stderr)
        return 2
    print(summary_text(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
