"""The import contract between the engine and its faces, read from the source with ``ast``.

- ``core/`` (the engine) imports none of ``sftwizard.cli``, ``sftwizard.tui``, ``textual``, ``rich``;
- ``tui/`` does not import ``sftwizard.cli`` (the CLI is the one face that opens the TUI);
- the core modules import one another without a circle, so the engine reads bottom-up.

Every module file of the three packages is walked, and every import statement in it counts, including
those inside functions: a lazy import is still an edge.

A different rule, checked here from the source too: heavy libraries (torch, transformers, …) are imported
only inside functions, never when a module is imported. The start-up tests (``python -c "import …"``
and a look at ``sys.modules``) check what that rule is for: the TUI and the CLI start without them.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "sftwizard.core", "cli": "sftwizard.cli", "tui": "sftwizard.tui"}
FORBIDDEN = {
    "sftwizard.core": ("sftwizard.cli", "sftwizard.tui", "textual", "rich"),
    "sftwizard.tui": ("sftwizard.cli",),
}
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "bitsandbytes", "accelerate", "deepspeed")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the three package folders."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, at any depth, relative ones made absolute.

    ``from x import y`` yields both ``x`` and ``x.y`` (y may be a submodule); callers match by prefix.
    """
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, node.lineno))
            out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def import_time_imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Like ``imports_of``, but only the imports run when the module is imported: not those inside a
    function, nor under ``if TYPE_CHECKING:``."""
    out = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.module or "", node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return out


def heavy_at_import(root: Path) -> list[str]:
    """``file:line: module imports torch`` for every heavy library imported when a module is."""
    found = []
    for name, path in module_files(root).items():
        for module, line in import_time_imports(name, path):
            hit = next((h for h in HEAVY if _within(module, h)), None)
            if hit:
                found.append(f"{path.relative_to(root)}:{line}: {name} imports {hit} at import time")
    return sorted(found)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def contract_breaches(root: Path) -> list[str]:
    """One line per import that crosses a forbidden boundary: ``file:line: a imports b``."""
    breaches = set()
    for name, path in module_files(root).items():
        for package, banned in FORBIDDEN.items():
            if not _within(name, package):
                continue
            for module, line in imports_of(name, path):
                hit = next((b for b in banned if _within(module, b)), None)
                if hit:
                    breaches.add(f"{path.relative_to(root)}:{line}: {name} imports {hit}")
    return sorted(breaches)


def core_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the core modules it imports (itself and the package ``__init__`` excluded)."""
    mods = {n: p for n, p in module_files(root).items() if _within(n, "sftwizard.core")}
    graph = defaultdict(set)
    for name, path in mods.items():
        for module, _ in imports_of(name, path):
            if module in mods and module not in (name, "sftwizard.core"):
                graph[name].add(module)
    return graph


def core_cycles(root: Path) -> list[tuple[list[str], set[str]]]:
    """Per strongly connected group of core modules: one circle in it (a path a -> b -> ... -> a), and
    the whole group (every module that can reach every other)."""
    graph = core_graph(root)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan; the core is ~60 modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(_circle_in(graph, group), group) for group in groups]


def _circle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest circle through the group's first module (breadth-first back to the start)."""
    start = min(group)
    previous = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(group)


def documented_layers(root: Path) -> dict[str, int]:
    """Core module -> its layer number, read from "## The layers of core" in docs/architecture.md."""
    text = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The layers of core", 1)[1].split("\n## ", 1)[0]
    layers, number = {}, None
    for line in section.splitlines():
        if (m := re.match(r"(\d+)\. \*\*", line)):
            number = int(m.group(1))
        elif not line.strip():
            number = None
        if number is not None:
            for module in re.findall(r"`(\w+)\.py`", line):
                layers.setdefault(f"sftwizard.core.{module}", number)
    return layers


def upward_imports(root: Path) -> list[str]:
    """``a (layer 4) imports b (layer 5)`` for every import of a core module from a higher layer."""
    layers = documented_layers(root)
    return sorted(f"{_short(a)} (layer {layers[a]}) imports {_short(b)} (layer {layers[b]})"
                  for a, targets in core_graph(root).items() for b in targets
                  if a in layers and b in layers and layers[b] > layers[a])


def _short(name: str) -> str:
    return name.removeprefix("sftwizard.core.")


def test_core_and_tui_respect_the_import_contract():
    breaches = contract_breaches(REPO)
    assert not breaches, "imports across a forbidden boundary:\n" + "\n".join(breaches)


def test_heavy_libraries_are_imported_only_inside_functions():
    found = heavy_at_import(REPO)
    assert not found, "move these imports into the functions that need them:\n" + "\n".join(found)


def test_every_core_module_has_its_layer_in_the_docs():
    layers = documented_layers(REPO)
    modules = {n for n in module_files(REPO) if n.startswith("sftwizard.core.")}
    assert modules - set(layers) == set(), "not in docs/architecture.md's layers of core"
    assert set(layers) - modules == set(), "in docs/architecture.md's layers of core, but no such module"


def test_core_modules_import_only_from_their_layer_or_below():
    upward = upward_imports(REPO)
    assert not upward, "imports against the layers in docs/architecture.md:\n" + "\n".join(upward)


def test_core_modules_import_each_other_without_a_circle():
    cycles = core_cycles(REPO)
    assert not cycles, "import circles in core:\n" + "\n".join(
        f"{' -> '.join(map(_short, circle))}  (one of the circles among {', '.join(sorted(map(_short, group)))})"
        for circle, group in cycles)


def test_the_walk_sees_every_package_module():
    files = module_files(REPO)
    on_disk = sum(1 for folder in PACKAGES for _ in (REPO / folder).rglob("*.py"))
    assert len(files) == on_disk
    assert {"sftwizard.core.config", "sftwizard.cli.main", "sftwizard.tui.app", "sftwizard.tui.steps"} <= set(files)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for folder in PACKAGES:
        (root / folder).mkdir(exist_ok=True)
    return root


def test_the_checks_catch_lazy_imports_relative_imports_and_circles(tmp_path):
    """The checker itself, on a small made-up tree: it must see what it is there to see."""
    root = _tree(tmp_path, {
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from textual.app import App\n    from . import b\n",
        "core/b.py": "from .c import x\n",
        "core/c.py": "import rich.console\nfrom sftwizard.core.a import f\n",
        "core/d.py": "from ..tui import app\n",
        "tui/__init__.py": "",
        "tui/app.py": "def main():\n    import sftwizard.cli.main\n",
        "cli/main.py": "from sftwizard.tui import app\n",  # the CLI may open the TUI
        "cli/train.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                         "class A:\n    import trl.trainer\ndef f():\n    import transformers\n"),
    })
    assert contract_breaches(root) == [
        "core/a.py:2: sftwizard.core.a imports textual",
        "core/c.py:1: sftwizard.core.c imports rich",
        "core/d.py:1: sftwizard.core.d imports sftwizard.tui",
        "tui/app.py:2: sftwizard.tui.app imports sftwizard.cli",
    ]
    assert heavy_at_import(root) == ["cli/train.py:5: sftwizard.cli.train imports trl at import time"]
    [(circle, group)] = core_cycles(root)
    assert list(map(_short, circle)) == ["a", "b", "c", "a"] and set(map(_short, group)) == {"a", "b", "c"}
    (root / "core/c.py").write_text("x = 1\n")
    assert core_cycles(root) == []

