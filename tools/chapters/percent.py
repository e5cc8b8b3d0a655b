"""Turn a chapter written in the "percent" format into a notebook.

Each chapter lives in ``tools/chapters/<id>_source.py`` as one string ``SOURCE``:
cells start with ``# %%`` (code) or ``# %% [markdown]`` (Markdown, every line
prefixed with ``# ``), and a first line ``# tags: a, b`` sets the cell's tags.
Running the chapter file writes the notebook the book and Colab use; a guard
test checks the committed notebook still matches its source.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build(source: str):
    """The notebook (an ``nbformat`` node, no outputs) described by ``source``."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    cells = []
    for chunk in source.strip().split("# %%")[1:]:
        header, _, body = chunk.partition("\n")
        is_md = header.strip() == "[markdown]"
        lines = body.strip("\n").splitlines()
        tags = []
        if lines and lines[0].startswith("# tags:"):
            tags = [t.strip() for t in lines[0][len("# tags:"):].split(",") if t.strip()]
            lines = lines[1:]
        if is_md:
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)
            cell = new_markdown_cell(text)
        else:
            cell = new_code_cell("\n".join(lines))
        if tags:
            cell.metadata["tags"] = tags
        cell.id = f"cell-{len(cells):03d}"  # stable ids: regenerating does not churn the diff
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write(source: str, relative_path: str) -> Path:
    """Build ``source`` and write it to ``relative_path`` (from the repository root)."""
    import nbformat

    out = ROOT / relative_path
    nbformat.write(build(source), out)
    print(f"wrote {out}")
    return out
