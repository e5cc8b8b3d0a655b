"""Read the table of contents: which documents the book has and which are chapters."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
THEMES = ("memory", "compression", "generalization", "positional", "continual")


def _walk(node, out: list[str]) -> None:
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        if "root" in node:
            out.append(node["root"])
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                _walk(child, out)
    elif isinstance(node, list):
        for child in node:
            _walk(child, out)


def toc_documents(root: Path = ROOT) -> list[Path]:
    """Every document of `_toc.yml`, resolved to an existing file (``.ipynb`` or ``.md``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names: list[str] = []
    _walk(toc, names)
    docs = []
    for name in names:
        base = root / name
        for candidate in (base, base.with_suffix(".ipynb"), base.with_suffix(".md")):
            if candidate.is_file():
                docs.append(candidate)
                break
        else:
            raise FileNotFoundError(f"_toc.yml lists {name!r} but no such .ipynb or .md exists")
    return docs


def is_chapter(path: Path, root: Path = ROOT) -> bool:
    """Chapters are the notebooks inside one of the five theme folders of book/."""
    rel = path.resolve().relative_to(root)
    return path.suffix == ".ipynb" and len(rel.parts) >= 3 and rel.parts[0] == "book" and rel.parts[1] in THEMES


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    return [p for p in toc_documents(root) if is_chapter(p, root)]


def other_notebooks(root: Path = ROOT) -> list[Path]:
    """Notebooks of the table of contents that are not chapters (back matter pages)."""
    return [p for p in toc_documents(root) if p.suffix == ".ipynb" and not is_chapter(p, root)]
