"""companion.viz: the offline-first renderer and the chart helpers."""

import doctest
import json
import re

import altair as alt
import numpy as np
import pandas as pd
import pytest

from companion import viz


@pytest.fixture(autouse=True)
def _restore_renderer():
    before = alt.renderers.active
    yield
    alt.renderers.enable(before)


@pytest.fixture
def runs():
    steps = np.arange(1, 11)
    return pd.concat(
        [pd.DataFrame({"step": steps, "loss": 2.0 / (steps * w), "width": w, "model": f"w{w}"}) for w in (1, 2, 4)],
        ignore_index=True,
    )


def _html(chart):
    bundle = chart._repr_mimebundle_()
    if isinstance(bundle, tuple):  # (data, metadata)
        bundle = bundle[0]
    return bundle["text/html"]


def _spec_in(html):
    m = re.search(r"\}\)\((\{.*\}), (\{.*\})\);\s*</script>", html, re.S)
    assert m, "spec not found in the renderer output"
    return json.loads(m.group(1)), json.loads(m.group(2))


# ------------------------------------------------------------------ renderer


def test_renderer_output_has_hook_spec_and_cdn_fallback(runs):
    viz.enable_offline_renderer()
    assert alt.renderers.active == viz.RENDERER_NAME
    chart = viz.line_chart(runs, "step", "loss", "model")
    html = _html(chart)
    assert "window.vegaEmbed" in html
    assert 'script[src*="vega-bundle.js"]' in html
    assert f"https://cdn.jsdelivr.net/npm/vega-lite@{alt.VEGALITE_VERSION}" in html
    spec, options = _spec_in(html)
    assert spec == json.loads(json.dumps(chart.to_dict()))
    assert options["mode"] == "vega-lite"
    assert options["actions"]["editor"] is False  # no link that needs the network


def test_renderer_is_idempotent_and_gives_unique_divs(runs):
    assert viz.enable_offline_renderer() is None
    viz.enable_offline_renderer()
    assert alt.renderers.active == viz.RENDERER_NAME
    chart = viz.line_chart(runs, "step", "loss", "model")
    ids = {re.search(r'id="(altair-viz-[0-9a-f]+)"', _html(chart)).group(1) for _ in range(3)}
    assert len(ids) == 3


def test_renderer_embed_options(runs):
    viz.enable_offline_renderer(embed_options={"actions": False})
    _, options = _spec_in(_html(viz.line_chart(runs, "step", "loss", "model")))
    assert options["actions"] is False
    viz.enable_offline_renderer()
    _, options = _spec_in(_html(viz.line_chart(runs, "step", "loss", "model")))
    assert options["actions"]["export"] is True
    with pytest.raises(TypeError):
        viz.enable_offline_renderer(embed_options=["actions"])


def test_offline_html(runs):
    html = viz.offline_html(viz.heatmap(runs, "step", "model", "loss"))
    assert "window.vegaEmbed" in html and '"mark": {"type": "rect"}' in html
    with pytest.raises(TypeError):
        viz.offline_html({"mark": "point"})


def test_docstring_examples_run():
    result = doctest.testmod(viz)
    assert result.attempted > 5 and result.failed == 0


# ------------------------------------------------------------------ helpers


def test_line_chart_spec(runs):
    spec = viz.line_chart(runs, "step", "loss", "model", title="Loss", log_x=True, log_y=True,
                          tooltip=["model", "loss"]).to_dict()  # to_dict() validates the schema
    assert spec["mark"]["type"] == "line"
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    (param,) = spec["params"]
    assert param["select"]["type"] == "point" and param["bind"] == "legend"
    assert param["select"]["fields"] == ["model"]
    assert spec["encoding"]["opacity"]["condition"]["param"] == param["name"]
    assert [t["field"] for t in spec["encoding"]["tooltip"]] == ["model", "loss"]
    assert spec["title"]["text"] == "Loss"


def test_line_chart_numeric_series_get_a_symbol_legend(runs):
    spec = viz.line_chart(runs, "step", "loss", "width").to_dict()
    assert spec["encoding"]["color"]["type"] == "ordinal"


def test_slider_chart_with_even_integer_steps(runs):
    spec = viz.slider_chart(runs.assign(width=runs.width.map({1: 8, 2: 16, 4: 24})), "step", "loss", "width",
                            color="model", title="t").to_dict()
    (param,) = spec["params"]
    assert param["bind"]["input"] == "range"
    assert (param["bind"]["min"], param["bind"]["max"], param["bind"]["step"], param["value"]) == (8, 24, 8, 8)
    assert spec["transform"][0]["filter"] == f"(datum['width'] === {param['name']})"
    assert spec["encoding"]["color"]["field"] == "model"


def test_slider_chart_with_uneven_values_slides_over_positions(runs):
    spec = viz.slider_chart(runs, "step", "loss", "width").to_dict()  # widths 1, 2, 4
    (param,) = spec["params"]
    assert (param["bind"]["min"], param["bind"]["max"], param["bind"]["step"]) == (0, 2, 1)
    assert len(spec["layer"]) == 2  # the lines and a label with the current value


def test_heatmap_spec(runs):
    spec = viz.heatmap(runs, "step", "model", "loss").to_dict()
    assert spec["mark"]["type"] == "rect"
    assert spec["encoding"]["color"]["type"] == "quantitative"
    faceted = viz.heatmap(runs, "step", "model", "loss", facet="width", title="h").to_dict()
    assert faceted["facet"]["field"] == "width" and faceted["columns"] == 3


def test_column_names_with_dots_are_escaped():
    df = pd.DataFrame({"a.b": [1, 2, 3], "y[0]": [1.0, 2.0, 3.0], "k": ["u", "u", "v"]})
    spec = viz.line_chart(df, "a.b", "y[0]", "k").to_dict()
    assert spec["encoding"]["x"]["field"] == "a\\.b" and spec["encoding"]["x"]["title"] == "a.b"
    assert spec["encoding"]["y"]["field"] == "y\\[0\\]"


def test_specs_compile_with_vega_lite(runs):
    vlc = pytest.importorskip("vl_convert")
    major, minor = alt.VEGALITE_VERSION.split(".")[:2]
    charts = [
        viz.line_chart(runs, "step", "loss", "model", log_y=True),
        viz.slider_chart(runs, "step", "loss", "width", color="model"),
        viz.slider_chart(runs, "step", "loss", "width"),
        viz.heatmap(runs, "step", "model", "loss", facet="width"),
        viz.line_chart(pd.DataFrame({"a.b": [1, 2], "y": [1.0, 2.0], "k": ["u", "u"]}), "a.b", "y", "k"),
    ]
    for chart in charts:
        svg = vlc.vegalite_to_svg(chart.to_dict(), vl_version=f"v{major}_{minor}")
        assert svg.startswith("<svg") and "<path" in svg


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda df: viz.line_chart(df.to_dict(), "step", "loss", "model"), TypeError),
        (lambda df: viz.line_chart(df.iloc[:0], "step", "loss", "model"), ValueError),
        (lambda df: viz.line_chart(df, "step", "nope", "model"), ValueError),
        (lambda df: viz.line_chart(df, "step", 3, "model"), TypeError),
        (lambda df: viz.line_chart(df, "step", "model", "model"), TypeError),
        (lambda df: viz.line_chart(df, "step", "loss", "model", log_x="yes"), TypeError),
        (lambda df: viz.line_chart(df.assign(step=df.step - 1), "step", "loss", "model", log_x=True), ValueError),
        (lambda df: viz.line_chart(df, "step", "loss", "model", tooltip="loss"), TypeError),
        (lambda df: viz.line_chart(df, "step", "loss", "model", tooltip=["nope"]), ValueError),
        (lambda df: viz.line_chart(df, "step", "loss", "model", title=5), TypeError),
        (lambda df: viz.line_chart(df.assign(loss=np.nan), "step", "loss", "model"), ValueError),
        (lambda df: viz.slider_chart(df, "step", "loss", "model"), TypeError),
        (lambda df: viz.slider_chart(df, "step", "loss", "missing"), ValueError),
        (lambda df: viz.slider_chart(df, "step", "loss", "width", color="nope"), ValueError),
        (lambda df: viz.slider_chart(df.assign(width=np.inf), "step", "loss", "width"), ValueError),
        (lambda df: viz.heatmap(df, "step", "model", "model"), TypeError),
        (lambda df: viz.heatmap(df, "step", "model", "loss", facet="nope"), ValueError),
        (lambda df: viz.heatmap([1, 2], "step", "model", "loss"), TypeError),
    ],
)
def test_bad_input_raises(runs, call, error):
    with pytest.raises(error):
        call(runs)
