"""Built-in corpora, so a first run needs no download.

`builtin:shakespeare` (and any name in `BUILTIN_TEXTS`) is a text file shipped inside the package
(`lmforge/data/corpora/`, see its README); `expand_inputs` replaces the name with the file's path.

`builtin:stdlib` is a corpus every Python installation carries.

Documents: each topic of `pydoc_data.topics.topics` (the language reference pages that `help()`
shows), then one document per standard-library module holding the module's docstring and those of
its public classes, methods and functions (about 1.5–2 MB of English technical prose).

The modules are imported in a child process: importing ~300 modules has side effects (printing,
threads, signal handlers, a larger heap) that the calling process should not inherit, and a child
gives the same output whatever the parent had already imported. The order is sorted, so the corpus
is identical across runs on the same Python.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator

from lmforge.data.document import Document
from lmforge.errors import DataError

BUILTIN_STDLIB = "builtin:stdlib"
BUILTIN_TEXTS = {"builtin:shakespeare": "tinyshakespeare.txt"}
"""Corpora shipped as files in `lmforge/data/corpora/`, by input name."""


def builtin_text_path(name: str) -> str:
    """The packaged file behind a `builtin:` text corpus name."""
    from importlib import resources

    path = resources.files("lmforge.data") / "corpora" / BUILTIN_TEXTS[name]
    if not path.is_file():
        raise DataError(f"data.inputs: {name} is missing from this installation ({path}); reinstall lmforge")
    return str(path)

# Modules that open windows/browsers, print on import, are test suites, or are platform shims.
_SKIP_TOP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip",
    "pydoc_data", "msilib", "msvcrt", "winreg", "winsound", "nt", "_winapi", "distutils", "webbrowser",
    "__phello__", "xxsubtype", "xxlimited", "ossaudiodev", "nis", "spwd", "crypt", "readline", "curses",
}
_SKIP_PART = re.compile(r"(^|\.)(_[^.]*|tests?|idle_test|__main__|setup)(\.|$)")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class _Elided:
    def __repr__(self) -> str:
        return "..."


def _plain_default(p: inspect.Parameter) -> inspect.Parameter:
    """Keep short literal defaults; others (os.environ, objects) print differently per process."""
    d = p.default
    if d is p.empty or d is None or isinstance(d, (bool, int, float)):
        return p
    if isinstance(d, (str, bytes)) and len(d) <= 40:
        return p
    return p.replace(default=_Elided())


def _signature(obj: object) -> str:
    try:
        sig = inspect.signature(obj)
        sig = sig.replace(parameters=[_plain_default(p) for p in sig.parameters.values()])
        return _ADDRESS.sub("", str(sig))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj: object) -> str | None:
    # obj.__doc__ (not inspect.getdoc) so inherited docstrings are not repeated under every subclass
    d = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    return inspect.cleandoc(d) if d and d.strip() else None


def _module_text(name: str, mod: object) -> str:
    parts = []
    if d := _doc(mod):
        parts.append(f"Module {name}\n\n{d}")
    for attr, obj in sorted(vars(mod).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            if d := _doc(obj):
                parts.append(f"class {name}.{attr}{_signature(obj)}\n\n{d}")
            for m_name, m in sorted(vars(obj).items()):
                if m_name.startswith("_") or not callable(m):
                    continue
                if d := _doc(m):
                    parts.append(f"{name}.{attr}.{m_name}{_signature(m)}\n\n{d}")
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            if d := _doc(obj):
                parts.append(f"{name}.{attr}{_signature(obj)}\n\n{d}")
    return "\n\n".join(parts)


def _module_names() -> list[str]:
    names = []
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in _SKIP_TOP:
            continue
        names.append(top)
        spec = _safe_import(top)
        path = getattr(spec, "__path__", None)
        if path:  # a package: its public submodules too (email.mime.text, xml.etree.ElementTree, ...)
            for info in pkgutil.walk_packages(path, prefix=top + ".", onerror=lambda _n: None):
                if not _SKIP_PART.search(info.name):
                    names.append(info.name)
    return sorted(set(names))


def _safe_import(name: str) -> object | None:
    import importlib

    try:
        return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - any failure (ImportError, SystemExit, OSError) means "skip it"
        return None


def _dump() -> None:
    """Child-process entry point: print one JSON object per document on stdout."""
    import contextlib
    import io
    import pydoc_data.topics

    out = sys.stdout
    for key in sorted(pydoc_data.topics.topics):
        out.write(json.dumps({"id": f"stdlib:topic:{key}", "text": pydoc_data.topics.topics[key],
                              "meta": {"source": "builtin:stdlib", "kind": "topic", "topic": key}}) + "\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        names = _module_names()
    for name in names:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            mod = _safe_import(name)
            text = _module_text(name, mod) if mod is not None else ""
        if text.strip():
            out.write(json.dumps({"id": f"stdlib:module:{name}", "text": text,
                                  "meta": {"source": "builtin:stdlib", "kind": "module", "module": name}}) + "\n")
    out.flush()


def iter_stdlib_documents() -> Iterator[Document]:
    """The `builtin:stdlib` corpus, deterministic for a given Python installation (extracted once per
    process, then served from memory; each call yields fresh Document objects)."""
    for doc_id, text, meta in _stdlib_corpus():
        yield Document(doc_id, text, dict(meta))


@functools.lru_cache(maxsize=1)
def _stdlib_corpus() -> tuple[tuple[str, str, dict], ...]:
    # A small fixed environment: the corpus must not depend on the caller's variables.
    env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "SYSTEMROOT", "VIRTUAL_ENV") if k in os.environ}
    env.update(PYTHONHASHSEED="0", PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1", LC_ALL="C.UTF-8")
    cmd = [sys.executable, "-c", "from lmforge.data.builtin import _dump; _dump()"]
    proc = subprocess.run(cmd, capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise DataError(f"builtin:stdlib: extracting the standard-library corpus failed: {' | '.join(tail)}")
    out = []
    for n, line in enumerate(proc.stdout.decode("utf-8").splitlines(), 1):
        d = json.loads(line)
        d["meta"]["line"] = n
        out.append((d["id"], d["text"], d["meta"]))
    return tuple(out)


if __name__ == "__main__":  # pragma: no cover
    _dump()
