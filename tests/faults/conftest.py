"""The fault-injection suite: each test injects one fault and asserts that nothing is lost.

Runs train on a tiny `folder` dataset (11 cases of 16³, made by test_datasets.make_folder) with
TINY_TRAIN, about a second each on one CPU thread. The terminal summary prints one line:
faults injected (tests run), survived (passed), lost (failed)."""
from __future__ import annotations

import shutil

import pytest

from conftest import TINY_TRAIN
from test_datasets import make_folder

# checkpoints at steps 2, 4, 6; validations at 3 and 6
FAULT_TRAIN = {**TINY_TRAIN, "ckpt_every": 2}
_tally = {"injected": 0, "survived": 0, "lost": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            _tally["skipped"] += 1
            return
        _tally["injected"] += 1
        _tally["survived" if report.passed else "lost"] += 1


def pytest_terminal_summary(terminalreporter):
    if any(_tally.values()):
        skipped = f" ({_tally['skipped']} skipped)" if _tally["skipped"] else ""
        terminalreporter.write_line(f"faults injected: {_tally['injected']}, survived: {_tally['survived']}, "
                                    f"lost: {_tally['lost']}{skipped}")


@pytest.fixture(scope="package")
def folder_root(tmp_path_factory):
    """The tiny dataset, prepared in its own cache, for the whole suite (DGBENCH_* restored after)."""
    from dgbench.data import adapter as adapter_mod
    from dgbench.data.cache import prepare
    from dgbench.registry import DATASETS
    base = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        shutil.copytree(adapter_mod.REPO_SPLITS, base / "splits")
        mp.setenv("DGBENCH_CACHE", str(base / "cache"))
        mp.setenv("DGBENCH_SPLITS", str(base / "splits"))
        root = base / "data"
        make_folder(root)
        mp.setenv("DGBENCH_FOLDER_ROOT", str(root))
        prepare(DATASETS.get("folder")(), root, progress=False)
        yield root


@pytest.fixture(scope="package")
def fault_spec(folder_root):
    from dgbench.spec import resolve
    return resolve("folder", "erm", seed=0, train=FAULT_TRAIN)


@pytest.fixture(scope="package")
def clean(tmp_path_factory, fault_spec):
    """The run never interrupted: what every recovered run must equal."""
    from dgbench.rundir import RunDir
    from dgbench.train import execute
    results = tmp_path_factory.mktemp("clean")
    assert execute(fault_spec, results, progress=False) == "done"
    return RunDir.for_run(results, fault_spec.run_id)
