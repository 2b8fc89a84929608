"""Every file or directory the project's docs name exists in the repository.

Looks at each tracked Markdown file's links and at backticked paths that
start where a path of the repository starts (a name beside the file or at
the top, or ``..``), resolved beside the file, then from the top. Run by
`make lint`; exits 1 naming each missing path.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE = re.compile(r"`([A-Za-z0-9_.\-/]+)`")


def named_paths(text: str) -> set[str]:
    found = {m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)}
    found |= {m.group(1) for m in CODE.finditer(text) if "/" in m.group(1)}
    return {p for p in found if not p.startswith(("/", "~", "mailto:"))}


def in_repository(base: Path, path: str) -> bool:
    """An existing path inside the repository, or one git ignores (a command's output)."""
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(ROOT):
        return False
    if resolved.exists():
        return True
    relative = str(resolved.relative_to(ROOT)) + ("/" if path.endswith("/") else "")
    ignored = subprocess.run(["git", "check-ignore", "-q", relative], cwd=ROOT, check=False)
    return ignored.returncode == 0


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
    tracked = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    problems = [f"{doc}: {path}" for doc in tracked for path in missing_in(ROOT / doc)]
    for problem in problems:
        print(f"check_docs: names a path the repository lacks: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
