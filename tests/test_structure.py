"""The shape of the code: the rules of the house that a reviewer would otherwise check by eye.

Read from the source as text (``ast``), nothing is run: file and function sizes, the number of
modules at the top of the library, private names that cross modules, and the direction of every
import between the pipeline's stages (text -> model -> train/store -> analysis -> export ->
server -> CLI). A change that breaks one says which file and line.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The repository's folders and the import names they install as (pyproject.toml's package-dir).
FOLDERS = {"interpret": "lstmscope", "server": "lstmscope.server"}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 120
MAX_TOP_MODULES = 10

# The pipeline's stages, lowest first: a module may import its own stage or a lower one.
STAGES = [
    ("lstmscope", "lstmscope.errors", "lstmscope.names", "lstmscope.disk"),
    ("lstmscope.text",),
    ("lstmscope.model",),
    ("lstmscope.train", "lstmscope.store"),
    ("lstmscope.analysis",),
    ("lstmscope.export",),
    ("lstmscope.detect",),
    ("lstmscope.server",),
    ("lstmscope.cli", "lstmscope.__main__"),
]


def _modules() -> dict[str, Path]:
    """Every library and dashboard module: ``{dotted import name: file}``."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "interpret" and parts[:1] == ["server"]:
                continue
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _stage(module: str) -> int:
    best = -1
    for rank, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = rank  # the longest (latest) prefix wins: lstmscope.server over lstmscope
    if best < 0:
        raise AssertionError(f"{module}: not in any stage of tests/test_structure.py")
    return best


def _package_of(module: str) -> str:
    is_package = MODULES[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import of one of ours."""
    out = []
    tree = TREES[module]
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(module).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            targets = [base]
            targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t in MODULES and t != module:
                out.append((t, node.lineno, id(node) in top_level))
    return out


def test_every_file_is_small() -> None:
    big = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in MODULES.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    ]
    assert not big, f"over {MAX_FILE_LINES} lines (a file doing two jobs): {big}"


def test_every_function_is_small() -> None:
    big = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert not big, f"functions over {MAX_FUNCTION_LINES} lines: {big}"


def test_few_modules_at_the_top() -> None:
    top = sorted(p.name for p in (ROOT / "interpret").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_imports_follow_the_pipeline() -> None:
    """No import runs back up a stage; the library imports the dashboard only from the CLI."""
    back = []
    for module in MODULES:
        for target, line, top_level in _imports(module):
            # The root package names the public API through a lazy __getattr__ (so that
            # `import lstmscope` stays cheap): those imports run only when a name is asked for.
            if module == "lstmscope" and not top_level:
                continue
            if _stage(target) > _stage(module):
                back.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}")
    assert not back, back


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _, _ in _imports(module):
            graph[module].add(target)
    # A package imports its own modules to name its API: that edge is not a cycle of jobs.
    for module in MODULES:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def _private_definitions(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


PRIVATE = {name: _private_definitions(tree) for name, tree in TREES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_modules(module: str) -> None:
    """``_name`` is used only in the module that defines it (imports and attribute reads)."""
    tree = TREES[module]
    own = PRIVATE[module]
    elsewhere = set().union(*(names for m, names in PRIVATE.items() if m != module))
    crossing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            crossing += [
                f"line {node.lineno}: imports {a.name}"
                for a in node.names
                if a.name.startswith("_")
                and not a.name.startswith("__")
                and (node.module or "").startswith(("lstmscope", ""))
                and (node.level or (node.module or "").startswith("lstmscope"))
            ]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") or node.attr in own:
                continue
            receiver = node.value
            if isinstance(receiver, ast.Name) and receiver.id in {"self", "cls"}:
                continue
            if node.attr in elsewhere:
                crossing.append(f"line {node.lineno}: reads .{node.attr}")
    assert not crossing, f"{MODULES[module].relative_to(ROOT)}: {crossing}"
