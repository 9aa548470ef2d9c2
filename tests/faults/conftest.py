"""The fault-injection suite: each test injects one fault and asserts that nothing is lost.

Runs train on the tiny `folder` dataset (tests/conftest.py, tiny_folder_env) with
TINY_TRAIN, about a second each on one CPU thread. The terminal summary prints one line:
faults injected (tests run), survived (passed), lost (failed); tests/conftest.py counts them,
so that the line is also printed when pytest-xdist runs the tests in worker processes."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY_TRAIN

# checkpoints at steps 2, 4, 6; validations at 3 and 6
FAULT_TRAIN = {**TINY_TRAIN, "ckpt_every": 2}


@pytest.fixture(scope="package")
def folder_root(tiny_folder_env):
    """The tiny dataset (tests/conftest.py) selected for the whole suite (DGBENCH_* restored after)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in tiny_folder_env.items():
            mp.setenv(k, v)
        yield Path(tiny_folder_env["DGBENCH_FOLDER_ROOT"])


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
