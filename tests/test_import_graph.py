"""No import circle among the package's modules: the graph of `import sglang_glm5...` statements (module level and
inside functions alike, read from the AST of every sglang_glm5/**.py, the DSA kernels in sglang_glm5/dsa/ included) has no cycle. A circle
works only while its imports happen in the right order, and was how hooks once imported `is_glm5` back from the
plugin that imports them."""

import ast
from pathlib import Path

import sglang_glm5

PACKAGE = Path(sglang_glm5.__file__).parent
ROOT = PACKAGE.name


def module_name(path: Path) -> str:
    parts = (ROOT, *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules `path` imports (`from X import Y` counts Y when Y is itself a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return (found & known) - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root), on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child), on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_graph_sees_the_package():
    modules = package_modules()
    assert {"sglang_glm5.plugin", "sglang_glm5.hooks.table", "sglang_glm5.dsa.triton"} <= set(modules)
    graph = {name: imported(path, name, set(modules)) for name, path in modules.items()}
    assert "sglang_glm5.hooks.table" in graph["sglang_glm5.plugin"]


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_among_package_modules():
    modules = package_modules()
    graph = {name: imported(path, name, set(modules)) for name, path in modules.items()}
    assert cycles(graph) == []


def test_only_the_plugin_imports_hook_modules():
    """Decisions live in plain modules that hooks and CLIs import; nothing but the plugin (and hooks) imports a hook.
    `hooks.model_choice` (which model serves) is a leaf read by the CPU server's environment too."""
    modules = package_modules()
    readers = {
        (name, dep)
        for name, path in modules.items()
        if not name.startswith(("sglang_glm5.hooks", "sglang_glm5.plugin"))
        for dep in imported(path, name, set(modules))
        if dep.startswith("sglang_glm5.hooks") and dep != "sglang_glm5.hooks.model_choice"
    }
    assert readers == set()


def test_relative_imports_count(tmp_path):
    """No package module imports relatively today; the graph would still see one."""
    init = tmp_path / "__init__.py"
    init.write_text("from .reference import sparse_mla\nfrom ..config import Glm5Config\n")
    known = set(package_modules())
    assert imported(init, "sglang_glm5.dsa", known) == {"sglang_glm5.dsa.reference", "sglang_glm5.config"}

