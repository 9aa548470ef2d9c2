"""Shared test setup: one throw-away data cache per session (the synthetic benchmark is
generated into it once), unless DGBENCH_TEST_CACHE names a cache to reuse between sessions."""
import os
import shutil
import tempfile

import pytest
import torch


# The process that made the throw-away cache (the only one without pytest-xdist, else the xdist
# controller) names it here; the workers it starts inherit the variable and use the same folder.
_OWNER = "DGBENCH_TEST_SESSION_CACHE"


def _session_cache() -> tuple[str, bool]:
    """(cache folder, whether this process removes it at the end). DGBENCH_TEST_CACHE if set
    (kept); else one fresh folder per test session, shared by its pytest-xdist workers (they
    generate synth once: dgbench.data.cache takes a lock for it) and removed when it ends."""
    if os.environ.get("DGBENCH_TEST_CACHE"):
        return os.environ["DGBENCH_TEST_CACHE"], False
    if os.environ.get(_OWNER):
        return os.environ[_OWNER], False
    path = tempfile.mkdtemp(prefix="dgbench-test-cache-")
    os.environ[_OWNER] = path
    return path, True


_cache, _remove_cache = _session_cache()
os.environ["DGBENCH_CACHE"] = _cache


def pytest_unconfigure(config):
    if _remove_cache:
        shutil.rmtree(_cache, ignore_errors=True)


# One thread: small 3-D ops are faster single-threaded, and far faster when Slurm jobs or
# local workers share the cores (multi-threaded OpenMP then spins against them).
torch.set_num_threads(1)

# The fault-injection suite's tally (tests/faults): counted here, where the process that prints
# the summary sees every report (with pytest-xdist the workers run the tests, the main process reports).
_tally = {"injected": 0, "survived": 0, "lost": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if not report.nodeid.startswith("tests/faults/"):
        return
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


# The smallest real run on the embedded benchmark (a few CPU seconds).
TINY_TRAIN = {"steps": 6, "batch_size": 2, "val_every": 3, "ckpt_every": 3, "sw_overlap": 0.0,
              "backbone_kwargs": {"width": 4, "levels": 2}}


def interrupted_run(spec, results, at_step: int):
    """Run until step ``at_step`` is done, then Ctrl-C (KeyboardInterrupt) as the next one
    starts; returns the run folder."""
    from dgbench.rundir import RunDir
    from dgbench.train import Trainer, execute
    orig = Trainer.train_step

    def step(self, x, y):
        if self.step == at_step:
            raise KeyboardInterrupt
        return orig(self, x, y)
    Trainer.train_step = step
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(spec, results, progress=False)
    finally:
        Trainer.train_step = orig
    return RunDir.for_run(results, spec.run_id)


def tiny_synth_run(results, method: str):
    """A finished 2-step run of `method` on synth (validated on one source-val case), for tests of
    the diagnostics that read a run folder; returns (RunDir, Trainer)."""
    from dgbench.rundir import RunDir
    from dgbench.spec import resolve
    from dgbench.train import Trainer
    spec = resolve("synth", method, seed=0, train={**TINY_TRAIN, "steps": 2, "val_every": 2})
    rd = RunDir.for_run(results, spec.run_id)
    rd.write_spec(spec)
    tr = Trainer(spec, rd, progress=False)
    tr.val_cases = tr.val_cases[:1]                      # one case keeps the tests short
    tr.fit()
    return rd, tr


def folder_digest(path) -> dict:
    """SHA-1 of every file under path, by name: equal before and after means nothing was written."""
    import hashlib
    from pathlib import Path
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_folder_env(tmp_path_factory):
    """A tiny `folder` dataset (11 cases of 16³, test_datasets.make_folder: 6 source, 3 + 2 in two
    target sites), prepared once in a cache of its own. Returns the environment that selects it
    (DGBENCH_CACHE, DGBENCH_SPLITS, DGBENCH_FOLDER_ROOT). End-to-end tests that need a real run,
    but not the embedded benchmark, train and evaluate on it in about a second instead of
    evaluating synth's 29 cases of 48³."""
    from dgbench.data import adapter as adapter_mod
    from dgbench.data.cache import prepare
    from dgbench.registry import DATASETS
    from test_datasets import make_folder
    base = tmp_path_factory.mktemp("tiny-folder")
    shutil.copytree(adapter_mod.REPO_SPLITS, base / "splits")
    env = {"DGBENCH_CACHE": str(base / "cache"), "DGBENCH_SPLITS": str(base / "splits"),
           "DGBENCH_FOLDER_ROOT": str(base / "data")}
    make_folder(base / "data")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        prepare(DATASETS.get("folder")(), base / "data", progress=False)
    return env


@pytest.fixture
def on_tiny_folder(monkeypatch, tiny_folder_env):
    """The tiny `folder` dataset selected for this test (and the processes it starts)."""
    for k, v in tiny_folder_env.items():
        monkeypatch.setenv(k, v)
    return tiny_folder_env


@pytest.fixture(scope="session")
def synth_prepared():
    from dgbench.data.cache import ensure_prepared
    from dgbench.registry import DATASETS
    return ensure_prepared(DATASETS.get("synth")())


def method_context(n_classes=3, sided=False, patch_size=(32, 32, 32), aug_prob=0.33, amp_dtype=None,
                   device="cpu"):
    """A real MethodContext for building a method outside a run: the loop's loss and the run's
    facts as given (a run's own comes from `dgbench.train.Trainer`)."""
    from dgbench.method import MethodContext
    from dgbench.train import loop_loss
    return MethodContext(loss_fn=loop_loss(), amp_dtype=amp_dtype, n_classes=n_classes, sided=sided,
                         patch_size=tuple(patch_size), aug_prob=aug_prob, device=torch.device(device))
