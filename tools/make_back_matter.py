"""Writes book/back/what_reproduces.ipynb and book/back/paper_index.ipynb (run from the repository root)."""
import nbformat as nbf
from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell

def nb(cells):
    n = new_notebook(cells=cells)
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    n.metadata["language_info"] = {"name": "python"}
    return n

def code(src, tags=()):
    c = new_code_cell(src); c.metadata["tags"] = list(tags); return c

# ---------------------------------------------------------------- what reproduces
wr = nb([
 new_markdown_cell("""# What reproduces

Every chapter ends with **claim checks**: a paper's claim, measured in miniature and
asserted. This page is generated when the book is built, from the records those
checks wrote (`companion.claims.check`); nothing on it is typed by hand.

How to read it:
- **mode** says which run produced the record. `full` is the experiment the book
  shows. `smoke` is the quick run of the test suite, whose thresholds are weaker
  sanity bounds, not the paper's claim.
- **holds** compares the measured value with the threshold. A claim that does not
  reproduce at our scale is listed as not holding, with its measured value, and the
  chapter says why."""),
 code('''CLAIMS_DIR = "../../_build/claims/full"  # set by the build
MODE = "full"
REQUIRE_RECORDS = False''', tags=["parameters", "remove-cell"]),
 code('''import html
from pathlib import Path

import pandas as pd
from IPython.display import HTML, display

from companion.claims import load_records

folder = Path(CLAIMS_DIR)
records = load_records(folder) if folder.is_dir() else []
if REQUIRE_RECORDS and not records:
    raise RuntimeError(f"no claim records found in {folder}: did the chapters run?")
table = pd.DataFrame([r.__dict__ for r in records])''', tags=["remove-cell"]),
 code('''def _row(r):
    mark = "&#10003;" if r.holds else "&#10007;"
    colour = "#1a7f37" if r.holds else "#cf222e"
    return (
        f"<tr><td>{html.escape(r.chapter)}</td><td>{html.escape(r.claim)}</td>"
        f"<td><i>{html.escape(r.paper)}</i></td><td>{r.measured:.4g}</td>"
        f"<td>{html.escape(r.comparison)} {r.threshold:.4g}</td>"
        f'<td style="color:{colour};font-weight:bold">{mark}</td><td>{r.mode}</td>'
        f"<td>{html.escape(r.note)}</td></tr>"
    )

if records:
    n_hold = sum(r.holds for r in records)
    summary = (f"<p><b>{n_hold} of {len(records)}</b> claim checks hold "
               f"(records of the <b>{html.escape(MODE)}</b> run, "
               f"{len(set(r.chapter for r in records))} chapter(s)).</p>")
    head = ("<tr><th>chapter</th><th>claim</th><th>paper</th><th>measured</th>"
            "<th>threshold</th><th>holds</th><th>mode</th><th>note</th></tr>")
    body = "".join(_row(r) for r in sorted(records, key=lambda r: r.chapter))
    display(HTML(summary + f'<div style="overflow-x:auto"><table class="table">{head}{body}</table></div>'))
else:
    display(HTML("<p>No claim records yet: build the book with <code>make book</code>.</p>"))''', tags=["remove-input"]),
])
nbf.write(wr, "book/back/what_reproduces.ipynb")

# ---------------------------------------------------------------- paper index
THEMES = [("memory", "Part I: Memory"), ("compression", "Part II: Compression"),
          ("generalization", "Part III: Generalization"), ("positional encoding", "Part IV: Positional encoding"),
          ("continual learning", "Part V: Continual learning")]
cells = [
 new_markdown_cell("""# Paper index

Every paper of the course's reading list that belongs to one of the five themes,
under its exact title, with the chapter that teaches or discusses it and the
`companion` functions that implement it. **Status** is `taught` (a chapter
implements and tests the method), `discussed` (a chapter explains it or uses part
of it) or `planned` (its chapter has not landed yet).

The table is generated from one data file, `book/data/papers.csv`; chapters update
that file as they land."""),
 code('PAPERS = "../data/papers.csv"', tags=["parameters", "remove-cell"]),
 code('''import html
from pathlib import Path

import pandas as pd
from IPython.display import HTML, display

papers = pd.read_csv(PAPERS, keep_default_na=False)
expected = {"title", "theme", "chapters", "status", "functions"}
if set(papers.columns) != expected:
    raise ValueError(f"{PAPERS} must have columns {sorted(expected)}; got {list(papers.columns)}")
bad_status = set(papers.status) - {"taught", "discussed", "planned"}
if bad_status:
    raise ValueError(f"unknown status values {bad_status}")
if papers.title.duplicated().any():
    raise ValueError(f"duplicate titles: {papers.title[papers.title.duplicated()].tolist()}")

# chapter id -> page, from the chapter notebooks' file names (p1_... -> P1)
pages = {}
for path in Path("..").glob("*/*.ipynb"):
    prefix = path.stem.split("_")[0]
    if len(prefix) >= 2 and prefix[0].isalpha() and prefix[1:].isdigit() and path.parent.name != "back":
        pages[prefix.upper()] = f"../{path.parent.name}/{path.stem}.html"

def chapter_links(ids):
    out = []
    for cid in ids.split():
        out.append(f'<a href="{pages[cid]}">{cid}</a>' if cid in pages else cid)
    return ", ".join(out) or "&mdash;"

def show_theme(theme):
    part = papers[papers.theme == theme].sort_values(["status", "chapters", "title"])
    rows = "".join(
        f"<tr><td>{html.escape(r.title)}</td><td>{chapter_links(r.chapters)}</td><td>{r.status}</td>"
        f"<td>{'<br>'.join('<code>' + html.escape(f.strip()) + '</code>' for f in r.functions.split(';') if f.strip())}</td></tr>"
        for r in part.itertuples())
    display(HTML(f'<p>{len(part)} papers.</p><table class="table"><tr><th>title</th><th>chapter</th>'
                 f'<th>status</th><th>companion</th></tr>{rows}</table>'))

counts = papers.groupby(["theme", "status"]).size().unstack(fill_value=0)
display(HTML(f"<p><b>{len(papers)}</b> papers.</p>" + counts.to_html()))''', tags=["remove-input"]),
]
for theme, heading in THEMES:
    cells.append(new_markdown_cell(f"## {heading}"))
    cells.append(code(f'show_theme("{theme}")', tags=["remove-input"]))
nbf.write(nb(cells), "book/back/paper_index.ipynb")
