"""Every command has --help; `dgbench bench` runs to a table and says where the files are."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dgbench.cli import main

REPO = Path(__file__).resolve().parents[1]

# every command, with something only its own help says
COMMANDS = {"bench": "--setting SETTING", "datasets": "List every registered dataset.",
            "methods": "List every registered method.", "prepare": "--root ROOT", "sweep": "--dry-run",
            "status": "--state {pending,running,stale,failed,done,invalid}", "run": "spec.json or run folder",
            "tables": "--paper [CSV]", "pretrain-features": "--stop-after STOP_AFTER"}


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dgbench {command} ") and COMMANDS[command] in out
    assert [c for c in COMMANDS if COMMANDS[c] in out] == [command]        # its own help, no other's


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


# ---------------------------------------------------------------------------------------------
# METHOD.KEY=VALUE: one parser for bench and sweep
# ---------------------------------------------------------------------------------------------
BENCH = ["bench", "--method", "maskgen", "--versus", "erm", "--seeds", "0"]
SWEEP = ["sweep", "--datasets", "synth", "--methods", "maskgen,erm", "--dry-run"]


@pytest.mark.parametrize("command", [BENCH, SWEEP], ids=["bench", "sweep"])
def test_hparam_of_a_method_not_in_the_command_is_refused(command, tmp_path, capsys):
    assert main([*command, "--results", str(tmp_path / "r"), "--hparam", "maskgne.p=0.5"]) == 2
    err = capsys.readouterr().err
    assert err == (f"dgbench {command[0]}: error: --hparam maskgne.p=...: 'maskgne' is not a method of this "
                   f"{command[0]} (maskgen, erm); write METHOD.KEY=VALUE with one of them, or KEY=VALUE for "
                   f"every method\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [BENCH, SWEEP], ids=["bench", "sweep"])
def test_hparam_key_the_method_does_not_declare_is_refused(command, tmp_path, capsys):
    assert main([*command, "--results", str(tmp_path / "r"), "--hparam", "maskgen.q=0.5"]) == 2
    err = capsys.readouterr().err
    assert err == (f"dgbench {command[0]}: error: --hparam: unknown hyperparameter(s) ['q'] for method 'maskgen'; "
                   f"its hyperparameters: extractor, extractor_weights, intensity, mask_on, p, rescale\n")
    assert main([*command, "--results", str(tmp_path / "r"), "--hparam", "erm.p=0.5"]) == 2
    assert "unknown hyperparameter(s) ['p'] for method 'erm'; its hyperparameters: none" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unqualified_hparam_applies_to_every_method_of_bench_and_sweep(tmp_path, capsys):
    from dgbench.cli import build_parser, sweep_config
    specs = _bench_specs("--method", "maskgen,concat", "--seeds", "0", "--hparam", "p=0.25")
    assert [(s.method, s.hparams.get("p")) for s in specs] == [("maskgen", 0.25), ("concat", 0.25), ("erm", None)]
    cfg = sweep_config(build_parser("sweep").parse_args(["sweep", "--methods", "maskgen,concat", "--datasets",
                                                         "synth", "--hparam", "p=0.25", "--hparam", "concat.p=0.5"]))
    assert cfg["hparams"] == {"maskgen": {"p": 0.25}, "concat": {"p": 0.5}}
    # in a sweep that also runs erm, an unqualified key erm lacks is refused like a qualified one
    assert main([*SWEEP, "--results", str(tmp_path / "r"), "--hparam", "p=0.5"]) == 2
    assert "unknown hyperparameter(s) ['p'] for method 'erm'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# user errors are one line; bugs keep their traceback
# ---------------------------------------------------------------------------------------------
def test_a_programming_error_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    from dgbench.errors import UserError
    from dgbench.orchestrate import status

    def bug(results, now=None):
        raise KeyError("state")                # what a typo in the code would raise
    monkeypatch.setattr(status, "collect_status", bug)
    with pytest.raises(KeyError, match="state"):
        main(["status", "--results", str(tmp_path)])

    def mistake(results, now=None):
        raise UserError("no such results folder")
    monkeypatch.setattr(status, "collect_status", mistake)
    assert main(["status", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "dgbench status: error: no such results folder\n"


def test_traceback_reaches_the_terminal_in_a_real_process(tmp_path):
    code = ("import sys; from dgbench import cli, spec\n"
            "def bug(*a, **k): raise KeyError('a bug')\n"
            "spec.resolve = bug\n"
            "sys.exit(cli.main(['sweep', '--datasets', 'synth', '--methods', 'erm', '--dry-run', "
            f"'--results', {str(tmp_path)!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr
    assert out.stderr.rstrip().endswith("KeyError: 'a bug'") and "error: a bug" not in out.stderr


# ---------------------------------------------------------------------------------------------
# status and sweep --dry-run start without torch, matplotlib or pandas
# ---------------------------------------------------------------------------------------------
HEAVY = ("torch", "matplotlib", "pandas")


def imported(argv: list[str], cwd) -> set[str]:
    """Top-level packages a fresh `dgbench ARGV` imports (python -X importtime)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "dgbench.cli", *argv],
                         capture_output=True, text=True, cwd=cwd)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$",
                                                         out.stderr, re.M)}


@pytest.mark.parametrize("argv, allowed", [
    (["status"], set()),
    (["sweep", "--datasets", "synth", "--methods", "erm,gin", "--seeds", "0-2", "--dry-run"], set()),
    # MaskGen's runs name a feature extractor: the preflight checks its weights file with the
    # torch-free dgbench.models.weights, never by building the network
    (["sweep", "--file", str(REPO / "sweeps" / "paper.yaml"), "--dry-run"], set()),
], ids=["status", "sweep-dry-run", "paper-dry-run"])
def test_light_commands_import_no_heavy_package(argv, allowed, tmp_path):
    argv = [*argv, "--results", str(tmp_path / "results")]
    if argv[0] == "sweep":
        imported(argv, tmp_path)     # the first one after a source edit learns the plug-ins' declarations
    found = imported(argv, tmp_path)
    assert "dgbench" in found and not found & (set(HEAVY) - allowed), sorted(found & set(HEAVY))
    assert "dgbench_methods" not in found                   # no method plug-in (their imports cost seconds)
