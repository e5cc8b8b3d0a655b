"""Build the course site: execute notebooks, stage them with offline assets, build strictly.

    python tools/build_site.py --mode full            # make book
    python tools/build_site.py --mode smoke --reuse   # make test (chapters already run by pytest)

Steps
1. Execute every chapter notebook of `_toc.yml` with papermill (in parallel, one
   BLAS/torch thread per worker), unless ``--reuse`` finds executed copies from the
   smoke test run.
2. Execute the back-matter notebooks (What reproduces, Paper index, Performance):
   they read the claim records and data files written in step 1.
3. Copy `_config.yml`, `_toc.yml` and `book/` to `_build/stage`, put the executed
   notebooks in place of the sources and write the offline assets (Vega bundle,
   MathJax, widget manager) to `_build/stage/_offline`.
4. `jupyter-book build _build/stage --all -W --keep-going`: any warning fails the
   build. The HTML lands in `_build/html`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.notebooks import BUILD, ROOT, claims_dir, executed_path, execute  # noqa: E402
from tools.offline_assets import write_offline_assets  # noqa: E402
from tools.toc import chapter_notebooks, other_notebooks, toc_documents  # noqa: E402

STAGE = BUILD / "stage"
HTML = BUILD / "html"


def _run_one(args: tuple[str, bool, int]) -> tuple[str, float]:
    path, smoke, threads = args
    result = execute(Path(path), smoke=smoke, threads=threads)
    return path, result.seconds


def execute_chapters(chapters: list[Path], *, smoke: bool, jobs: int) -> dict[str, float]:
    threads = 1 if jobs > 1 else max(1, os.cpu_count() or 1)
    timings: dict[str, float] = {}
    work = [(str(p), smoke, threads) for p in chapters]
    if jobs <= 1:
        for item in work:
            path, seconds = _run_one(item)
            timings[path] = seconds
            print(f"  executed {Path(path).relative_to(ROOT)} in {seconds:.1f} s", flush=True)
        return timings
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for path, seconds in pool.map(_run_one, work):
            timings[path] = seconds
            print(f"  executed {Path(path).relative_to(ROOT)} in {seconds:.1f} s", flush=True)
    return timings


def _drop_stale_records(mode: str, chapters: list[Path]) -> None:
    """Keep only claim records of chapters in the table of contents (a notebook run by hand leaves its own)."""
    folder = claims_dir(mode)
    if not folder.is_dir():
        return
    keep = {c.stem for c in chapters}
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name not in keep:
            shutil.rmtree(sub)


def execute_back_matter(notebooks: list[Path], *, mode: str) -> None:
    for nb in notebooks:
        params = {"CLAIMS_DIR": str(claims_dir(mode)), "MODE": mode, "REQUIRE_RECORDS": True}
        params = {k: v for k, v in params.items() if _has_parameter(nb, k)}
        result = execute(nb, smoke=(mode == "smoke"), parameters=params, threads=1)
        print(f"  executed {nb.relative_to(ROOT)} in {result.seconds:.1f} s", flush=True)


def _has_parameter(notebook: Path, name: str) -> bool:
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return any(line.split("=")[0].strip() == name for line in cell.source.splitlines())
    return False


def stage(mode: str) -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, STAGE / name)
    shutil.copytree(ROOT / "book", STAGE / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for doc in toc_documents():
        if doc.suffix != ".ipynb":
            continue
        executed = executed_path(doc, mode)
        if not executed.is_file():
            raise FileNotFoundError(f"no executed copy of {doc.relative_to(ROOT)} at {executed}")
        _stage_notebook(executed, STAGE / doc.relative_to(ROOT))
    write_offline_assets(STAGE / "_offline")


def _stage_notebook(executed: Path, target: Path) -> None:
    """Copy an executed notebook into the stage, hiding the cell papermill injected.

    The parameters a run used are visible in the chapter's own parameters cell and
    in every claim check's mode; the injected override would only confuse readers.
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, target)


def build() -> None:
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(STAGE), "--all", "-W", "--keep-going"]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb:
        cmd = [jb, "build", str(STAGE), "--all", "-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"jupyter-book build failed (exit {proc.returncode}): see the warnings above")
    shutil.rmtree(HTML, ignore_errors=True)
    shutil.copytree(STAGE / "_build" / "html", HTML)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("full", "smoke"), default="full")
    parser.add_argument("--reuse", action="store_true", help="reuse executed chapters from an earlier run of the same mode")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    smoke = args.mode == "smoke"
    start = time.perf_counter()
    chapters = chapter_notebooks()
    missing = [c for c in chapters if not executed_path(c, args.mode).is_file()]
    if args.reuse and missing:
        raise SystemExit(
            "--reuse: no executed copy of " + ", ".join(str(c.relative_to(ROOT)) for c in missing)
            + f" (run the {args.mode} notebook tests first)"
        )
    if not args.reuse:
        shutil.rmtree(claims_dir(args.mode), ignore_errors=True)
        print(f"Executing {len(chapters)} chapter(s) in {args.mode} mode with {args.jobs} worker(s)", flush=True)
        execute_chapters(chapters, smoke=smoke, jobs=args.jobs)
    _drop_stale_records(args.mode, chapters)
    print("Executing back matter", flush=True)
    execute_back_matter(other_notebooks(), mode=args.mode)
    print("Staging and building the site (strict)", flush=True)
    stage(args.mode)
    build()
    print(f"Site built in {HTML} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
