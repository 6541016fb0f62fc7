"""The recipes' modules import each other at the top of the file only, and their imports form no
circle: each module can be read (and imported) after the ones it names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("gtn_py", "recipes", "viz")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement names (a name imported from a package may be a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in PROJECT]
    if node.level:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] not in PROJECT:
        return []
    return [base] + [f"{base}.{a.name}" for a in node.names]


def recipe_imports() -> tuple[dict[str, set[str]], list[str]]:
    """Each recipe module's top-level project imports, and every import made inside a function."""
    modules = {module_name(p): p for p in (ROOT / "recipes").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    inside: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top = {n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = imported(path, node)
                if node in top:
                    graph[name] |= {m for m in names if m in modules and m != name}
                elif names:
                    inside.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph, inside


def test_no_project_imports_inside_functions():
    _, inside = recipe_imports()
    assert not inside, f"imports inside functions (they hide circles): {inside}"


def test_the_recipes_import_graph_has_no_circle():
    graph, _ = recipe_imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            # a package's __init__ is imported before its modules: only cycles through real edges count
            if not (module.startswith(dep + ".") and dep in graph):
                visit(dep, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_private_name_is_imported_from_another_module():
    """The library, the recipes, viz, bench and tools use each other's public names only (a
    private name is its module's own business: it may change without notice)."""
    found = []
    for folder in ("gtn_py", "recipes", "viz", "bench", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    found += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
                elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                        and isinstance(node.value, ast.Name) and node.value.id in ("gtn", "gtn_py"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, f"private names used from other modules: {found}"
