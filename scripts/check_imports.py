"""Import circles inside each package of ``screening``, and imports against the layering.

Run ``python scripts/check_imports.py``: it prints each circle (a strongly connected component of
the import graph restricted to one package) and each forbidden import, and exits 1 if there is
any. ``tests/test_import_graph.py`` asserts the same.

What counts as an import of module A by module B: every ``import`` / ``from ... import`` statement
in B that names A, wherever it stands — at the top, inside a function (a lazy import made to keep
torch out of a light command), or under ``if TYPE_CHECKING:``. A package reads top-down only if
none of them points back up, whatever the reason for the import. ``from pkg import name`` is an
import of ``pkg.name`` when that is a module, else of ``pkg`` (its ``__init__``). Not counted:
the implicit import of a module's parent packages, and string imports (``importlib.import_module``,
such as ``screening.io``'s lazy re-exports, which only point down into the package).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "screening"

# A package on the left never imports one on the right (nor their submodules): the readers and
# writers of files know nothing of the acquisition framework.
FORBIDDEN = {"screening.io": ("screening.bo",)}


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file for every module under ``root/package``."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def imports_of(name: str, files: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports anywhere in its source."""
    tree = ast.parse(files[name].read_text(encoding="utf-8"), filename=str(files[name]))
    here = name if _is_package(name, files) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b.c` binds a but names a.b.c: the deepest project module it names
                parts = alias.name.split(".")
                for k in range(len(parts), 0, -1):
                    if ".".join(parts[:k]) in files:
                        found.add(".".join(parts[:k]))
                        break
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in files:
                    found.add(sub)
                elif base in files:
                    found.add(base)
    found.discard(name)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = module_files(root, package)
    return {name: imports_of(name, files) for name in files}


def strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the circles), sorted."""
    nodes = sorted(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(out)


def package_cycles(root: Path = ROOT, package: str = PACKAGE) -> list[list[str]]:
    """Circles of imports between modules of one package (each package separately)."""
    files = module_files(root, package)
    graph = import_graph(root, package)
    owner = {name: (name if _is_package(name, files) else name.rpartition(".")[0]) for name in files}
    cycles = []
    for pkg in sorted(set(owner.values())):
        members = {m for m in files if owner[m] == pkg}
        edges = {m: graph[m] & members for m in members}
        cycles += strongly_connected(members, edges)
    return cycles


def forbidden_imports(root: Path = ROOT, package: str = PACKAGE) -> list[tuple[str, str]]:
    """(importer, imported) pairs against :data:`FORBIDDEN`."""
    graph = import_graph(root, package)

    def within(name: str, pkg: str) -> bool:
        return name == pkg or name.startswith(pkg + ".")

    return sorted(
        (src, dst)
        for src, targets in graph.items()
        for lower, uppers in FORBIDDEN.items()
        if within(src, lower)
        for dst in targets
        if any(within(dst, upper) for upper in uppers)
    )


def main() -> int:
    cycles = package_cycles()
    forbidden = forbidden_imports()
    for component in cycles:
        print("circle: " + " <-> ".join(component))
    for src, dst in forbidden:
        print(f"forbidden: {src} imports {dst}")
    if not cycles and not forbidden:
        print(f"no import circle inside any package of {PACKAGE}, no forbidden import")
    return 1 if cycles or forbidden else 0


if __name__ == "__main__":
    sys.exit(main())
