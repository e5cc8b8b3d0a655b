"""Guard tests: the shape every chapter notebook must keep, and the book's bookkeeping."""

import ast
import csv
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from tools.sync_repository_url import mismatches, repository_url
from tools.toc import THEMES, chapter_notebooks, toc_documents

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = chapter_notebooks(ROOT)
ALL_NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _read(path):
    return nbformat.read(path, as_version=4)


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def test_there_is_at_least_one_chapter():
    assert CHAPTERS, "the table of contents lists no chapter notebook"


def test_every_toc_document_exists():
    docs = toc_documents(ROOT)
    assert (ROOT / "book" / "intro.md") in docs


def test_no_notebook_outside_the_table_of_contents():
    listed = set(toc_documents(ROOT))
    outside = [p for p in ALL_NOTEBOOKS if p not in listed]
    assert not outside, f"notebooks not in _toc.yml: {_ids(outside)}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=_ids(ALL_NOTEBOOKS))
def test_notebooks_are_committed_without_outputs(path):
    nb = _read(path)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; clear them"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the source notebook"


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return cells


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_has_parameters_cell_with_smoke_and_seed(path):
    nb = _read(path)
    cells = _parameters_cell(nb)
    assert len(cells) == 1, f"{path.name}: needs exactly one cell tagged 'parameters' (papermill injects SMOKE after it)"
    assigned = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id] = node.value
    assert "SMOKE" in assigned and isinstance(assigned["SMOKE"], ast.Constant) and assigned["SMOKE"].value is False, (
        f"{path.name}: the parameters cell must set SMOKE = False (full mode is what the book shows)"
    )
    assert "SEED" in assigned, f"{path.name}: the parameters cell must set SEED"


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_has_colab_setup_cell_first(path):
    nb = _read(path)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "remove-cell" in first_code.metadata.get("tags", []), f"{path.name}: setup cell must be tagged remove-cell"
    assert "google.colab" in first_code.source and "%pip install" in first_code.source
    assert f"git+{repository_url(ROOT)}@main" in first_code.source


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_makes_claim_checks_and_cites_papers(path):
    nb = _read(path)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert re.search(r"claims\.check\(", code), f"{path.name}: no companion.claims.check(...) call"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "{cite" in text, f"{path.name}: cites no reference from book/references.bib"
    assert re.search(r"^#\s", nb.cells[0].source if nb.cells[0].cell_type == "markdown" else "", re.M) or any(
        c.cell_type == "markdown" and c.source.lstrip().startswith("# ") for c in nb.cells
    ), f"{path.name}: no level-1 title"


def test_chapters_live_in_theme_folders():
    for path in CHAPTERS:
        assert path.parent.name in THEMES


def test_repository_url_is_the_same_everywhere():
    bad = mismatches(ROOT)
    assert not bad, f"repository URL differs from _config.yml in: {[(str(p.relative_to(ROOT)), u) for p, u in bad]}"


def test_config_is_strict_and_offline():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    sphinx = cfg["sphinx"]["config"]
    assert not str(sphinx["mathjax_path"]).startswith("http")
    assert all(not str(k).startswith("http") for k in sphinx["nb_ipywidgets_js"])
    assert cfg["launch_buttons"]["colab_url"].startswith("https://colab")


def test_paper_index_data_file():
    rows = list(csv.DictReader(open(ROOT / "book" / "data" / "papers.csv", encoding="utf-8")))
    assert len(rows) >= 134
    titles = [r["title"] for r in rows]
    assert len(set(titles)) == len(titles), "duplicate titles in papers.csv"
    assert {r["theme"] for r in rows} == {"memory", "compression", "generalization", "positional encoding", "continual learning"}
    assert {r["status"] for r in rows} <= {"taught", "discussed", "planned"}
    for r in rows:
        for cid in r["chapters"].split():
            assert re.fullmatch(r"[MCGPL][1-9]", cid), f"bad chapter id {cid!r} for {r['title']!r}"
        if r["status"] != "planned":
            assert r["chapters"], f"{r['title']!r} is {r['status']} but names no chapter"
            assert r["functions"] or r["status"] == "discussed", f"{r['title']!r} is taught but lists no function"


def test_paper_titles_match_reading_list_when_available():
    seeds = ROOT.parent / "shared" / "seeds" / "000_9d533ba750abefce.txt"
    if not seeds.is_file():
        pytest.skip("the shared reading list is not beside this checkout")
    lines = {line.strip() for line in seeds.read_text(encoding="utf-8").splitlines()}
    rows = list(csv.DictReader(open(ROOT / "book" / "data" / "papers.csv", encoding="utf-8")))
    missing = [r["title"] for r in rows if r["title"] not in lines]
    assert not missing, f"titles not found verbatim in the reading list: {missing}"


def test_taught_chapters_are_in_the_toc():
    rows = list(csv.DictReader(open(ROOT / "book" / "data" / "papers.csv", encoding="utf-8")))
    present = {p.stem.split("_")[0].upper() for p in CHAPTERS}
    for r in rows:
        if r["status"] == "taught":
            assert set(r["chapters"].split()) & present, f"{r['title']!r} is taught by a chapter not in the book"


CHAPTER_SOURCES = sorted((ROOT / "tools" / "chapters").glob("*_source.py"))


@pytest.mark.parametrize("source", CHAPTER_SOURCES, ids=[p.stem for p in CHAPTER_SOURCES])
def test_generated_notebooks_match_their_source(source):
    import importlib.util

    spec = importlib.util.spec_from_file_location(source.stem, source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build(module.SOURCE)
    stem = source.stem.removesuffix("_source")
    matches = list((ROOT / "book").rglob(f"{stem}_*.ipynb"))
    assert len(matches) == 1, f"expected one notebook book/*/{stem}_*.ipynb for {source.name}; found {matches}"
    committed = _read(matches[0])
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in built.cells] == [
        (c.cell_type, c.source, c.metadata.get("tags", [])) for c in committed.cells
    ], f"{matches[0].name} differs from {source.name}: run `python {source.relative_to(ROOT)}`"
