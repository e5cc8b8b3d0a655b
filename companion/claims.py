"""Claim checks: every chapter ends by measuring a paper's claim in miniature and asserting it.

:func:`check` records what was claimed, by which paper, what we measured, the
threshold and whether it holds, then raises ``AssertionError`` when it fails in
a mode that asserts. Records are appended as JSON lines to the folder named by
the environment variable ``COMPANION_CLAIMS_DIR`` (the build sets it); the
book's *What reproduces* page is generated from those files, never typed.

Example
-------
>>> from companion import claims
>>> r = claims.check("errors shrink", measured=0.01, threshold=0.05, comparison="<=",
...                  paper="Some Paper", chapter="demo", smoke=True, record=False)
>>> r.holds
True
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import math
import numbers
import operator
import os
from pathlib import Path
from typing import Any

COMPARISONS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
ENV_DIR = "COMPANION_CLAIMS_DIR"
_session_records: list["ClaimRecord"] = []


@dataclasses.dataclass(frozen=True)
class ClaimRecord:
    """One measured claim."""

    claim: str
    paper: str
    chapter: str
    measured: float
    threshold: float
    comparison: str
    mode: str  # "smoke" or "full"
    holds: bool
    asserted: bool
    note: str = ""
    timestamp: str = ""

    def describe(self) -> str:
        verdict = "holds" if self.holds else "does NOT hold"
        tag = " (smoke-mode sanity bound)" if self.mode == "smoke" else ""
        return (
            f"[{self.chapter}] {self.claim}: measured {self.measured:.4g} "
            f"{self.comparison} {self.threshold:.4g}? {verdict}{tag}"
        )

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.holds else "#cf222e"
        mark = "&#10003;" if self.holds else "&#10007;"
        mode = "smoke-mode sanity bound" if self.mode == "smoke" else "full run"
        note = f"<br><small>{html.escape(self.note)}</small>" if self.note else ""
        return (
            f'<div class="claim-check" style="border-left:4px solid {colour};padding:4px 10px;margin:6px 0">'
            f'<b style="color:{colour}">{mark} Claim check ({mode})</b>: {html.escape(self.claim)}<br>'
            f"measured <code>{self.measured:.4g}</code> {html.escape(self.comparison)} threshold "
            f"<code>{self.threshold:.4g}</code> &mdash; <i>{html.escape(self.paper)}</i>{note}</div>"
        )

    def __repr__(self) -> str:  # plain-text fallback in terminals
        return self.describe()


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # 0-d NumPy / torch scalars
            value = value.item()
        except AttributeError:
            raise TypeError(f"{name} must be a real number; got {type(value).__name__}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} is NaN: the experiment produced no usable number")
    return value


def check(
    claim: str,
    *,
    measured: Any,
    threshold: Any,
    comparison: str,
    paper: str,
    chapter: str,
    smoke: bool,
    note: str = "",
    asserts: bool = True,
    record: bool = True,
) -> ClaimRecord:
    """Record a claim check and assert it.

    Parameters
    ----------
    claim : str
        The claim in words, e.g. ``"RoPE scores depend only on the offset"``.
    measured : float
        The value the experiment measured.
    threshold : float
        The bound it must meet. In smoke mode pass the weaker sanity bound and
        say so in ``note``.
    comparison : {">=", ">", "<=", "<"}
        How ``measured`` must relate to ``threshold`` for the claim to hold.
    paper : str
        Exact title of the paper the claim comes from.
    chapter : str
        Chapter identifier, e.g. ``"P1"``.
    smoke : bool
        Whether this run is the quick smoke run (recorded as ``mode``).
    note : str, optional
        Context shown with the record (calibration value, caveats).
    asserts : bool, default True
        Raise ``AssertionError`` when the claim does not hold. Set ``False`` only
        for a claim the chapter reports as not reproducing at this scale.
    record : bool, default True
        Append the record to ``$COMPANION_CLAIMS_DIR/<chapter>.jsonl`` when that
        variable is set.

    Returns
    -------
    ClaimRecord
    """
    for name, value in (("claim", claim), ("paper", paper), ("chapter", chapter)):
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"{name} must be a non-empty string; got {value!r}")
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {tuple(COMPARISONS)}; got {comparison!r}")
    if not isinstance(smoke, bool):
        raise TypeError(f"smoke must be a bool; got {type(smoke).__name__}")
    m = _as_float(measured, "measured")
    t = _as_float(threshold, "threshold")
    holds = bool(COMPARISONS[comparison](m, t))
    rec = ClaimRecord(
        claim=claim.strip(),
        paper=paper.strip(),
        chapter=chapter.strip(),
        measured=m,
        threshold=t,
        comparison=comparison,
        mode="smoke" if smoke else "full",
        holds=holds,
        asserted=bool(asserts),
        note=note,
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    _session_records.append(rec)
    if record:
        _write(rec)
    if asserts and not holds:
        raise AssertionError(f"claim check failed: {rec.describe()} ({rec.paper})")
    return rec


def _write(rec: ClaimRecord) -> None:
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in rec.chapter)
    with open(path / f"{safe}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dataclasses.asdict(rec)) + "\n")


def session_records() -> list[ClaimRecord]:
    """Records made in this Python process, in order."""
    return list(_session_records)


def load_records(folder: str | os.PathLike) -> list[ClaimRecord]:
    """Read every ``*.jsonl`` record file in ``folder`` (sorted by chapter, then order written)."""
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"claims folder {str(path)!r} does not exist")
    out: list[ClaimRecord] = []
    for file in sorted(path.rglob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(ClaimRecord(**json.loads(line)))
    return out
