"""tools/offline_assets.py and the vendored widget manager it copies."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools import offline_assets  # noqa: E402

VENDOR = ROOT / "assets" / "vendor" / "html-manager"


def test_vendored_html_manager_is_complete():
    names = {p.name for p in VENDOR.iterdir()}
    for required in ("embed.js", "embed.js.LICENSE.txt", "LICENSE", "README.md"):
        assert required in names
    assert not {n for n in names if n.endswith(".map") or "amd" in n}, "no source maps or AMD bundles"
    embed = (VENDOR / "embed.js").read_text(encoding="utf-8")
    fonts = set(re.findall(r"[0-9a-f]{20}\.(?:woff2|woff|ttf|eot|svg)", embed))
    assert fonts, "embed.js names no font file any more: update the check"
    assert fonts <= names, f"font files named by embed.js but not vendored: {sorted(fonts - names)}"
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert "1.0.15" in readme and "BSD-3-Clause" in readme
    assert "Redistribution and use in source and binary forms" in (VENDOR / "LICENSE").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("vl_convert")
    dest = tmp_path_factory.mktemp("offline")
    try:
        summary = offline_assets.write_offline_assets(dest)
    except RuntimeError as exc:  # sphinx-mathjax-offline missing: the [book] extra is not installed
        pytest.skip(str(exc))
    return dest, summary


def test_vega_bundle_is_wrapped_and_matches_altair(written):
    import altair as alt

    dest, summary = written
    text = (dest / "vega" / "vega-bundle.js").read_text(encoding="utf-8")
    body = text[text.index("(function () {"):]
    assert body.rstrip().splitlines()[-2] == "})();", "bundle must end its wrapping function"
    assert "window.vegaEmbed" in text
    assert f'"{alt.VEGALITE_VERSION}"' in text and summary["vega"]["vegalite"] == alt.VEGALITE_VERSION
    node = shutil.which("node")
    if node:
        subprocess.run([node, "--check", str(dest / "vega" / "vega-bundle.js")], check=True)


def test_mathjax_and_its_lazy_parts(written):
    dest, summary = written
    mj = dest / "mathjax"
    assert (mj / "tex-svg-full.js").stat().st_size > 1_000_000
    for part in ("a11y/explorer.js", "ui/menu.js", "input/tex/extensions/physics.js", "sre/mathmaps/en.json"):
        assert (mj / part).is_file(), part
    assert not (mj / "output" / "chtml").exists(), "CHTML fonts are not needed with tex-svg-full.js"


def test_html_manager_copied_with_bridge(written):
    dest, summary = written
    out = dest / "html-manager"
    served = (out / "embed.js").read_text(encoding="utf-8")
    vendored = (VENDOR / "embed.js").read_text(encoding="utf-8")
    assert served.startswith(offline_assets.MATHJAX_HUB_BRIDGE) and served.endswith(vendored)
    for f in VENDOR.iterdir():
        if f.name != "embed.js":
            assert (out / f.name).read_bytes() == f.read_bytes()
    assert summary["n_files"] > 50
