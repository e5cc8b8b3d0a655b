"""Offline-first Altair charts for the course.

Call :func:`enable_offline_renderer` once at the top of a chapter. Charts are then
shown as ``text/html`` outputs (stored by papermill, rendered by myst-nb) whose
script draws with ``window.vegaEmbed`` when the page provides it -- the built site
loads Vega, Vega-Lite and vega-embed from its own ``_static/vega/vega-bundle.js``,
so charts need no network there -- and otherwise loads the three libraries from
the jsDelivr CDN, as Altair's own HTML renderer does (Colab, Jupyter).

The helpers :func:`line_chart`, :func:`slider_chart` and :func:`heatmap` build the
charts the chapters use from a long-form pandas DataFrame (one row per point).

Example
-------
>>> import pandas as pd
>>> from companion import viz
>>> viz.enable_offline_renderer()
>>> df = pd.DataFrame({"step": [0, 1, 2] * 2, "loss": [3.0, 2.0, 1.5, 3.0, 2.5, 2.2],
...                    "model": ["a"] * 3 + ["b"] * 3})
>>> chart = viz.line_chart(df, "step", "loss", "model", title="Training loss")
>>> chart.to_dict()["mark"]["type"]
'line'
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import altair as alt
import jinja2
import numpy as np
import pandas as pd

__all__ = [
    "RENDERER_NAME",
    "enable_offline_renderer",
    "offline_html",
    "line_chart",
    "slider_chart",
    "heatmap",
]

#: Name under which the renderer is registered with ``alt.renderers``.
RENDERER_NAME = "companion_offline"

#: Export actions only: the "Open in Vega Editor" link needs the network.
DEFAULT_EMBED_OPTIONS: dict[str, Any] = {
    "actions": {"export": True, "source": False, "compiled": False, "editor": False}
}

_CDN = "https://cdn.jsdelivr.net/npm"

# The chart's script, in order of preference:
# 1. window.vegaEmbed already defined (the site's vega-bundle.js ran): draw now;
# 2. the page lists vega-bundle.js but it has not run yet: draw on window load;
# 3. a require.js page (classic Jupyter): load the libraries as AMD modules;
# 4. otherwise add <script> tags for the CDN copies, once per page, then draw.
OFFLINE_TEMPLATE = jinja2.Template(
    """\
<style>
  #{{ output_div }}.vega-embed { width: 100%; display: flex; }
  #{{ output_div }}.vega-embed details,
  #{{ output_div }}.vega-embed details summary { position: relative; }
</style>
<div id="{{ output_div }}" class="companion-chart"></div>
<script type="text/javascript">
(function (spec, embedOpt) {
  "use strict";
  var divId = "{{ output_div }}";
  var el = document.currentScript && document.currentScript.previousElementSibling;
  if (!el || el.id !== divId) { el = document.getElementById(divId); }
  function fail(message) {
    el.innerHTML = '<div class="error companion-chart-error" style="color:red;"></div>';
    el.firstChild.textContent = "Chart could not be drawn: " + message;
    console.error("companion.viz:", message);
  }
  function draw(embed) {
    if (typeof embed !== "function") { fail("vegaEmbed is not available"); return; }
    embed(el, spec, embedOpt).catch(function (err) { fail(err && err.message ? err.message : String(err)); });
  }
  var urls = {
    "vega": "{{ base_url }}/vega@{{ vega_version }}?noext",
    "vega-lite": "{{ base_url }}/vega-lite@{{ vegalite_version }}?noext",
    "vega-embed": "{{ base_url }}/vega-embed@{{ vegaembed_version }}?noext"
  };
  function fromCdn() {
    if (typeof define === "function" && define.amd && typeof requirejs === "function") {
      requirejs.config({paths: urls});
      require(["vega-embed"], draw, function (err) { fail("could not load vega-embed: " + err.message); });
      return;
    }
    if (!window.__companionVegaCdn) {
      var addScript = function (name) {
        return new Promise(function (resolve, reject) {
          var s = document.createElement("script");
          s.src = urls[name];
          s.async = false;
          s.onload = resolve;
          s.onerror = function () { reject(new Error("could not load " + urls[name])); };
          document.head.appendChild(s);
        });
      };
      window.__companionVegaCdn = addScript("vega")
        .then(function () { return addScript("vega-lite"); })
        .then(function () { return addScript("vega-embed"); });
    }
    window.__companionVegaCdn.then(function () { draw(window.vegaEmbed); },
                                   function (err) { fail(err.message); });
  }
  if (typeof window.vegaEmbed === "function") {
    draw(window.vegaEmbed);
  } else if (document.querySelector('script[src*="vega-bundle.js"]') && document.readyState !== "complete") {
    window.addEventListener("load", function () {
      if (typeof window.vegaEmbed === "function") { draw(window.vegaEmbed); } else { fromCdn(); }
    });
  } else {
    fromCdn();
  }
})({{ spec }}, {{ embed_options }});
</script>
"""
)


def _renderer(embed_options: dict[str, Any] | None):
    from altair.utils.display import HTMLRenderer

    options = dict(DEFAULT_EMBED_OPTIONS if embed_options is None else embed_options)

    def render(spec: dict, **metadata: Any) -> dict[str, str]:
        # Options set with alt.renderers.set_embed_options(...) win over ours.
        merged = {**options, **(metadata.pop("embed_options", None) or {})}
        return HTMLRenderer(
            output_div="altair-viz-{}",
            mode="vega-lite",
            template=OFFLINE_TEMPLATE,
            base_url=_CDN,
            vega_version=alt.VEGA_VERSION,
            vegaembed_version=alt.VEGAEMBED_VERSION,
            vegalite_version=alt.VEGALITE_VERSION,
        )(spec, embed_options=merged, **metadata)

    return render


_enabled_with: Any = object()


def enable_offline_renderer(embed_options: dict[str, Any] | None = None) -> None:
    """Register and enable the offline-first Altair renderer (:data:`RENDERER_NAME`).

    Charts displayed afterwards become a ``text/html`` output holding the spec and
    a script that draws with ``window.vegaEmbed`` when the page already has it
    (the built book) and loads Vega from the CDN otherwise (Colab, Jupyter).
    Calling it again is harmless. Returns ``None``, so that a chapter's first
    cell shows no output.

    Parameters
    ----------
    embed_options : dict, optional
        vega-embed options; default :data:`DEFAULT_EMBED_OPTIONS` (export menu
        only, no link to the online Vega editor).

    Example
    -------
    >>> import altair as alt
    >>> enable_offline_renderer()
    >>> alt.renderers.active
    'companion_offline'
    """
    global _enabled_with
    if embed_options is not None and not isinstance(embed_options, dict):
        raise TypeError(f"embed_options must be a dict or None; got {type(embed_options).__name__}")
    key = None if embed_options is None else repr(sorted(embed_options.items()))
    if alt.renderers.active == RENDERER_NAME and key == _enabled_with:
        return None
    alt.renderers.register(RENDERER_NAME, _renderer(embed_options))
    alt.renderers.enable(RENDERER_NAME)
    _enabled_with = key
    return None


def offline_html(chart: alt.TopLevelMixin, embed_options: dict[str, Any] | None = None) -> str:
    """The HTML snippet :func:`enable_offline_renderer` would display for ``chart``.

    >>> import pandas as pd
    >>> html = offline_html(alt.Chart(pd.DataFrame({"a": [1, 2]})).mark_point().encode(x="a"))
    >>> "window.vegaEmbed" in html
    True
    """
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"chart must be an Altair chart; got {type(chart).__name__}")
    return _renderer(embed_options)(chart.to_dict())["text/html"]


# --------------------------------------------------------------------------- checks


def _check_frame(df: Any, columns: dict[str, Any]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("df must have at least one row")
    for arg, col in columns.items():
        if col is None:
            continue
        if not isinstance(col, str):
            raise TypeError(f"{arg} must be a column name (str); got {type(col).__name__} {col!r}")
        if col not in df.columns:
            raise ValueError(f"{arg}={col!r} is not a column of df; columns are {list(map(str, df.columns))}")
        if df[col].isna().all():
            raise ValueError(f"column {col!r} ({arg}) holds only missing values")
    return df


def _check_numeric(df: pd.DataFrame, col: str, arg: str) -> None:
    if not (pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])):
        raise TypeError(f"{arg}={col!r} must be a numeric column; it has dtype {df[col].dtype}")


def _check_title(title: Any) -> None:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None; got {type(title).__name__}")


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _field(col: str) -> str:
    """Escape a column name for a Vega-Lite field (``.``, ``[`` and ``]`` mean nesting)."""
    out = col.replace("\\", "\\\\")
    for ch in ".[]":
        out = out.replace(ch, "\\" + ch)
    return out


def _vl_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "nominal"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "ordinal" if series.dtype.ordered else "nominal"
    if pd.api.types.is_numeric_dtype(series):
        return "quantitative"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "temporal"
    return "nominal"


def _series_type(series: pd.Series) -> str:
    """Type for a series/colour channel: numbers become ordinal (a symbol legend)."""
    kind = _vl_type(series)
    return "ordinal" if kind == "quantitative" else kind


def _channel(cls, df: pd.DataFrame, col: str, type_: str | None = None, **kwds):
    return cls(field=_field(col), type=type_ or _vl_type(df[col]), title=col, **kwds)


def _domain(series: pd.Series) -> list[float]:
    lo, hi = float(series.min()), float(series.max())
    return [lo, hi] if lo < hi else [lo - 0.5, hi + 0.5]


def _titled(chart, title: str | None, subtitle: str | None = None):
    if title is None:
        return chart
    return chart.properties(title=alt.Title(title, subtitle=subtitle) if subtitle else title)


# --------------------------------------------------------------------------- charts


def line_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    color: str,
    *,
    title: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    tooltip: Sequence[str] | None = None,
) -> alt.Chart:
    """One line per value of ``color``; click a legend entry to highlight its line.

    The legend is bound to a point selection on ``color``: clicking an entry
    fades the other series, shift-click adds more entries, and double-clicking
    the plot shows all series again. Numeric ``color`` columns are treated as
    ordered categories.

    Parameters
    ----------
    df : pandas.DataFrame
        Long-form data, one row per point.
    x, y : str
        Numeric columns for the axes.
    color : str
        Column whose values name the series.
    title : str, optional
        Chart title (the subtitle then explains the legend).
    log_x, log_y : bool
        Logarithmic axes; the column must then be strictly positive.
    tooltip : list of str, optional
        Columns shown on hover; default ``[color, x, y]``.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"n": [10, 100, 1000] * 2, "error": [0.5, 0.1, 0.01, 0.4, 0.2, 0.1],
    ...                    "method": ["exact"] * 3 + ["approx"] * 3})
    >>> spec = line_chart(df, "n", "error", "method", log_x=True, log_y=True).to_dict()
    >>> spec["encoding"]["x"]["scale"]["type"], spec["params"][0]["bind"]
    ('log', 'legend')
    """
    _check_frame(df, {"x": x, "y": y, "color": color})
    _check_numeric(df, x, "x")
    _check_numeric(df, y, "y")
    _check_title(title)
    log_x = _check_flag(log_x, "log_x")
    log_y = _check_flag(log_y, "log_y")
    for flag, col, arg in ((log_x, x, "x"), (log_y, y, "y")):
        if flag and not (df[col].dropna() > 0).all():
            raise ValueError(f"log_{arg}=True needs {arg}={col!r} > 0 everywhere; found values <= 0")
    tips = _tooltip(df, tooltip, default=[color, x, y])

    highlight = alt.selection_point(fields=[_field(color)], bind="legend")
    chart = (
        alt.Chart(df)
        .mark_line(point=len(df) <= 200)
        .encode(
            x=_channel(alt.X, df, x, scale=alt.Scale(type="log") if log_x else alt.Undefined),
            y=_channel(alt.Y, df, y, scale=alt.Scale(type="log") if log_y else alt.Undefined),
            color=_channel(alt.Color, df, color, _series_type(df[color])),
            opacity=alt.condition(highlight, alt.value(1.0), alt.value(0.15)),
            tooltip=tips,
        )
        .add_params(highlight)
        .properties(width=420, height=280)
    )
    return _titled(chart, title, "Click a legend entry to highlight it (shift-click for several).")


def _tooltip(df: pd.DataFrame, tooltip: Sequence[str] | None, default: list[str]):
    if tooltip is None:
        cols = default
    else:
        if isinstance(tooltip, str) or not isinstance(tooltip, Iterable):
            raise TypeError(f"tooltip must be a list of column names; got {tooltip!r}")
        cols = list(tooltip)
        _check_frame(df, {f"tooltip[{i}]": c for i, c in enumerate(cols)})
    return [alt.Tooltip(field=_field(c), type=_vl_type(df[c]), title=c) for c in cols]


def slider_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    param: str,
    *,
    color: str | None = None,
    title: str | None = None,
) -> alt.Chart | alt.LayerChart:
    """Plot ``y`` against ``x`` for one value of ``param``, chosen with a slider.

    The slider is an ``alt.param`` bound to ``alt.binding_range``; the chart
    filters the data to the rows whose ``param`` equals the slider's value and
    keeps the axes fixed to the range of the whole data, so moving the slider
    shows how the curve changes. When ``param`` takes integer values in equal
    steps the slider shows those values; otherwise it moves over their positions
    (0, 1, ...) and the chart prints the current value.

    Parameters
    ----------
    df : pandas.DataFrame
        Long-form data, one row per point.
    x, y : str
        Numeric columns for the axes.
    param : str
        Numeric column chosen by the slider.
    color : str, optional
        Column that splits the data into several lines.
    title : str, optional
        Chart title.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"t": [0, 1, 2] * 3, "y": range(9), "lr": [1, 1, 1, 2, 2, 2, 3, 3, 3]})
    >>> spec = slider_chart(df, "t", "y", "lr").to_dict()
    >>> spec["params"][0]["bind"]["input"], spec["params"][0]["value"]
    ('range', 1)
    """
    _check_frame(df, {"x": x, "y": y, "param": param, "color": color})
    _check_numeric(df, x, "x")
    _check_numeric(df, y, "y")
    _check_numeric(df, param, "param")
    _check_title(title)
    values = np.sort(df[param].dropna().unique())
    if not np.all(np.isfinite(values.astype(float))):
        raise ValueError(f"param={param!r} must hold finite values")

    data = df
    integer_steps = bool(
        np.all(np.equal(np.mod(values, 1), 0))
        and (len(values) < 3 or np.all(np.diff(values) == values[1] - values[0]))
    )
    if integer_steps:
        step = int(values[1] - values[0]) if len(values) > 1 else 1
        first = int(values[0])
        slider = alt.param(
            name="slider_" + _safe_name(param),
            value=first,
            bind=alt.binding_range(min=first, max=int(values[-1]), step=step, name=f"{param} "),
        )
        keep = alt.datum[param] == slider
    else:
        position = f"{param} position"
        while position in df.columns:
            position = "_" + position
        data = df.assign(**{position: df[param].map({v: i for i, v in enumerate(values)})})
        slider = alt.param(
            name="slider_" + _safe_name(param),
            value=0,
            bind=alt.binding_range(min=0, max=len(values) - 1, step=1, name=f"{param} (position) "),
        )
        keep = alt.datum[position] == slider

    encoding = dict(
        x=_channel(alt.X, df, x, scale=alt.Scale(domain=_domain(df[x]))),
        y=_channel(alt.Y, df, y, scale=alt.Scale(domain=_domain(df[y]))),
        tooltip=[alt.Tooltip(field=_field(c), type=_vl_type(df[c]), title=c)
                 for c in ([color] if color else []) + [param, x, y]],
    )
    if color is not None:
        encoding["color"] = _channel(alt.Color, df, color, _series_type(df[color]))
    lines = (
        alt.Chart(data)
        .mark_line(point=len(df) <= 400)
        .encode(**encoding)
        .transform_filter(keep)
        .properties(width=420, height=280)
    )
    if integer_steps:
        return _titled(lines.add_params(slider), title)
    label = (
        alt.Chart(data)
        .transform_filter(keep)
        .transform_aggregate([alt.AggregatedFieldDef(op="min", field=_field(param), **{"as": "current"})])
        .transform_calculate(text=f"'{_js_str(param)} = ' + format(datum.current, '.4~g')")
        .mark_text(align="left", baseline="top", fontSize=12)
        .encode(text="text:N", x=alt.value(6), y=alt.value(6))
    )
    return _titled(alt.layer(lines, label).add_params(slider), title)


def _safe_name(col: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in col)
    return out if out and not out[0].isdigit() else "p_" + out


def _js_str(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def heatmap(
    df: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    *,
    facet: str | None = None,
    title: str | None = None,
) -> alt.Chart | alt.FacetChart:
    """A grid of cells coloured by ``value``, one panel per ``facet`` value if given.

    ``x`` and ``y`` are shown as ordered categories (one cell per distinct
    value); ``value`` must be numeric.

    Parameters
    ----------
    df : pandas.DataFrame
        Long-form data, one row per cell.
    x, y : str
        Columns for the cell positions.
    value : str
        Numeric column for the colour.
    facet : str, optional
        Column splitting the data into panels (three per row).
    title : str, optional
        Chart title.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"i": [0, 0, 1, 1], "j": [0, 1, 0, 1], "attn": [0.9, 0.1, 0.3, 0.7]})
    >>> heatmap(df, "j", "i", "attn").to_dict()["mark"]["type"]
    'rect'
    """
    _check_frame(df, {"x": x, "y": y, "value": value, "facet": facet})
    _check_numeric(df, value, "value")
    _check_title(title)
    cell = (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=_channel(alt.X, df, x, _series_type(df[x])),
            y=_channel(alt.Y, df, y, _series_type(df[y])),
            color=_channel(alt.Color, df, value, "quantitative", scale=alt.Scale(scheme="viridis")),
            tooltip=[alt.Tooltip(field=_field(c), type=_vl_type(df[c]), title=c)
                     for c in ([facet] if facet else []) + [x, y, value]],
        )
    )
    n_x, n_y = df[x].nunique(), df[y].nunique()
    size = dict(width=min(420, max(120, 18 * n_x)), height=min(420, max(120, 18 * n_y)))
    if facet is None:
        return _titled(cell.properties(**size), title)
    # Three panels a row must fit the book's text column (about 700 px with the legend).
    size = dict(width=min(190, max(100, 12 * n_x)), height=min(190, max(100, 12 * n_y)))
    chart = cell.properties(**size).facet(
        facet=alt.Facet(field=_field(facet), type=_series_type(df[facet]), title=facet), columns=3
    )
    return _titled(chart, title)
