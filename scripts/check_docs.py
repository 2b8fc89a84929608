"""Every file or directory the project's docs name exists in the repository.

Looks at each Markdown file's links and at backticked paths that start
where a path of the repository starts (a name beside the file or at the
top, or ``..``), resolved beside the file, then from the top. A path under
a directory ``.gitignore`` lists (``build/``, ``bench/results/``) is a
command's output and counts as present. Run by `make lint` (in the analyst
container, which has no git); exits 1 naming each missing path.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE = re.compile(r"`([A-Za-z0-9_.\-/]+)`")


def ignored_patterns() -> list[str]:
    """The directory patterns of .gitignore ("build/" -> "build")."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip().endswith("/")]


IGNORED = ignored_patterns()


def is_ignored(relative: str) -> bool:
    parts = Path(relative).parts
    for pattern in IGNORED:
        if "/" in pattern:
            if relative == pattern or relative.startswith(pattern + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def markdown_files() -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(ROOT):
        relative = os.path.relpath(directory, ROOT)
        subdirectories[:] = [
            d for d in subdirectories
            if not d.startswith(".") and not is_ignored(os.path.normpath(os.path.join(relative, d)))
        ]  # fmt: skip
        found += [Path(directory, f) for f in files if f.endswith(".md")]
    return sorted(found)


def named_paths(text: str) -> set[str]:
    found = {m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)}
    found |= {m.group(1) for m in CODE.finditer(text) if "/" in m.group(1)}
    return {p for p in found if not p.startswith(("/", "~", "mailto:"))}


def in_repository(base: Path, path: str) -> bool:
    """An existing path inside the repository, or one under an ignored directory."""
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(ROOT):
        return False
    return resolved.exists() or is_ignored(str(resolved.relative_to(ROOT)))


def missing_in(doc: Path) -> list[str]:
    here = doc.parent
    missing = []
    for path in sorted(named_paths(doc.read_text())):
        first = path.split("/")[0]
        if first not in ("..", ".") and not (here / first).exists() and not (ROOT / first).exists():
            continue  # not a path of this repository (a Kubernetes name, a dask config key)
        if not in_repository(here, path) and not in_repository(ROOT, path):
            missing.append(path)
    return missing


def main() -> int:
    problems = [
        f"{doc.relative_to(ROOT)}: {path}" for doc in markdown_files() for path in missing_in(doc)
    ]
    for problem in problems:
        print(f"check_docs: names a path the repository lacks: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
