"""Named registries for datasets, methods, backbones and feature extractors.

Plug-ins register themselves with a decorator when their module is imported; `load_plugins`
imports every module of the two plug-in packages (methods/ -> dgbench_methods,
datasets/ -> dgbench_datasets) so that a name can be looked up without a central if/elif chain.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, TypeVar

T = TypeVar("T")


class Registry(Dict[str, object]):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self and self[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = obj
            return obj
        return deco

    def get(self, name: str):  # type: ignore[override]
        load_plugins()
        if name not in self:
            known = ", ".join(sorted(self)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self)


DATASETS = Registry("dataset")
METHODS = Registry("method")
BACKBONES = Registry("backbone")
EXTRACTORS = Registry("feature extractor")

register_dataset = DATASETS.register
register_method = METHODS.register
register_backbone = BACKBONES.register
register_extractor = EXTRACTORS.register

_loaded = False


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in ("dgbench.models", "dgbench_methods", "dgbench_datasets"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
