"""Runs mypy over the `tacit` packages as installed names (tacit.server, tacit.privacy, …).

The packages live in top-level folders mapped by setuptools' package-dir, which mypy cannot
follow through an editable install; this builds `build/typecheck/tacit/` from symlinks to
those folders (the same mapping, read from pyproject.toml) and checks it. Extra arguments go
to mypy.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent


def build_tree() -> Path:
    """Mirrors pyproject's package-dir mapping as symlinks under build/typecheck."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tree = ROOT / "build" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "tacit").mkdir(parents=True)
    for package, folder in mapping.items():
        link = tree / Path(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT / folder, target_is_directory=True)
    return tree


def main(argv: list[str]) -> int:
    tree = build_tree()
    stdout, stderr, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--explicit-package-bases",
         "--exclude", "tacit/v1/", str(tree / "tacit"), *argv]
    )
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
