"""Write the repository URL of `_config.yml` wherever the project repeats it.

The URL lives in one place, `_config.yml` (``repository.url``), which also feeds
the Colab launch buttons. README.md, the book's Markdown pages and every
notebook's Colab setup cell repeat it in ``git clone URL`` and ``git+URL``
forms; this script rewrites those, and ``tests/unit/test_guards.py`` fails when
they disagree.

    python tools/sync_repository_url.py          # rewrite
    python tools/sync_repository_url.py --check  # list disagreements, exit 1 if any
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PATTERN = re.compile(r"(git\+|git clone )(https://[^\s\"'@\\]+)")


def repository_url(root: Path = ROOT) -> str:
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def files(root: Path = ROOT) -> list[Path]:
    out = [root / "README.md"]
    out += sorted((root / "book").rglob("*.md"))
    out += sorted(p for p in (root / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return [p for p in out if p.is_file()]


def mismatches(root: Path = ROOT) -> list[tuple[Path, str]]:
    url = repository_url(root)
    bad = []
    for path in files(root):
        for match in PATTERN.finditer(path.read_text(encoding="utf-8")):
            if match.group(2).rstrip("/") != url:
                bad.append((path, match.group(2)))
    return bad


def sync(root: Path = ROOT) -> int:
    url = repository_url(root)
    changed = 0
    for path in files(root):
        text = path.read_text(encoding="utf-8")
        new = PATTERN.sub(lambda m: m.group(1) + url, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    return changed


if __name__ == "__main__":
    if "--check" in sys.argv:
        bad = mismatches()
        for path, found in bad:
            print(f"{path.relative_to(ROOT)}: {found}")
        sys.exit(1 if bad else 0)
    print(f"rewrote {sync()} file(s)")
