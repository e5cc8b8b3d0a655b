"""One papermill smoke run per chapter of the table of contents (run in parallel by pytest-xdist).

Each run injects ``SMOKE = True``; the executed copy goes to ``_build/exec/smoke/``
where the site build picks it up, and the chapter's claim records to
``_build/claims/smoke/<notebook>/``.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from companion.claims import load_records  # noqa: E402
from tools.notebooks import claims_dir, execute  # noqa: E402
from tools.toc import chapter_notebooks  # noqa: E402

CHAPTERS = chapter_notebooks(ROOT)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_in_smoke_mode(path):
    result = execute(path, smoke=True, threads=1, timeout=600)
    assert result.output.is_file()
    records = load_records(claims_dir("smoke") / path.stem)
    assert records, f"{path.name} ran but recorded no claim check"
    assert all(r.mode == "smoke" for r in records), "SMOKE was not injected (is the parameters cell tagged?)"
    failed = [r.describe() for r in records if r.asserted and not r.holds]
    assert not failed, failed
    print(f"{path.name}: {result.seconds:.1f} s, {len(records)} claim checks")
