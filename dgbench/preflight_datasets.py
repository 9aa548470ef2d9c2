"""The preflight's dataset and split checks (part of dgbench.preflight, which runs them): the split
file loads, each run was specified with its checksum, and the cache the jobs will use holds the
dataset prepared for that split from unchanged source files. Reads index.json and stats the
source files; prepares nothing."""
from __future__ import annotations

import json
from pathlib import Path

from dgbench.preflight import Problem, plural
from dgbench.spec import RunSpec


def _prepare_command(adapter) -> str:
    root = getattr(adapter, "root", None) or adapter.default_root()
    if root and Path(root).is_dir():
        return f"dgbench prepare {adapter.name} --root {root}"
    return (f"dgbench prepare {adapter.name} --root PATH   (PATH: the dataset folder as downloaded from "
            f"{adapter.download or 'its source'}; docs/datasets.md)")


def adapter_and_split(name: str):
    """(adapter, split), or a Problem when the name is unknown or the split file cannot be read
    (edited, missing, or realised by another version of its rule)."""
    from dgbench.data.io import DataError
    from dgbench.registry import DATASETS
    try:
        adapter = DATASETS.get(name)()
        return adapter, adapter.split()
    except KeyError as e:
        return Problem(f"dataset {name!r}: {e.args[0]}", "correct the name in the sweep file or --datasets")
    except DataError as e:
        return Problem(f"dataset {name}: {e}")


def check_dataset(name: str, specs: list[RunSpec]) -> tuple[list[Problem], str]:
    """Problems of one dataset's runs, and what was checked. Reads index.json and stats the source
    files; prepares nothing."""
    from dgbench.data.adapter import cache_dir
    from dgbench.data.cache import Prepared, prepared_dir
    found = adapter_and_split(name)
    if isinstance(found, Problem):
        return [found], ""
    adapter, split = found
    problems = []
    index_path = prepared_dir(adapter) / "index.json"
    stale = [s for s in specs if s.split_sha != split.sha1]
    if stale and not split.provisional:     # provisional: not prepared there, reported below
        problems.append(Problem(
            f"dataset {name}: {plural(len(stale), 'run')} specified with split checksum "
            f"{', '.join(sorted({s.split_sha[:12] for s in stale}))}, but the jobs will read {split.path} "
            f"(checksum {split.sha1[:12]})",
            "give the jobs the same DGBENCH_CACHE and DGBENCH_SPLITS as this shell (or restore the split file "
            "with git), then submit again"))
    if not index_path.exists():
        if adapter.generated:
            return problems, f"{name}: generated and prepared on first use"
        problems.append(Problem(f"dataset {name}: not prepared in the cache the jobs will use ({cache_dir()})",
                                _prepare_command(adapter)))
        return problems, ""
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        problems.append(Problem(f"dataset {name}: {index_path} is unreadable ({e})", _prepare_command(adapter)))
        return problems, ""
    if split.provisional and not adapter.generated:
        problems.append(Problem(f"dataset {name}: {index_path} exists but {split.path}, the split realised when it "
                                f"was prepared, is missing", _prepare_command(adapter)))
        return problems, ""
    if index.get("split_sha1") != split.sha1:
        if not adapter.generated:
            problems.append(Problem(
                f"dataset {name}: {index_path} was prepared for split checksum {str(index.get('split_sha1'))[:12]}, "
                f"but {split.path} has {split.sha1[:12]}", _prepare_command(adapter)))
        return problems, f"{name}: re-generated on first use (its split changed)"
    changed = Prepared(adapter).changed_sources()
    if changed and not adapter.generated:
        problems.append(Problem(
            f"dataset {name}: {changed[0]}" + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
            + " changed since it was prepared; runs refuse the stale arrays",
            f"dgbench prepare {name} --root {index.get('root', 'PATH')}   (re-validates and re-caches what changed)"))
    return problems, f"{name}: prepared, split {split.sha1[:12]}"
