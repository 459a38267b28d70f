"""The import graph of `src/lmforge`: circles, and imports that run back up the flow.

    python tools/import_graph.py            # prints both; exit 1 if there is either
    python tools/import_graph.py --edges    # also every module's imports

Built with `ast` from the source: imports inside functions count, imports under `if TYPE_CHECKING:`
do not. A module may import its own package and any package on a lower floor of `FLOORS`; packages
on the same floor (train, eval, export) never import each other. Floors follow the pipeline:
raw files → data → tokenizer → tokens → model → checkpoint/infer → train | eval | export, with the
leaves below everything and the composers (`config`, `run`, `cli`) on top.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PKG = "lmforge"
FLOORS: list[set[str]] = [
    {"errors"},
    {"io", "validate", "configtools"},  # leaves every stage may use
    {"monitor"},  # imports none of the stages
    {"data"},
    {"tokenizer"},
    {"tokens"},
    {"model"},
    {"checkpoint", "infer"},
    {"train", "eval", "export"},
    {"config"},
    {"run"},
    {"cli", "__main__"},
]


def modules(src: Path) -> dict[str, Path]:
    out = {}
    for p in sorted((src / PKG).rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _typing_only(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip.update(id(x) for b in n.body for x in ast.walk(b))
    return skip


def edges(src: Path) -> dict[str, set[str]]:
    mods = modules(src)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out: dict[str, set[str]] = defaultdict(set)
    for m, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _typing_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
                    base = ".".join(anchor[: len(anchor) - (node.level - 1)] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t) if t.split(".")[0] == PKG else None
                # the package's own __init__ (an `from lmforge import x` anchor) is no dependency
                if r and r != m and r != PKG and not m.startswith(r + "."):
                    out[m].add(r)
    return out


def package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor(mod: str) -> int:
    pkg = package(mod)
    for i, names in enumerate(FLOORS):
        if pkg in names:
            return i
    raise KeyError(f"{mod}: package {pkg!r} has no floor in tools/import_graph.py FLOORS; add it")


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def report(src: Path) -> dict[str, list]:
    g = edges(src)
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for a, bs in g.items():
        for b in bs:
            if package(a) != package(b):
                pkg_graph[package(a)].add(package(b))
    upward = sorted((a, b) for a, bs in g.items() for b in bs
                    if package(a) != package(b) and floor(b) >= floor(a))
    return {"file_circles": circles(g), "package_circles": circles(pkg_graph), "upward": upward, "edges": g}


def main(argv: list[str]) -> int:
    src = Path(__file__).resolve().parents[1] / "src"
    r = report(src)
    if "--edges" in argv:
        for m in sorted(r["edges"]):
            print(f"{m} -> {' '.join(sorted(r['edges'][m]))}")
    for c in r["file_circles"]:
        print("file circle:", " <-> ".join(c))
    for c in r["package_circles"]:
        print("package circle:", " <-> ".join(c))
    for a, b in r["upward"]:
        print(f"import back up the flow: {a} -> {b}")
    print(f"import circles: {len(r['file_circles'])} between files, {len(r['package_circles'])} between packages; "
          f"imports back up the flow: {len(r['upward'])}")
    return 1 if r["file_circles"] or r["package_circles"] or r["upward"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
