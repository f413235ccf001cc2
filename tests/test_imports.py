"""The package's import graph, read with the standard library's `ast`: no module
imports itself through others, and the core imports no family and no noise source."""

import ast
from pathlib import Path

import sdekit


_PACKAGE = Path(sdekit.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(_PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    root = _PACKAGE.parent
    return (root / relative).with_suffix(".py").exists() or (
        root / relative / "__init__.py"
    ).exists()


def import_graph() -> dict[str, set[str]]:
    """Every sdekit module and the sdekit modules it imports, anywhere in its body
    (inside functions and `if TYPE_CHECKING:` blocks too)."""
    graph = {}
    for path in _PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from package import submodule` imports the submodule.
                targets = [
                    f"{module}.{alias.name}"
                    if _is_module(f"{module}.{alias.name}")
                    else module
                    for alias in node.names
                ]
            else:
                continue
            edges |= {t for t in targets if t == "sdekit" or t.startswith("sdekit.")}
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    graph = import_graph()
    assert "sdekit._solve" in graph and "sdekit.noise._augment" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_core_imports_no_family_and_no_noise_source():
    graph = import_graph()
    core = [name for name in graph if name.count(".") == 1 and name.startswith("sdekit._")]
    outside = ("sdekit.noise", "sdekit.stable", "sdekit.fractional", "sdekit.langevin")
    for name in core:
        bad = sorted(t for t in graph[name] if t.startswith(outside))
        assert not bad, (name, bad)
