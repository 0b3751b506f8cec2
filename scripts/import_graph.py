"""`python scripts/import_graph.py`: the package's import graph, its cycles and its imports inside functions.

Reads every module of `sim2real/` with `ast` (nothing is imported): an edge A → B for each
`import`/`from` of a sim2real module B at A's top level (imports under ``if TYPE_CHECKING:`` are
left out: they never run). A package's ``__init__`` counts as importing what it imports. Cycles
are looked for between modules and between the package's top-level parts (modules merged into
their subpackage: `experiment`, `sysid`, `testbed`...), by `graphlib.TopologicalSorter`, which
refuses a graph with one; imports written inside functions are listed apart, with their module,
since they can hide a cycle.
Exit code 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import graphlib
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "sim2real"


def module_name(path: Path, root: Path) -> str:
    """`sim2real/a/b.py` → `sim2real.a.b`; `sim2real/a/__init__.py` → `sim2real.a`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(node: ast.Import | ast.ImportFrom, here: str, modules: set[str]) -> Iterator[str]:
    """The sim2real modules an import statement loads (a `from package import module` names the module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            base = ".".join(here.split(".")[: -node.level] + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith(PACKAGE) and name != here:
            yield name


def scan(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """Top-level edges per module, and (module, imported) pairs of imports written inside functions."""
    paths = {module_name(path, root): path for path in sorted((root / PACKAGE).rglob("*.py"))}
    modules = set(paths)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    inside: list[tuple[str, str]] = []
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        top += [node for statement in tree.body if isinstance(statement, ast.Try) for node in statement.body
                if isinstance(node, ast.Import | ast.ImportFrom)]
        for node in top:
            edges[name].update(_imported(node, name, modules))
        skipped = {id(node) for statement in tree.body if isinstance(statement, ast.If) and _is_type_checking(statement)
                   for node in ast.walk(statement)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and node not in top and id(node) not in skipped:
                inside += [(name, target) for target in _imported(node, name, modules)]
    return edges, inside


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None when the graph has none."""
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


def by_package(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph with each module merged into its top-level part (`sim2real.experiment.unit`: `experiment`).

    The package's own ``__init__`` is left out: it only re-exports names, lazily.
    """
    def part(name: str) -> str:
        return ".".join(name.split(".")[:2])

    merged: dict[str, set[str]] = {part(name): set() for name in edges if name != PACKAGE}
    for name, targets in edges.items():
        merged.setdefault(part(name), set()).update(part(t) for t in targets if part(t) not in (part(name), PACKAGE))
    merged.pop(PACKAGE, None)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    edges, inside = scan(args.root)
    cycle = find_cycle(edges) or find_cycle(by_package(edges))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} top-level imports between them, "
          f"{len(inside)} sim2real imports inside functions")
    for module, target in sorted(inside):
        print(f"  inside a function: {module} → {target}")
    print("cycle: " + " → ".join(cycle) if cycle else "no import cycle, between modules or between packages")
    return 1 if cycle else 0


if __name__ == "__main__":
    sys.exit(main())
