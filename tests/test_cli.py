"""Every command has --help; `dgbench bench` runs to a table and says where the files are."""
import re
import subprocess
import sys

import pytest

from dgbench.cli import main

COMMANDS = ["bench", "datasets", "methods", "prepare", "sweep", "status", "run", "tables", "pretrain-features"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: dgbench {command} ")


def test_top_level_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "dgbench.cli", "--help"], capture_output=True, text=True).stdout
    listed = re.findall(r"^    (\S+)\s{2,}\S", out, re.M)       # the indented "name   help" rows
    assert sorted(listed) == sorted(COMMANDS)


def test_methods_and_datasets_listing(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("erm", "maskgen", "concat", "features-only"):
        assert name in out
    assert main(["datasets"]) == 0
    assert "synth" in capsys.readouterr().out


def test_bench_prints_table(tmp_path, capsys, synth_prepared):
    rc = main(["bench", "--method", "erm", "--seeds", "0", "--steps", "4", "--results", str(tmp_path),
               "--train", "backbone_kwargs={width: 4, levels: 2}", "--train", "sw_overlap=0",
               "--train", "val_every=4", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    for col in ("mri", "ct-scanner2", "ct-thick", "erm"):
        assert col in out
    assert str(tmp_path.resolve() / "runs") in out
    # a 4-step run hardly converges; whatever the verdict, table and warning agree
    table = out.split("WARNING:")[0].split("run(s) in")[0]
    assert ("†" in table) == ("did not converge and is marked † in the table" in out)


def _bench_specs(*argv):
    from dgbench.cli import bench_specs, build_parser
    return bench_specs(build_parser().parse_args(["bench", *argv]))


def test_bench_adds_the_versus_method():
    specs = _bench_specs("--method", "maskgen", "--seeds", "0,1", "--steps", "7", "--hparam", "p=0.25")
    assert [(s.method, s.seed) for s in specs] == [("maskgen", 0), ("maskgen", 1), ("erm", 0), ("erm", 1)]
    erm = [s for s in specs if s.method == "erm"]
    assert all(s.train.steps == 7 and s.dataset == "synth" for s in erm)
    alone = _bench_specs("--method", "erm", "--seeds", "0,1", "--steps", "7")
    assert [s.run_id for s in erm] == [s.run_id for s in alone]       # same runs: done ones are reused
    assert {s.method for s in _bench_specs("--method", "maskgen", "--versus", "none")} == {"maskgen"}
    assert len(_bench_specs("--method", "erm", "--seeds", "0")) == 1    # versus already listed
    assert {s.method for s in _bench_specs("--method", "maskgen", "--versus", "gin", "--seeds", "0")} == {"maskgen", "gin"}


def test_bench_all_means_every_registered_method_once():
    from dgbench.registry import METHODS
    specs = _bench_specs("--method", "all", "--seeds", "0")
    assert sorted(s.method for s in specs) == sorted(METHODS.names()) and len(specs) == len(METHODS.names()) > 15


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["bench", "--method", "nope", "--seeds", "0"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
