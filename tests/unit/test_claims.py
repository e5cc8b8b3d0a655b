import json

import numpy as np
import pytest

from companion import claims

COMMON = dict(paper="A Paper", chapter="T1", smoke=False)


def test_holding_claim_returns_record():
    r = claims.check("x small", measured=0.1, threshold=0.5, comparison="<=", record=False, **COMMON)
    assert r.holds and r.mode == "full" and r.asserted
    assert "holds" in r.describe()


def test_failing_claim_raises_readable_assertion():
    with pytest.raises(AssertionError, match=r"x big: measured 0.1 >= 0.5\? does NOT hold"):
        claims.check("x big", measured=0.1, threshold=0.5, comparison=">=", record=False, **COMMON)


def test_non_asserting_claim_is_recorded_as_not_holding():
    r = claims.check("reported", measured=1.0, threshold=2.0, comparison=">", asserts=False, record=False, **COMMON)
    assert not r.holds and not r.asserted


@pytest.mark.parametrize("comparison,measured,expected", [(">", 2, True), (">", 1, False), ("<", 0, True), ("<", 1, False)])
def test_strict_comparisons(comparison, measured, expected):
    r = claims.check("c", measured=measured, threshold=1, comparison=comparison, asserts=False, record=False, **COMMON)
    assert r.holds is expected


def test_numpy_and_torch_scalars_accepted():
    import torch

    r1 = claims.check("np", measured=np.float32(0.5), threshold=np.int64(1), comparison="<", record=False, **COMMON)
    r2 = claims.check("torch", measured=torch.tensor(0.5), threshold=1, comparison="<", record=False, **COMMON)
    assert r1.holds and r2.holds


def test_bad_inputs():
    with pytest.raises(ValueError, match="comparison must be one of"):
        claims.check("c", measured=1, threshold=1, comparison="==", **COMMON)
    with pytest.raises(ValueError, match="measured is NaN"):
        claims.check("c", measured=float("nan"), threshold=1, comparison="<", **COMMON)
    with pytest.raises(TypeError, match="measured must be a real number"):
        claims.check("c", measured="0.3", threshold=1, comparison="<", **COMMON)
    with pytest.raises(TypeError, match="claim must be a non-empty string"):
        claims.check("", measured=1, threshold=1, comparison="<", **COMMON)
    with pytest.raises(TypeError, match="smoke must be a bool"):
        claims.check("c", measured=1, threshold=2, comparison="<", paper="p", chapter="c", smoke=1)


def test_records_written_and_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.ENV_DIR, str(tmp_path / "nb"))
    claims.check("one", measured=1, threshold=0, comparison=">", paper="P", chapter="P1", smoke=True)
    claims.check("two", measured=2, threshold=5, comparison=">", paper="P", chapter="P1", smoke=True, asserts=False)
    lines = (tmp_path / "nb" / "P1.jsonl").read_text().splitlines()
    assert [json.loads(line)["claim"] for line in lines] == ["one", "two"]
    loaded = claims.load_records(tmp_path)
    assert [r.holds for r in loaded] == [True, False]
    assert all(r.mode == "smoke" for r in loaded)


def test_load_records_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        claims.load_records(tmp_path / "nope")


def test_html_repr_marks_mode_and_verdict():
    r = claims.check("shown", measured=3, threshold=1, comparison=">", paper="P <x>", chapter="T", smoke=True, record=False)
    out = r._repr_html_()
    assert "smoke-mode sanity bound" in out and "P &lt;x&gt;" in out and "&#10003;" in out
