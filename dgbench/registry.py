"""Named registries for datasets, methods, backbones and feature extractors.

Plug-ins register themselves with a decorator when their module is imported; `load_plugins`
imports every module of the plug-in packages (methods/ -> dgbench_methods, datasets/ ->
dgbench_datasets, and dgbench.models) so that a name can be looked up without a central
if/elif chain. A lookup imports the plug-ins of its kind's home package first (datasets:
dgbench_datasets, which needs no torch; methods: dgbench_methods; backbones and extractors:
dgbench.models) and every plug-in package only when the name is not there.

`declared(key, compute)` keeps facts about plug-ins (a method's defaults and revision, a backbone's
patch check) in a small file keyed by a fingerprint of every plug-in and engine source file, so
that a fresh `sweep --dry-run` resolves run ids without importing the method and model plug-ins
(which import torch, seconds). Any edit to a source file changes the fingerprint: the facts are
then computed again from the classes themselves, never read stale.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, TypeVar

from dgbench.errors import UnknownName

T = TypeVar("T")
PACKAGES = ("dgbench.models", "dgbench_methods", "dgbench_datasets")


class Registry(Dict[str, object]):
    def __init__(self, kind: str, home: str):
        super().__init__()
        self.kind = kind
        self.home = home                      # the plug-in package that registers this kind

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self and self[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = obj
            return obj
        return deco

    def get(self, name: str):  # type: ignore[override]
        load_plugins((self.home,))
        if name not in self:
            load_plugins()
        if name not in self:
            known = ", ".join(sorted(self)) or "(none)"
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {known}")
        return self[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self)


DATASETS = Registry("dataset", "dgbench_datasets")
METHODS = Registry("method", "dgbench_methods")
BACKBONES = Registry("backbone", "dgbench.models")
EXTRACTORS = Registry("feature extractor", "dgbench.models")

register_dataset = DATASETS.register
register_method = METHODS.register
register_backbone = BACKBONES.register
register_extractor = EXTRACTORS.register

_loaded: set[str] = set()


def load_plugins(packages: tuple[str, ...] = PACKAGES) -> None:
    for pkg_name in packages:
        if pkg_name in _loaded:
            continue
        _loaded.add(pkg_name)
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")


# ---------------------------------------------------------------------------------------------
# facts about plug-ins, kept between processes
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    """sha1 of (path, size, mtime) of every .py file of dgbench and the plug-in packages, with
    the Python version: any edit, install or upgrade of a source gives a new one. Taken once per
    process, so facts computed from the classes this process loaded are never filed under the
    fingerprint of sources edited since (and the tree is walked once, not once per new fact)."""
    h = hashlib.sha1(sys.version.encode())
    for pkg in ("dgbench", "dgbench_methods", "dgbench_datasets"):
        spec = importlib.util.find_spec(pkg)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for f in sorted(files):
                    if f.endswith(".py"):
                        st = os.stat(os.path.join(folder, f))
                        h.update(f"{folder}/{f} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


_facts: dict[str, Any] | None = None


def _facts_file() -> Path:
    from dgbench.data.adapter import cache_dir
    return cache_dir() / "plugins" / f"facts-{_fingerprint()}.json"


def declared(key: str, compute: Callable[[], Any]) -> Any:
    """The fact `key` (JSON-able), from the facts file of the current sources, else `compute()`
    (which may import the plug-ins) stored there. Once the plug-ins are imported in this process
    it is always computed (a registration made since counts). Always returned as JSON gives it
    back (lists, not tuples), whether just computed or read."""
    global _facts
    if _facts is None:
        try:
            _facts = json.loads(_facts_file().read_text())
        except (OSError, ValueError):
            _facts = {}
    if key in _facts and not set(PACKAGES) <= _loaded:
        return _facts[key]
    value = json.loads(json.dumps(compute()))
    if _facts.get(key) != value:
        _facts[key] = value
        try:
            from dgbench.atomic import atomic_write_json
            path = _facts_file()
            atomic_write_json(path, _facts)
            for old in path.parent.glob("facts-*.json"):     # those of other sources
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError:
            pass                             # a read-only cache: computed again next time
    return value


def method_names() -> list[str]:
    return declared("methods", METHODS.names)


def method_declaration(name: str) -> dict:
    """{"defaults": the method class's hyperparameter defaults, "revision": its revision}."""
    if name not in method_names():
        raise UnknownName(f"unknown method {name!r}; known: {', '.join(method_names())}")

    def compute() -> dict:
        cls = METHODS.get(name)
        return {"defaults": dict(cls.defaults), "revision": int(cls.revision)}
    return declared(f"method:{name}", compute)
