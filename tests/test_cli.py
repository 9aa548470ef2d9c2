"""Every command has --help; `dgbench bench` runs to a table and says where the files are."""
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
    assert "usage: dgbench" in capsys.readouterr().out


def test_top_level_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "dgbench.cli", "--help"], capture_output=True, text=True).stdout
    for c in COMMANDS:
        assert c in out


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


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["bench", "--method", "nope", "--seeds", "0"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
