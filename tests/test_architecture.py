"""The direction of dependencies DESIGN.md draws, checked from the imports themselves.

Every module of every package in pyproject's ``package-dir`` is parsed (``ast``, nothing is
imported or executed) and every import statement is read — at module level, inside functions
(lazy imports) and under ``if TYPE_CHECKING:``. A type-only import is still a design
dependency: the module cannot be understood, or type-checked, without the other one, so it
counts for cycles too. An import of ``a.b.c`` is an edge to ``a.b.c`` only, not to the
packages ``a`` and ``a.b`` Python initializes first, so a package's ``__init__`` re-exporting
its own modules (``experiments.stats``, ``experiments.service``) is not a cycle.

The checker is exercised on synthetic packages first, so a green run means something.
"""

from __future__ import annotations

import ast
import graphlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, where."""

    module: str  # the importing module, e.g. tacit.server.app
    target: str  # the imported module (or, for `from x import name`, x.name when that is a module)
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} ({self.path}:{self.line})"


@dataclass(frozen=True)
class Rule:
    """Modules under `package` must not import anything under `forbidden`, and, when
    `only` is given, no tacit package outside `only`."""

    package: str
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None

    def broken_by(self, item: Import) -> str | None:
        """What `item` breaks, worded for the failure message; None when it keeps the rule."""
        if not _under(item.module, self.package):
            return None
        for prefix in self.forbidden:
            if _under(item.target, prefix):
                return f"{self.package} must not import {prefix}"
        if (
            self.only is not None
            and _under(item.target, "tacit")
            and not any(_under(item.target, prefix) for prefix in self.only)
        ):
            return f"{self.package} may import no tacit package but {', '.join(self.only)}"
        return None


PROTOCOL = ("grpc", "google.protobuf", "tacit.v1")  # the wire: only the edge and clients speak it
RULES = (
    *(
        Rule(domain, forbidden=("tacit.server", "tacit.cli"))
        for domain in ("tacit.privacy", "tacit.experiments", "tacit.learning", "tacit.store", "tacit.sim")
    ),
    Rule("tacit.experiments", forbidden=("tacit.learning",)),
    Rule("tacit.learning", forbidden=("tacit.experiments",)),
    Rule("tacit.privacy", forbidden=("tacit.experiments", "tacit.learning")),
    Rule("tacit.store", only=("tacit.store",)),
    Rule("tacit.sim", only=("tacit.sim", "tacit.v1")),
    Rule("tacit.server", forbidden=("tacit.cli",)),
    # The CLI talks to the domain packages or to the API, never through a servicer.
    Rule("tacit.cli", forbidden=("tacit.server.servicers",)),
    # Domain code is plain Python: no protobuf or gRPC types in it (STYLE.md, "the house").
    *(
        Rule(domain, forbidden=PROTOCOL)
        for domain in ("tacit.privacy", "tacit.experiments", "tacit.learning", "tacit.store")
    ),
)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """pyproject's setuptools package-dir mapping: package name -> folder."""
    mapping = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {package: pyproject.parent / folder for package, folder in mapping.items()}


def module_files(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Every module under every mapped folder, by its import name (a package by its __init__)."""
    modules: dict[str, Path] = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from … import` names, resolving relative imports."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def read_imports(modules: Mapping[str, Path]) -> list[Import]:
    """Every import statement of every module, wherever in the module it stands."""
    found: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [Import(module, alias.name, path, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, path.name == "__init__.py", node)
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    target = submodule if submodule in modules else source
                    found.append(Import(module, target, path, node.lineno))
    return found


def import_cycles(imports: Iterable[Import], modules: Iterable[str]) -> list[list[Import]]:
    """Import cycles between our modules, each as the import statements that close it.

    graphlib names one cycle per run; the edges of that cycle are removed from a copy of the
    graph and the search repeats, so several independent cycles are all reported.
    """
    known = set(modules)
    edges: dict[tuple[str, str], Import] = {}
    for item in imports:
        if item.target in known and item.target != item.module:
            edges.setdefault((item.module, item.target), item)
    cycles: list[list[Import]] = []
    while True:
        graph: dict[str, set[str]] = {name: set() for name in known}
        for source, target in edges:
            graph[source].add(target)
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as error:
            # graphlib lists the cycle so that each node is a predecessor of the next, i.e. is
            # imported by it; reversed, each node is followed by one it imports.
            nodes: list[str] = error.args[1][::-1]
            cycle = [edges[(nodes[i], nodes[i + 1])] for i in range(len(nodes) - 1)]
            cycles.append(cycle)
            for item in cycle:
                del edges[(item.module, item.target)]
            continue
        return cycles


def wrong_way_imports(imports: Iterable[Import], rules: Iterable[Rule] = RULES) -> list[str]:
    """Every import that breaks a rule, with the rule it breaks."""
    rules = tuple(rules)
    return [f"{item}: {why}" for item in imports for rule in rules if (why := rule.broken_by(item))]


def _describe_cycle(cycle: list[Import]) -> str:
    return "cycle: " + " -> ".join(item.module for item in cycle) + f" -> {cycle[0].module}\n" + "\n".join(
        f"    {item}" for item in cycle
    )


# ------------------------------------------------------------------------ the checker can fail


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """A synthetic distribution: files under root, each top folder mapped to tacit.<folder>."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {f"tacit.{folder.name}": folder for folder in sorted(root.iterdir()) if folder.is_dir()}


def test_checker_finds_a_cycle_through_a_type_checking_import_and_a_lazy_one(tmp_path: Path) -> None:
    packages = _write(
        tmp_path,
        {
            "server/__init__.py": "",
            "server/app.py": "from tacit.server.servicers import prediction\n",
            "server/servicers/__init__.py": "",
            "server/servicers/prediction.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from tacit.server.app import Runtime\n"
            ),
            "server/a.py": "def late():\n    from . import b\n",
            "server/b.py": "from tacit.server.c import thing\n",
            "server/c.py": "import tacit.server.a\n\nthing = 1\n",
            "server/fine.py": "from tacit.server import app\n",
        },
    )
    modules = module_files(packages)
    cycles = import_cycles(read_imports(modules), modules)
    described = sorted(_describe_cycle(cycle) for cycle in cycles)
    assert len(cycles) == 2, described
    assert {frozenset(item.module for item in cycle) for cycle in cycles} == {
        frozenset({"tacit.server.app", "tacit.server.servicers.prediction"}),
        frozenset({"tacit.server.a", "tacit.server.b", "tacit.server.c"}),
    }
    three = next(c for c in cycles if len(c) == 3)
    assert {(item.module, item.target) for item in three} == {
        ("tacit.server.a", "tacit.server.b"),
        ("tacit.server.b", "tacit.server.c"),
        ("tacit.server.c", "tacit.server.a"),
    }
    type_only = next(c for c in cycles if any(i.module == "tacit.server.servicers.prediction" for i in c))
    closing = next(i for i in type_only if i.module == "tacit.server.servicers.prediction")
    assert (closing.target, closing.line) == ("tacit.server.app", 3)


def test_checker_names_wrong_way_imports(tmp_path: Path) -> None:
    packages = _write(
        tmp_path,
        {
            "experiments/__init__.py": "",
            "experiments/service.py": "import math\nfrom tacit.server.errors import InvalidArgument\n",
            "experiments/fine.py": "from tacit.experiments import service\nfrom tacit.store import db\n",
            "store/__init__.py": "",
            "store/db.py": "from tacit.privacy.pseudonym import KeyRing\n",
            "sim/__init__.py": "",
            "sim/client.py": "from tacit.v1 import decision_pb2\nfrom tacit.learning import features\n",
            "v1/__init__.py": "",
            "v1/decision_pb2.py": "from google.protobuf import descriptor\n",
            "cli/__init__.py": "",
            "cli/experiment.py": "from tacit.server.servicers.experiment import caller_role\n",
            "learning/__init__.py": "",
            "learning/features.py": "",
            "learning/ope.py": "from ..experiments import stats\n",
            "experiments/stats.py": "import numpy\n",
            "privacy/__init__.py": "",
            "privacy/pseudonym.py": "",
            "privacy/audit.py": "from google.protobuf.timestamp_pb2 import Timestamp\n",
        },
    )
    broken = set(wrong_way_imports(read_imports(module_files(packages))))
    assert broken == {
        f"tacit.experiments.service imports tacit.server.errors ({tmp_path}/experiments/service.py:2): "
        "tacit.experiments must not import tacit.server",
        f"tacit.store.db imports tacit.privacy.pseudonym ({tmp_path}/store/db.py:1): "
        "tacit.store may import no tacit package but tacit.store",
        f"tacit.sim.client imports tacit.learning.features ({tmp_path}/sim/client.py:2): "
        "tacit.sim may import no tacit package but tacit.sim, tacit.v1",
        f"tacit.cli.experiment imports tacit.server.servicers.experiment ({tmp_path}/cli/experiment.py:1): "
        "tacit.cli must not import tacit.server.servicers",
        f"tacit.learning.ope imports tacit.experiments.stats ({tmp_path}/learning/ope.py:1): "
        "tacit.learning must not import tacit.experiments",
        f"tacit.privacy.audit imports google.protobuf.timestamp_pb2 ({tmp_path}/privacy/audit.py:1): "
        "tacit.privacy must not import google.protobuf",
    }


# ------------------------------------------------------------------------ the house itself


House = tuple[dict[str, Path], list[Import]]


@pytest.fixture(scope="module")
def house() -> House:
    modules = module_files(package_dirs(ROOT / "pyproject.toml"))
    return modules, read_imports(modules)


def test_every_mapped_package_is_read(house: House) -> None:
    modules, imports = house
    folders = ("server", "server.servicers", "cli", "privacy", "experiments", "learning", "store", "sim")
    assert {f"tacit.{folder}" for folder in folders} | {"tacit.v1"} <= modules.keys()
    assert any(item.module == "tacit.server.app" and item.target == "tacit.server.config" for item in imports)


def test_every_subpackage_is_listed_so_the_wheel_ships_it(house: House) -> None:
    modules, _ = house
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    assert packages - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_no_import_cycle_between_modules(house: House) -> None:
    modules, imports = house
    cycles = import_cycles(imports, modules)
    assert not cycles, "\n".join(_describe_cycle(cycle) for cycle in cycles)


def test_no_wrong_way_import(house: House) -> None:
    _, imports = house
    broken = wrong_way_imports(imports)
    assert not broken, "\n".join(broken)
