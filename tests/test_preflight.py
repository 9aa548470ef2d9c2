"""Preflight (dgbench.preflight) and the cost estimate (dgbench.cost): one test per kind of problem,
on tiny fake setups (the `folder` dataset, small fake weights files, a faked `sinfo`)."""
from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from dgbench import cost, preflight
from dgbench.cli import main
from dgbench.models import extractors as ex
from dgbench.models import weights as w
from dgbench.orchestrate import expand
from test_datasets import env, make_folder  # noqa: F401  (env is a fixture)
from test_orchestrate import fake_run

REPO = Path(__file__).resolve().parents[1]
GPU_CLUSTER = {"gpu": {"default": True, "max_minutes": 2880, "gpus": True},
               "cpu": {"default": False, "max_minutes": 720, "gpus": False}}
SLURM_OK = {"partition": "gpu", "time": 1440, "gpus": 1}


@pytest.fixture
def isolated(env, monkeypatch):
    """Own cache and splits (env), no anatomix weights anywhere, no network, a Slurm cluster with a
    default GPU partition."""
    monkeypatch.delenv(w.ANATOMIX_ENV, raising=False)
    monkeypatch.delenv(cost.COST_ENV, raising=False)

    def no_network(*a, **k):
        raise AssertionError("the preflight must not download anything")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(preflight, "slurm_partitions", lambda: (GPU_CLUSTER, ""))
    return Path(env).parent


def problems(text: str) -> list[str]:
    return re.findall(r"^  \d+\. (.*)$", text, re.M)


def fake_anatomix(path: Path, monkeypatch) -> Path:
    """A small file that the check accepts as the published weights (the expected checksum is
    patched to its own); it is not a checkpoint, so building a network from it would fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not the real anatomix weights")
    monkeypatch.setattr(w, "ANATOMIX_SHA1", w.git_blob_sha1(path))
    return path


# ---------------------------------------------------------------------------------------------
# the paper's sweeps on a machine with nothing prepared and no anatomix weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sweep", ["paper", "fewshot"])
def test_paper_sweep_dry_run_lists_exactly_the_missing_data_and_weights(isolated, capsys, sweep):
    results = isolated / "results"
    assert main(["sweep", "--file", str(REPO / "sweeps" / f"{sweep}.yaml"), "--results", str(results),
                 "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("252 runs: 252 run\n")                      # the plan is printed in full
    found = problems(out)
    datasets = ["amos", "brats", "topcow", "hvsmr", "pandg", "prostate"]
    assert found[:6] == [f"dataset {d}: not prepared in the cache the jobs will use ({isolated / 'cache'})"
                         for d in datasets]
    assert len(found) == 7 and found[6].startswith(
        "extractor anatomix, needed by 54 runs of concat, features-only, maskgen on amos, brats, hvsmr, pandg, "
        "prostate, topcow: anatomix weights not found")
    for d in datasets:
        assert f"fix: dgbench prepare {d} --root PATH" in out
    anatomix = isolated / "cache" / "anatomix" / "anatomix.pth"
    assert f"curl -L --create-dirs -o {anatomix} {w.ANATOMIX_URL}" in out and w.ANATOMIX_ENV in out
    assert "slurm: gpu (default), 1440 min, 1 GPU(s) per run" in out
    assert re.search(r"^  estimated: [\d,.]+ GPU-h for \d+ of the 252 runs to run", out, re.M)
    assert not (isolated / "cache" / "prepared").exists() and not anatomix.exists()   # checked, not made
    assert not results.exists()


def test_sweep_stops_with_one_message_listing_every_problem(isolated, capsys):
    results = isolated / "results"
    assert main(["sweep", "--file", str(REPO / "sweeps" / "paper.yaml"), "--results", str(results)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("dgbench sweep: error: preflight: 7 problems; nothing was submitted or run") == 1
    assert len(problems(err)) == 7 and err.count("     fix: ") == 6   # anatomix's fix is in its text
    assert not results.exists()


# ---------------------------------------------------------------------------------------------
# datasets and splits
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def folder(isolated, monkeypatch):
    root = isolated / "mydata"
    make_folder(root)
    monkeypatch.setenv("DGBENCH_FOLDER_ROOT", str(root))
    return root


def test_unprepared_dataset_gives_the_prepare_command_and_bench_stops_too(folder, capsys):
    specs = expand(["folder"], ["erm"])
    report = preflight.check(specs)
    assert [p.what for p in report.problems] == [
        f"dataset folder: not prepared in the cache the jobs will use ({folder.parent / 'cache'})"]
    assert report.problems[0].fix == f"dgbench prepare folder --root {folder.resolve()}"
    assert not (folder.parent / "cache" / "prepared").exists()           # checking prepares nothing
    assert main(["bench", "--dataset", "folder", "--method", "erm", "--versus", "none", "--seeds", "0",
                 "--results", str(folder.parent / "results")]) == 2
    err = capsys.readouterr().err
    assert "dataset folder: not prepared" in err and f"fix: dgbench prepare folder --root {folder.resolve()}" in err
    assert not (folder.parent / "results").exists()
    assert main(["prepare", "folder", "--root", str(folder)]) == 0    # the fix works
    assert preflight.check(expand(["folder"], ["erm"])).problems == []


def test_prepared_for_another_split_and_runs_of_another_split(folder):
    assert main(["prepare", "folder", "--root", str(folder)]) == 0
    spec = expand(["folder"], ["erm"])[0]
    assert preflight.check([spec]).problems == []
    other = dataclasses.replace(spec, split_sha="0" * 40)              # specified against another split
    (p,) = preflight.check([other]).problems
    assert "dataset folder: 1 run specified with split checksum 000000000000, but the jobs will read" in p.what
    index = next((folder.parent / "cache" / "prepared").glob("folder-*/index.json"))
    data = json.loads(index.read_text())
    index.write_text(json.dumps({**data, "split_sha1": "f" * 40}))
    (p,) = preflight.check([spec]).problems
    assert f"{index} was prepared for split checksum ffffffffffff" in p.what
    assert p.fix == f"dgbench prepare folder --root {folder.resolve()}"


def test_changed_source_file_is_a_problem(folder):
    assert main(["prepare", "folder", "--root", str(folder)]) == 0
    image = folder.resolve() / "imagesTr" / "liver_0_0000.nii.gz"
    image.write_bytes(image.read_bytes() + b"\0")
    (p,) = preflight.check(expand(["folder"], ["erm"])).problems
    assert p.what == f"dataset folder: {image} changed since it was prepared; runs refuse the stale arrays"
    assert p.fix.startswith(f"dgbench prepare folder --root {folder.resolve()}")


def test_edited_split_file_is_listed_with_the_other_problems(isolated, env, capsys):
    path = Path(env) / "brats.json"
    data = json.loads(path.read_text())
    data["train"] = data["train"][1:]                                  # content no longer matches sha1
    path.write_text(json.dumps(data))
    assert main(["sweep", "--datasets", "brats,synth", "--methods", "maskgen", "--hparam",
                 "maskgen.extractor=anatomix", "--results", str(isolated / "r"), "--dry-run"]) == 1
    out = capsys.readouterr().out
    found = problems(out)
    assert len(found) == 2
    assert found[0].startswith(f"dataset brats: {path}: split content does not match its recorded checksum")
    assert found[1].startswith("extractor anatomix, needed by 1 run of maskgen on synth")   # brats left out
    assert "synth: generated and prepared on first use" in out


def test_jobs_cache_comes_from_the_slurm_setup_lines(folder, isolated):
    assert main(["prepare", "folder", "--root", str(folder)]) == 0
    specs = expand(["folder"], ["erm"])
    assert preflight.check(specs, "slurm", SLURM_OK).problems == []
    other = isolated / "node-cache"
    opts = {**SLURM_OK, "setup": ["module load cuda", f"export DGBENCH_CACHE={other}"]}
    assert preflight.job_environment("slurm", opts) == {"DGBENCH_CACHE": str(other)}
    assert [p.what for p in preflight.check(specs, "slurm", opts).problems] == [
        f"dataset folder: not prepared in the cache the jobs will use ({other})"]


# ---------------------------------------------------------------------------------------------
# extractor weights
# ---------------------------------------------------------------------------------------------
def test_anatomix_weights_missing_wrong_and_right(isolated, monkeypatch):
    specs = expand(["synth"], ["maskgen", "concat"], hparams={"maskgen": {"extractor": "anatomix"},
                                                               "concat": {"extractor": "anatomix"}})
    (p,) = preflight.check(specs).problems
    cached = isolated / "cache" / "anatomix" / "anatomix.pth"
    assert p.what.startswith("extractor anatomix, needed by 2 runs of concat, maskgen on synth: anatomix "
                             "weights not found") and str(cached) in p.what
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a truncated download")
    (p,) = preflight.check(specs).problems
    assert f"has git blob SHA-1 {w.git_blob_sha1(cached)}, expected {w.ANATOMIX_SHA1}" in p.what
    fake_anatomix(cached, monkeypatch)
    monkeypatch.setattr(ex, "unet_from_state", lambda *a, **k: pytest.fail("the check built the network"))
    report = preflight.check(specs)
    assert report.problems == [] and f"extractor anatomix: {cached} (git blob SHA-1" in report.format()


def test_anatomix_from_env_or_explicit_path(isolated, monkeypatch):
    weights = fake_anatomix(isolated / "elsewhere" / "anatomix.pth", monkeypatch)
    monkeypatch.setenv(w.ANATOMIX_ENV, str(weights))
    specs = expand(["synth"], ["maskgen"], hparams={"maskgen": {"extractor": "anatomix"}})
    assert preflight.check(specs).problems == []
    monkeypatch.delenv(w.ANATOMIX_ENV)
    missing = isolated / "nope.pth"
    specs = expand(["synth"], ["maskgen"], hparams={"maskgen": {"extractor": "anatomix",
                                                               "extractor_weights": str(missing)}})
    (p,) = preflight.check(specs).problems
    assert f"anatomix weights given by argument not found: {missing}" in p.what
    specs = expand(["synth"], ["maskgen"], hparams={"maskgen": {"extractor": "anatomix",
                                                               "extractor_weights": str(weights)}})
    assert preflight.check(specs).problems == []


def test_bundled_extractor_passes_and_unknown_or_corrupt_ones_do_not(isolated, tmp_path):
    report = preflight.check(expand(["synth"], ["maskgen"]))
    assert report.problems == [] and "extractor synthanat-v2: " in report.format() and "verified" in report.format()
    (p,) = preflight.check(expand(["synth"], ["maskgen"], hparams={"maskgen": {"extractor": "anatomx"}})).problems
    assert "unknown feature extractor 'anatomx'; known: anatomix" in p.what
    pt, meta = w.bundled_weights("synthanat-v2")
    copy = tmp_path / "mine.pt"
    copy.write_bytes(pt.read_bytes()[:-10])
    (tmp_path / "mine.json").write_text(json.dumps(meta))
    (p,) = preflight.check(expand(["synth"], ["maskgen"], hparams={
        "maskgen": {"extractor": "synthanat-v2", "extractor_weights": str(copy)}})).problems
    assert f"weights file {copy} has git blob SHA-1" in p.what
    random = {"extractor": "anatomix-random"}
    report = preflight.check(expand(["synth"], ["maskgen"], hparams={"maskgen": random}))
    assert report.problems == [] and "extractor anatomix-random: no weights file" in report.format()
    (p,) = preflight.check(expand(["synth"], ["maskgen"], hparams={
        "maskgen": {**random, "extractor_weights": str(copy)}})).problems
    assert p.what.endswith("anatomix-random takes no weights file")


# ---------------------------------------------------------------------------------------------
# executor options
# ---------------------------------------------------------------------------------------------
def test_sinfo_parsing():
    text = "gpu*|1-00:00:00|gpu:a100:4(S:0-1)\ngpu*|1-00:00:00|(null)\ncpu|2:00:00|(null)\nlong|infinite|gpu:2\n"
    assert preflight.parse_sinfo(text) == {
        "gpu": {"default": True, "max_minutes": 1440, "gpus": True},
        "cpu": {"default": False, "max_minutes": 120, "gpus": False},
        "long": {"default": False, "max_minutes": None, "gpus": True}}
    assert [preflight.parse_slurm_time(t) for t in ("30", "30:00", "1:30:00", "2-12", "2-0:30", "UNLIMITED")] == \
           [30, 30, 90, 3600, 2910, None]


@pytest.mark.parametrize("opts, cluster, message, fix", [
    ({"time": 1440, "gpus": 1}, {"a": {"default": False, "max_minutes": None, "gpus": True}},
     "no partition given and the cluster has no default one (partitions: a)", "--partition NAME"),
    ({**SLURM_OK, "partition": "gpus"}, GPU_CLUSTER,
     "partition gpus does not exist on this cluster (partitions: cpu, gpu*)", "--partition NAME"),
    ({**SLURM_OK, "time": 4000}, GPU_CLUSTER,
     "time limit 4000 min exceeds the partition's maximum of 2880 min", "--time 2880"),
    ({**SLURM_OK, "time": 5}, GPU_CLUSTER, "time limit 5 min is too short", "--time 60"),
    ({"partition": "gpu", "time": 60}, GPU_CLUSTER, "GPUs per run not given", "--gpus-per-run 1"),
    ({**SLURM_OK, "partition": "cpu", "time": 600}, GPU_CLUSTER, "partition cpu has no GPUs", "GPU partition"),
    ({**SLURM_OK, "partitions": "gpu"}, GPU_CLUSTER, "unknown option(s) ['partitions']", "remove them"),
    (SLURM_OK, None, "cannot ask the cluster from here: `sbatch` is not on PATH", "Slurm login node"),
])
def test_slurm_options_incomplete(monkeypatch, opts, cluster, message, fix):
    monkeypatch.setattr(preflight, "slurm_partitions",
                        lambda: (cluster, "" if cluster else "`sbatch` is not on PATH"))
    found, _ = preflight.check_executor("slurm", opts)
    assert len(found) == 1 and message in found[0].what and fix in found[0].fix


def test_slurm_complete_options_pass(monkeypatch):
    monkeypatch.setattr(preflight, "slurm_partitions", lambda: (GPU_CLUSTER, ""))
    assert preflight.check_executor("slurm", SLURM_OK) == ([], "slurm: gpu, 1440 min, 1 GPU(s) per run")
    no_gpu = {**SLURM_OK, "gpus": 0, "partition": "cpu", "time": 60}                   # CPU jobs, said so
    assert preflight.check_executor("slurm", no_gpu)[0] == []


def test_local_gpus_that_do_not_exist(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    (p,), _ = preflight.check_executor("local", {"gpus": "0,1"})
    assert p.what.startswith("local executor: GPU id(s) 1 (--gpus") and "this machine has 1 CUDA device" in p.what
    assert preflight.check_executor("local", {"gpus": "0"})[0] == []
    (p,), _ = preflight.check_executor("local", {"workers": 0})
    assert "workers 0 is not a whole number >= 1" in p.what


# ---------------------------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------------------------
TABLE = """gpu: Test GPU
rows:
  - {patch: [32, 32, 32], batch: 2, backbone: unet, backbone_kwargs: {width: 8, levels: 3}, amp: bf16,
     eager_ms: 360, compiled_ms: 180, source: "made up for the test"}
extractor_overhead: {eager: 0.5, source: "also made up"}
"""


def test_step_mode_follows_train_compile():
    assert cost.step_mode(SimpleNamespace(train=SimpleNamespace(compile="auto"))) == "compiled"
    assert cost.step_mode(SimpleNamespace(train=SimpleNamespace(compile="on"))) == "compiled"
    assert cost.step_mode(SimpleNamespace(train=SimpleNamespace(compile="off"))) == "eager"
    assert cost.step_mode(SimpleNamespace(train=SimpleNamespace())) == "eager"     # a dgbench without compile


def test_cost_arithmetic_on_a_small_grid(isolated, tmp_path, capsys, monkeypatch):
    table = tmp_path / "my-gpu.yaml"
    table.write_text(TABLE)
    results = tmp_path / "results"
    erm = expand(["synth"], ["erm"], seeds=range(3), train={"steps": 1000})
    fake_run(results, erm[0], "done")
    fake_run(results, erm[1], "stale", step=400, age=3600, ckpt=True)          # resumes: 600 steps left
    argv = ["sweep", "--datasets", "synth", "--methods", "erm,maskgen", "--seeds", "0-2", "--steps", "1000",
            "--results", str(results), "--dry-run"]
    assert main(argv + ["--cost-table", str(table)]) == 0
    out = capsys.readouterr().out
    mode = cost.step_mode(erm[0])
    ms = {"eager": 360, "compiled": 180}[mode]
    net = "(unet width 8 levels 3, bf16)"             # not the paper's network: named in the label
    assert "  grid: 6 runs, 6,000 training steps; to run: 5 runs, 4,600 steps" in out
    assert (f"  32x32x32 batch 2 {mode} {net}, {ms:.1f} ms/step: 2 runs (synth), 1,600 steps = "
            f"{ms * 1600 / 3.6e6:,.1f} GPU-h") in out
    assert f"source: 32x32x32 batch 2 {mode} {ms} ms: made up for the test" in out
    if mode == "eager":                  # +50% with a frozen extractor: 540 ms x 3000 steps
        assert (f"  32x32x32 batch 2 eager {net} + frozen extractor, 540.0 ms/step: 3 runs (synth), 3,000 steps "
                f"= 0.5 GPU-h") in out
        assert "  estimated: 0.6 GPU-h for 5 of the 5 runs to run" in out
    else:                                # no compiled overhead was measured: never invented
        assert (f"no compiled frozen-extractor overhead was measured: 32x32x32 batch 2 compiled {net} + frozen "
                f"extractor (synth, 3 runs)") in out
        assert "  estimated: 0.1 GPU-h for 2 of the 5 runs to run" in out
    # the same table through the environment; a crop without a row is named, not estimated
    monkeypatch.setenv(cost.COST_ENV, str(table))
    assert main(argv + ["--train", "patch_size=[48,48,48]"]) == 0
    out = capsys.readouterr().out
    assert "Test GPU" in out and "  estimated: 0.0 GPU-h for 0 of the 6 runs to run" in out
    assert f"no row for this crop, batch, network and precision: 48x48x48 batch 2 {mode} {net} (synth, 6 runs)" in out


def test_committed_table_states_its_sources():
    table = cost.load_table(cost.DEFAULT_TABLE)
    rows = {tuple(r["patch"]): r for r in table["rows"]}
    assert (rows[(128, 128, 128)]["eager_ms"], rows[(128, 128, 128)]["compiled_ms"]) == (219, 99)
    assert (rows[(192, 192, 128)]["eager_ms"], rows[(192, 192, 128)]["compiled_ms"]) == (487, 340)
    assert table["extractor_overhead"]["eager"] == 0.24 and "compiled" not in table["extractor_overhead"]
    for source in [r["source"] for r in rows.values()] + [table["extractor_overhead"]["source"]]:
        assert "H100 with synthetic tensors on the GPU, paper U-Net, bf16" in source


def test_bad_cost_table_is_named(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("rows:\n  - {patch: [1, 2], batch: 4}\n")
    with pytest.raises(ValueError, match=rf"cost table {re.escape(str(bad))}: row 1 lacks"):
        cost.load_table(bad)
    with pytest.raises(ValueError, match="not found"):
        cost.load_table(tmp_path / "none.yaml")


def test_derived_split_run_ids_are_never_shown_or_run_before_prepare(folder, capsys):
    """The folder dataset's split is derived from the files by `prepare`; its checksum is in the run
    id, so before prepare a run has no id yet: the plan shows none, and nothing runs."""
    argv = ["sweep", "--datasets", "folder", "--methods", "erm", "--results", str(folder.parent / "r"), "--dry-run"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert not re.search(r"folder_erm_full_s0_[0-9a-f]{10}", out)            # no id that prepare would change
    assert "run      folder_erm_full_s0_<after prepare>  its id needs the split `dgbench prepare folder` derives" in out
    assert f"fix: dgbench prepare folder --root {folder.resolve()}" in out
    from dgbench.errors import UserError
    from dgbench.orchestrate import run_specs
    with pytest.raises(UserError, match="dataset folder: its split is derived from the files by `dgbench prepare folder"):
        run_specs(expand(["folder"], ["erm"]), folder.parent / "r")
    assert not (folder.parent / "r").exists()
    assert main(["prepare", "folder", "--root", str(folder)]) == 0
    capsys.readouterr()
    assert main(argv) == 0
    (spec,) = expand(["folder"], ["erm"])
    assert re.search(rf"^  run +{spec.run_id}$", capsys.readouterr().out, re.M)
