"""dgbench.report: golden-file tests on a small committed fake results tree (tests/golden).

Regenerate the expected files after an intended change with
    DGBENCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_report.py
and review the diff."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dgbench import report
from dgbench.errors import UserError
from dgbench.report import bench_table, collect, holm, register_cli, run_scores, write_tables

GOLDEN = Path(__file__).parent / "golden"
TREE = GOLDEN / "results"
EXPECTED = GOLDEN / "expected"
REGEN = os.environ.get("DGBENCH_REGEN_GOLDEN") == "1"
N_BOOT = 200


def _ids(pattern: str) -> list[str]:
    return sorted(p.name for p in (TREE / "runs").iterdir() if re.match(pattern, p.name))


def _compare(name: str, text: str) -> None:
    path = EXPECTED / name
    if REGEN:                                   # writes the file; never reported as a pass
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.skip(f"regenerated {path}; run again without DGBENCH_REGEN_GOLDEN to compare")
    assert path.exists(), f"missing golden file {path}; run with DGBENCH_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from {path}"


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables")
    write_tables(TREE, out, paper=True, n_boot=N_BOOT, seed=0, figures=False)
    return out


def _copy_tree(tmp_path: Path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(TREE, dst)
    return dst


CONVERGED = ([1.5, 1.2, 0.9, 0.7, 0.6, 0.55, 0.52, 0.5, 0.5, 0.5], [(5, 0.8), (10, 0.81)])


def _write_history(d: Path, losses: list[float], val: list[tuple[int, float]]) -> None:
    (d / "train_loss.csv").write_text("step,loss\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(losses)))
    (d / "val_history.csv").write_text("step,loss,val_dice\n" + "".join(f"{s},1.0,{v}\n" for s, v in val))


def _write_run(results: Path, rid: str, spec: dict, rows: list[dict] | None, state: str = "done",
               history=CONVERGED) -> None:
    """A run folder; done runs get a converged 10-step training history unless ``history`` says otherwise."""
    d = results / "runs" / rid
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps(spec))
    if rows is not None:
        pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    (d / f"{state}.json").write_text(json.dumps({"error": "boom"} if state == "failed" else {}))
    if state == "done" and history is not None:
        _write_history(d, *history)


def _rows(rid, ds, meth, seed, sel, dice_by_case, split="test", domain="T", setting="full"):
    return [{"run_id": rid, "dataset": ds, "method": meth, "setting": setting, "seed": seed, "selection": sel,
             "split": split, "domain": domain, "case": c, "class": 1, "class_name": "fg", "dice": v,
             "gt_present": True, "pred_present": True} for c, v in dice_by_case.items()]


# -- bench_table -----------------------------------------------------------------------------
def test_bench_table_golden():
    ids = _ids(r"^(amos|prostate)_\w+_full_") + ["prostate_gin_full_s1_0123456789"]
    text = bench_table(TREE, ids)
    _compare("bench.md", text)
    assert "selection: source-val" in text
    assert "amos_erm_full_s1_a617a7be69: failed (RuntimeError: CUDA out of memory)" in text
    assert "prostate_gin_full_s1_0123456789: missing" in text
    assert "| target: BIDMC | target: BMC | target: all |" in text


def test_bench_table_falls_back_to_last(tmp_path):
    spec = {"dataset": "synth", "method": "erm", "seed": 0, "setting": "full"}
    rows = _rows("r0", "synth", "erm", 0, "last", {"a": 0.5, "b": 0.7}) + \
        _rows("r0", "synth", "erm", 0, "last", {"v": 0.9}, split="val", domain="S")
    _write_run(tmp_path, "r0", spec, rows)
    text = bench_table(tmp_path, ["r0"])
    assert "selection: last" in text
    assert "| erm | 90.0 | 60.0 | 1 |" in text


def test_selection_rules_and_the_one_fallback_policy(tmp_path):
    """Rules are objects (dgbench.selection.rule); only source-val falls back (to last), never
    silently: per run in the bench table (named in its header), for the whole tables only when no
    run has source-val rows (a note on top); otherwise a run without the rule's rows is named
    under the table and not averaged."""
    from dgbench.selection import rule
    assert rule("source-val").choose({"last"}) == "last" and rule("last").choose({"source-val"}) is None
    assert rule("oracle-target-val").oracle and rule("my-target-rule").oracle and not rule("last").oracle
    assert rule("oracle-target-val").title == "oracle-target-val — ORACLE (uses target labels)"
    spec = {"dataset": "synth", "method": "erm", "seed": 0, "setting": "full"}
    test = {"a": 0.5, "b": 0.7}
    _write_run(tmp_path, "r0", spec, _rows("r0", "synth", "erm", 0, "source-val", test)
               + _rows("r0", "synth", "erm", 0, "last", test))
    _write_run(tmp_path, "r1", dict(spec, seed=1), _rows("r1", "synth", "erm", 1, "last", {"a": 0.1, "b": 0.1}))
    assert "selection: source-val, falling back to last for r1; 2 run(s)" in bench_table(tmp_path, ["r0", "r1"])
    write_tables(tmp_path, tmp_path / "t", n_boot=0, figures=False)
    main = (tmp_path / "t" / "main.md").read_text()
    assert "r1: done, but metrics.csv has no 'source-val' rows" in main and "| erm | **60.0 (n=1)** |" in main
    assert "fall back" not in main
    shutil.rmtree(tmp_path / "runs" / "r0")
    write_tables(tmp_path, tmp_path / "t2", n_boot=0, figures=False)
    main = (tmp_path / "t2" / "main.md").read_text()
    assert "No run has 'source-val' rows; tables fall back to 'last'." in main and "| erm | **10.0** |" in main


def test_tables_sweep_takes_the_grid_from_the_sweep_file(tmp_path, capsys):
    """tables --sweep FILE: the declared runs are the expected grid. A declared run without a
    folder is missing and one unfinished is not averaged, both named (the cell shows '–' or
    '(n=k)'); a folder the sweep does not declare is left out with a note."""
    from dgbench.orchestrate.sweep import load_sweep, sweep_specs
    sweep = tmp_path / "small.yaml"
    sweep.write_text("datasets: [synth]\nmethods: [erm, gin]\nseeds: [0, 1]\ntrain: {steps: 10}\n")
    specs = {(s.method, s.seed): s for s in sweep_specs(load_sweep(sweep))}
    stray = sweep_specs({"datasets": ["synth"], "methods": ["erm"], "seeds": [7], "train": {"steps": 10}})[0]
    res = tmp_path / "results"

    def folder(spec, dice, state="done"):
        rows = _rows(spec.run_id, "synth", spec.method, spec.seed, "source-val", dice) if state == "done" else None
        _write_run(res, spec.run_id, {"run_id": spec.run_id, "spec": spec.to_dict()}, rows, state=state)
        if state != "done":
            (res / "runs" / spec.run_id / f"{state}.json").unlink()

    folder(specs["erm", 0], {"a": 0.5})
    folder(specs["erm", 1], {"a": 0.7})
    folder(specs["gin", 0], {}, state="pending")           # declared, never started
    folder(stray, {"a": 0.0})                               # not declared: must not pull erm down
    out = tmp_path / "t"
    args = argparse.ArgumentParser().add_subparsers()
    register_cli(args)
    ns = args.choices["tables"].parse_args(["--results", str(res), "--out", str(out), "--sweep", str(sweep),
                                            "--bootstrap", "0", "--no-figures"])
    assert ns.func(ns) == 0
    main = (out / "main.md").read_text()
    assert "| erm | **60.0 ± 14.1** |" in main and "| gin | – |" in main
    assert "Built from 2 of 4 expected runs (declared by small.yaml)." in main
    assert "Missing runs: synth / gin / seed 1: no run folder." in main
    assert f"{specs['gin', 0].run_id}: incomplete (pending)" in main
    assert f"Run folders that small.yaml does not declare, left out (1): {stray.run_id}." in main
    more = tmp_path / "more.yaml"                                       # a second file declares the stray run
    more.write_text("datasets: [synth]\nmethods: [erm]\nseeds: [7]\ntrain: {steps: 10}\n")
    write_tables(res, tmp_path / "two", n_boot=0, figures=False, sweep=[sweep, more])
    two = (tmp_path / "two" / "main.md").read_text()
    assert "Built from 3 of 5 expected runs (declared by small.yaml + more.yaml)." in two and "left out" not in two
    write_tables(res, tmp_path / "all", n_boot=0, figures=False)       # without --sweep: the folders' grid
    assert "| erm | **40.0 ± 36.1** |" in (tmp_path / "all" / "main.md").read_text()


# -- tables: golden outputs ------------------------------------------------------------------
GOLDEN_FILES = ["main.md", "main.tex", "main.csv", "main_last.md", "main_last.tex", "main_last.csv",
                "fewshot.md", "fewshot.tex", "fewshot.csv", "perclass_amos.md", "perclass_amos.tex",
                "perclass_amos.csv", "perclass_prostate.md", "perclass_prostate.tex", "perclass_prostate.csv",
                "ranks.md", "ranks.tex", "ranks.csv", "pairwise.csv",
                "main_oracle-target-val.md", "main_oracle-target-val.tex", "main_oracle-target-val.csv",
                "fewshot_oracle-target-val.md", "fewshot_oracle-target-val.tex", "fewshot_oracle-target-val.csv"]


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_tables_golden(tables, name):
    _compare(name, (tables / name).read_text())


def test_no_unexpected_outputs(tables):
    assert sorted(p.name for p in tables.iterdir()) == sorted(GOLDEN_FILES)


def test_dice_convention_and_tie(tables):
    main = pd.read_csv(tables / "main.csv").set_index("method")
    # amos/erm seed 0: liver 0.61 over 3 cases, kidney 0.57 over the 2 cases that have it,
    # duodenum absent everywhere -> excluded (clean) or 0 (reference-compatible)
    assert main.at["erm", "amos.mean"] == pytest.approx(59.0)
    assert main.at["erm", "amos.mean_refcompat"] == pytest.approx((61 + 57 + 0) / 3)
    assert main.at["erm", "prostate.rank"] == main.at["gin", "prostate.rank"] == 2.5
    assert main.at["maskgen", "avg_rank"] == 1.0
    assert main.at["maskgen (paper)", "amos.mean"] == 67.5


def test_main_states_rule_runs_and_gaps(tables):
    for name in ("main.md", "main_last.md", "fewshot.md", "perclass_amos.md"):
        text = (tables / name).read_text()
        assert "Selection: " in text
        assert re.search(r"Built from \d+ of \d+ expected runs", text)
    md = (tables / "main.md").read_text()
    assert "Built from 10 of 12 expected runs" in md
    assert "prostate / gin / seed 1: no run folder" in md
    assert "amos_erm_full_s1_a617a7be69: failed" in md
    few = (tables / "fewshot.md").read_text()
    assert "amos_gin_fewshot-2_s0_51bbfb25fe: incomplete (stale)" in few
    assert "| gin | – | 3.00* |" in few
    # convergence (tests/golden/make_tree.py): amos/gin/seed 1 still learning; a legacy run
    # judged from val_history.csv; one without any history (unknown: marked too)
    assert "| gin | 65.0 ± 1.4† | 82.5 (n=1) | 2.25 |" in md and "| erm | 59.0 (n=1) | 82.5 ± 1.4 | 2.75 |" in md
    assert "gin — amos seed 1: training loss still falling (18.2% of its drop in the last 20% of steps)" in md
    assert "| maskgen | **49.0† (n=1)** |" in few and "maskgen — amos (fewshot-2) seed 0: convergence unknown" in few
    assert "Convergence judged from val_history.csv" in few and "erm (1 run)" in few


def test_latex_is_well_formed(tables):
    for p in tables.glob("*.tex"):
        text = p.read_text()
        stripped = text.replace(r"\{", "").replace(r"\}", "")
        depth = 0
        for ch in stripped:
            depth += (ch == "{") - (ch == "}")
            assert depth >= 0, p.name
        assert depth == 0, p.name
        n_tab = text.count(r"\begin{tabular}")
        assert n_tab >= 1 and n_tab == text.count(r"\end{tabular}")
        assert text.count(r"\toprule") == text.count(r"\bottomrule") == n_tab
        assert text.count(r"\midrule") >= n_tab
        assert not re.search(r"(?<!\\)_", text), f"unescaped underscore in {p.name}"
        assert "±" not in text and "×" not in text


def test_markdown_rows_are_complete(tables):
    for p in tables.glob("*.md"):
        for block in re.findall(r"((?:^\|.*\|\n)+)", p.read_text(), flags=re.M):
            lines = block.strip().splitlines()
            widths = {len(re.split(r"(?<!\\)\|", line)) for line in lines}
            assert len(widths) == 1, p.name


def test_paired_tests_without_maskgen(tmp_path):
    res = _copy_tree(tmp_path)
    for d in (res / "runs").glob("*_maskgen_*"):
        shutil.rmtree(d)
    write_tables(res, tmp_path / "out", n_boot=0, figures=False)
    assert pd.read_csv(tmp_path / "out" / "pairwise.csv").empty
    assert "No paired tests: method 'maskgen' not among the results" in (tmp_path / "out" / "ranks.md").read_text()


def test_paired_tests_versus_another_method(tmp_path):
    res = _copy_tree(tmp_path)
    write_tables(res, tmp_path / "out", n_boot=0, figures=False, versus="erm")
    pairs = pd.read_csv(tmp_path / "out" / "pairwise.csv")
    assert len(pairs) and set(pairs["versus"]) == {"erm"} and "erm" not in set(pairs["method"])
    assert "maskgen" in set(pairs["method"])
    assert "Paired tests against erm" in (tmp_path / "out" / "ranks.md").read_text()


def test_oracle_selection_is_labelled(tmp_path):
    spec = {"dataset": "synth", "method": "erm", "seed": 0, "setting": "full"}
    rows = _rows("r0", "synth", "erm", 0, "source-val", {"a": 0.5}) + _rows("r0", "synth", "erm", 0, "target-val", {"a": 0.6})
    _write_run(tmp_path, "r0", spec, rows)
    write_tables(tmp_path, tmp_path / "out", n_boot=0, figures=False)
    assert "ORACLE (uses target labels)" in (tmp_path / "out" / "main_target-val.md").read_text()
    assert "ORACLE" not in (tmp_path / "out" / "main.md").read_text()


def test_best_config_chosen_by_source_val(tmp_path):
    for cfg, (val, test) in {"a": (0.9, 0.5), "b": (0.6, 0.8)}.items():
        for seed in (0, 1):
            rid = f"synth_erm_full_s{seed}_{cfg}"
            spec = {"dataset": "synth", "method": "erm", "seed": seed, "setting": "full", "hparams": {"lr": cfg}}
            rows = _rows(rid, "synth", "erm", seed, "source-val", {"t": test}) + \
                _rows(rid, "synth", "erm", seed, "source-val", {"v": val}, split="val", domain="S")
            _write_run(tmp_path, rid, spec, rows)
    write_tables(tmp_path, tmp_path / "out", n_boot=0, figures=False)
    main = pd.read_csv(tmp_path / "out" / "main.csv").set_index("method")
    assert main.at["erm", "synth.mean"] == pytest.approx(50.0)      # config a: best source-val
    assert "2 hyperparameter configurations" in (tmp_path / "out" / "main.md").read_text()


def test_run_scores_and_holm():
    m = pd.DataFrame(_rows("r", "d", "m", 0, "last", {"a": 0.2, "b": 0.4}))
    m = pd.concat([m, m.assign(**{"class": 2, "dice": np.nan, "gt_present": False})])
    sc = run_scores(m).iloc[0]
    assert sc["dice"] == pytest.approx(0.3) and sc["dice_refcompat"] == pytest.approx(0.15)
    assert np.allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan], equal_nan=True)


def test_collect_reads_engine_spec_json(tmp_path):
    spec = {"dataset": "synth", "method": "gin", "seed": 3, "setting": "fewshot-1", "hparams": {"a": 1}}
    d = tmp_path / "runs" / "r"
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps({"run_id": "r", "spec": spec, "dgbench": "0.1.0", "torch": "x"}))
    row = collect(tmp_path).runs.iloc[0]
    assert (row["dataset"], row["method"], row["seed"], row["setting"], row["state"]) == \
        ("synth", "gin", 3, "fewshot-1", "incomplete (pending)")


def test_collect_reads_states():
    col = collect(TREE)
    states = col.runs.set_index("run_id")["state"]
    assert states["amos_erm_full_s1_a617a7be69"] == "failed"
    assert states["amos_gin_fewshot-2_s0_51bbfb25fe"] == "incomplete (stale)"
    assert set(col.metrics["run_id"]) == set(states[states == "done"].index)


def test_only_a_trusted_spec_labels_a_run(tmp_path, caplog):
    """Spec and state come from dgbench.rundir: a done folder without spec.json is not counted
    (its metrics.csv labels are not trusted), an edited spec makes its run invalid; neither
    enters a table, and the invalid one is named in its cell's notes."""
    res = _copy_tree(tmp_path)
    runs = res / "runs"
    nospec = runs / "amos_erm_full_s2_0123456789"
    shutil.copytree(runs / "amos_erm_full_s0_549d88a4f4", nospec)
    (nospec / "spec.json").unlink()
    edited = runs / "amos_gin_full_s1_9def8a3625"
    spec = json.loads((edited / "spec.json").read_text())
    (edited / "spec.json").write_text(json.dumps(dict(spec, seed=0)))
    col = collect(res)
    info = col.runs.set_index("run_id")
    assert info.at[edited.name, "state"] == "invalid" and info.at[edited.name, "seed"] == 1
    assert info.at[nospec.name, "state"] == "done" and pd.isna(info.at[nospec.name, "dataset"])
    assert not {nospec.name, edited.name} & set(col.metrics["run_id"])
    with caplog.at_level(logging.WARNING, logger="dgbench.report"):
        write_tables(res, tmp_path / "t", n_boot=0, figures=False)
    assert f"not counted: {nospec.name}" in caplog.text
    main = (tmp_path / "t" / "main.md").read_text()
    assert f"{edited.name}: invalid — " in main
    assert nospec.name not in main


# -- convergence marks -----------------------------------------------------------------------
def test_run_that_never_learned_is_marked(tmp_path):
    """A method whose runs never learned (flat loss, all-zero Dice) gets † on every value built
    from them and after its name in the rank tables, with the note; the converged one gets none."""
    never = ([1.2] * 10, [(5, 0.0), (10, 0.0)])
    ids = []
    for meth, dice, history in (("erm", 0.6, CONVERGED), ("flat", 0.0, never)):
        for seed in (0, 1):
            rid = f"synth_{meth}_full_s{seed}_{seed:010d}"
            spec = {"dataset": "synth", "method": meth, "seed": seed, "setting": "full", "train": {"steps": 10}}
            rows = _rows(rid, "synth", meth, seed, "source-val", {"a": dice, "b": dice + 0.01 * (dice > 0)}) + \
                _rows(rid, "synth", meth, seed, "source-val", {"v": dice}, split="val", domain="S")
            _write_run(tmp_path, rid, spec, rows, history=history)
            ids.append(rid)
    out = tmp_path / "out"
    write_tables(tmp_path, out, n_boot=0, figures=False, versus="erm")
    note = ("† at least one run in this cell did not converge (see convergence in done.json): flat — "
            "synth seed 0: never left its starting loss (1.20 -> 1.20) and predicts (almost) only background: "
            "best source-val Dice 0.000, synth seed 1: never left")
    for name in ("main.md", "perclass_synth.md"):
        text = (out / name).read_text()
        flat = next(line for line in text.splitlines() if line.startswith("| flat |"))
        erm = next(line for line in text.splitlines() if line.startswith("| erm |"))
        assert "0.0 ± 0.0†" in flat and "†" not in erm, name
        assert note in text, name
    assert r"0.0 $\pm$ 0.0$^\dagger$" in (out / "main.tex").read_text()
    main = pd.read_csv(out / "main.csv").set_index("method")
    assert main.at["flat", "synth.not_converged"] == 2 and main.at["erm", "synth.not_converged"] == 0
    ranks = (out / "ranks.md").read_text()
    assert "| flat† |" in ranks and "| erm |" in ranks and "erm vs flat†" in ranks
    assert "† at least one run of this method did not converge" in ranks
    pairs = pd.read_csv(out / "pairwise.csv")
    assert list(pairs["not_converged"]) == [2] and list(pairs["versus_not_converged"]) == [0]
    bench = bench_table(tmp_path, ids)
    assert "| flat | 0.0 ± 0.0† | 0.0 ± 0.0† | 2 |" in bench and "| erm | 60.0 ± 0.0 |" in bench
    assert note in bench
    warning = report.convergence_warning(tmp_path, ids)
    assert warning.startswith("WARNING: 2 runs did not converge and are marked † in the table:")
    assert "synth_flat_full_s1_0000000001: never left its starting loss (1.20 -> 1.20)" in warning
    assert "synth_erm" not in warning
    assert report.convergence_warning(tmp_path, [i for i in ids if "erm" in i]) == ""


def test_run_without_training_history_is_not_taken_for_converged(tmp_path):
    spec = {"dataset": "synth", "method": "erm", "seed": 0, "setting": "full"}
    _write_run(tmp_path, "r0", spec, _rows("r0", "synth", "erm", 0, "source-val", {"a": 0.5}), history=None)
    row = collect(tmp_path).runs.iloc[0]
    assert row["converged"] is None and row["convergence_source"] == "none"
    assert "| erm | 50.0† |" in bench_table(tmp_path, ["r0"])
    assert "convergence unknown" in report.convergence_warning(tmp_path, ["r0"])


def test_verdict_recorded_in_done_json_is_used(tmp_path):
    spec = {"dataset": "synth", "method": "erm", "seed": 0, "setting": "full"}
    _write_run(tmp_path, "r0", spec, _rows("r0", "synth", "erm", 0, "source-val", {"a": 0.5}))   # converged files
    from dgbench.convergence import RULES
    recorded = {"rules": RULES, "converged": False, "source": "train_loss",
                "reasons": ["training loss still falling (19.0% of its drop in the last 20% of steps)"]}
    (tmp_path / "runs" / "r0" / "done.json").write_text(json.dumps({"steps": 10, "convergence": recorded}))
    row = collect(tmp_path).runs.iloc[0]
    assert row["converged"] == False and row["convergence"] == recorded["reasons"][0]  # noqa: E712 (numpy bool)


def test_verdict_recorded_by_older_rules_is_recomputed_from_the_files(tmp_path):
    spec = {"dataset": "synth", "method": "erm", "seed": 0, "setting": "full"}
    _write_run(tmp_path, "r0", spec, _rows("r0", "synth", "erm", 0, "source-val", {"a": 0.5}))   # converged files
    for old in ({"converged": False, "source": "train_loss", "reasons": ["training loss still falling (15.0% over "
                 "the last 20% of steps)"]}, {"rules": 1, "converged": False, "source": "train_loss", "reasons": ["x"]}):
        (tmp_path / "runs" / "r0" / "done.json").write_text(json.dumps({"steps": 10, "convergence": old}))
        row = collect(tmp_path).runs.iloc[0]
        assert row["converged"] == True and row["convergence_source"] == "train_loss"  # noqa: E712


# -- figures ---------------------------------------------------------------------------------
def test_figures(tmp_path, caplog):
    import matplotlib.image as mpimg
    res = _copy_tree(tmp_path)
    rng = np.random.default_rng(0)
    label = np.zeros((6, 32, 32), np.int16)
    label[2:5, 8:20, 8:20] = 1
    label[2:5, 20:26, 10:22] = 2
    image = rng.normal(size=label.shape).astype(np.float32) + label
    for rid in _ids(r"^amos_(erm|maskgen)_full_s0_"):
        pdir = res / "runs" / rid / "predictions"
        pdir.mkdir()
        pred = np.roll(label, 2 if "erm" in rid else 1, axis=2)
        np.savez_compressed(pdir / "mri1.npz", image=image, label=label, pred=pred)
    with caplog.at_level(logging.INFO, logger="dgbench.report"):
        written = write_tables(res, tmp_path / "out", n_boot=50, figures=True)
    names = sorted(p.name for p in written["figures"])
    assert names == ["avg_rank.pdf", "avg_rank.png", "dice_bars.pdf", "dice_bars.png",
                     "slices_amos.pdf", "slices_amos.png"]
    assert "prostate run: example-slice figure skipped" in caplog.text.replace("any prostate", "prostate")
    for p in written["figures"]:
        if p.suffix == ".png":
            img = mpimg.imread(p)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 200, p.name
            assert img[..., :3].std() > 0.01, f"{p.name} looks blank"
        else:
            assert p.read_bytes()[:5] == b"%PDF-"


# -- CLI -------------------------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(prog="dgbench")
    register_cli(p.add_subparsers(dest="command"))
    return p


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["tables", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--results", "--out", "--selection", "--paper", "--bootstrap", "--seed"):
        assert opt in out


def test_cli_runs(tmp_path, capsys):
    args = _parser().parse_args(["tables", "--results", str(TREE), "--out", str(tmp_path / "o"),
                                 "--bootstrap", "0", "--no-figures", "--paper"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| maskgen (paper) | 67.5 | 84.7 | – |" in out        # the paper's own rank is a note
    assert "The paper's own average rank for MaskGen, 1.50," in out
    assert (tmp_path / "o" / "ranks.csv").exists()


def test_every_published_number_shows_under_paper(tmp_path):
    """Each of the paper's six datasets (full) and each few-shot value reaches its table."""
    paper = report.load_paper()
    dice = paper[paper["metric"] == "dice"]
    results = tmp_path / "results"
    for i, (ds, setting) in enumerate(sorted(set(zip(dice["dataset"], dice["setting"])))):
        for meth in ("maskgen", "erm"):
            rid = f"{ds}_{meth}_{setting}_s0_{i:010d}"
            _write_run(results, rid, {"dataset": ds, "method": meth, "setting": setting, "seed": 0},
                       _rows(rid, ds, meth, 0, "source-val", {"a": 0.5, "b": 0.6}, setting=setting))
    out = tmp_path / "tables"
    write_tables(results, out, paper=True, n_boot=0, figures=False)
    main = pd.read_csv(out / "main.csv").set_index("method")
    few = pd.read_csv(out / "fewshot.csv").set_index("method")
    assert {"amos", "brats", "topcow", "hvsmr", "pandg", "prostate"} <= set(dice["dataset"])
    for r in dice.itertuples():
        n = r.setting.split("-")[-1]
        table, col = (main, f"{r.dataset}.mean") if r.setting == "full" else (few, f"{r.dataset} ({n}-shot).mean")
        assert table.at["maskgen (paper)", col] == pytest.approx(r.value), (r.dataset, r.setting)
        assert table.at["Δ maskgen − paper", col] == pytest.approx(55.0 - r.value)


def test_a_misnamed_dataset_in_the_paper_file_is_refused(tmp_path):
    bad = tmp_path / "paper.csv"
    bad.write_text("dataset,setting,method,metric,value,source\ncow,full,maskgen,dice,47.8,x\n"
                   "amos,fewshot,maskgen,dice,53.4,x\n")
    with pytest.raises(UserError, match=r"paper.csv: line 2: dataset 'cow'; line 3: setting 'fewshot'"):
        report.load_paper(bad)


@pytest.mark.parametrize("text, says", [("dataset,setting,method\namos,full,maskgen\n", "missing column(s)"),
                                        ('dataset,setting\n"amos,full\n', "not a readable CSV"),
                                        (None, "No such file")])
def test_a_bad_paper_file_is_one_line_from_the_cli(tmp_path, capsys, text, says):
    """tables --paper with a bad CSV: one line naming the file and the fix, no traceback."""
    from dgbench.cli import main
    bad = tmp_path / "paper.csv"
    if text is not None:
        bad.write_text(text)
    res = _copy_tree(tmp_path)
    assert main(["tables", "--results", str(res), "--paper", str(bad), "--no-figures", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dgbench tables: error: --paper {bad}: ") and says in err
    assert "header dataset,setting,method,metric,value,source" in err and err.count("\n") == 1
    assert not (res / "tables").exists()


def test_tables_name_the_extractor_of_each_maskgen_family_row(tmp_path):
    results = tmp_path / "results"
    for meth, hp in (("maskgen", {"extractor": "synthanat-v2", "p": 0.75}), ("concat", {"extractor": "anatomix"}),
                     ("erm", {})):
        rid = f"amos_{meth}_full_s0_0000000000"
        _write_run(results, rid, {"dataset": "amos", "method": meth, "setting": "full", "seed": 0, "hparams": hp},
                   _rows(rid, "amos", meth, 0, "source-val", {"a": 0.5}))
    write_tables(results, tmp_path / "t", n_boot=0, figures=False)
    md = (tmp_path / "t" / "main.md").read_text()
    assert ("- Feature extractor: concat: anatomix; maskgen: synthanat-v2. The paper's MaskGen uses the published "
            "anatomix weights (extractor 'anatomix').") in md


def test_a_paper_file_without_rows_gives_tables_with_a_note(tmp_path):
    empty = tmp_path / "paper.csv"
    empty.write_text("dataset,setting,method,metric,value,source\n")
    write_tables(TREE, tmp_path / "t", paper=empty, n_boot=0, figures=False)
    assert "Paper row omitted: no published number for these columns." in (tmp_path / "t" / "main.md").read_text()


def test_oracle_table_is_separate_labelled_and_has_the_paper_rows(tables):
    md = (tables / "main_oracle-target-val.md").read_text()
    assert md.startswith("## Target-domain mean Dice (×100), selection 'oracle-target-val' — ORACLE (uses target labels)")
    assert "with target-domain labels" in md and "like-for-like comparison with published numbers" in md
    assert "| maskgen | **72.0 ± 1.4** | **1.00** |" in md          # source-val's 70.0 + the tree's 0.02
    assert "| maskgen (paper) | 67.5 | – |" in md and "| Δ maskgen − paper | +4.5 | – |" in md
    assert "left out: prostate." in md and "| prostate" not in md     # prostate runs: no target-val rows
    few = (tables / "fewshot_oracle-target-val.md").read_text()
    assert "ORACLE (uses target labels)" in few and "| maskgen | **51.0† (n=1)** |" in few
    for name in ("main.md", "fewshot.md", "main_last.md", "ranks.md"):      # the primary tables stay source-val
        assert "ORACLE" not in (tables / name).read_text(), name


def test_no_oracle_rows_no_oracle_table(tmp_path):
    res = _copy_tree(tmp_path)
    for f in (res / "runs").glob("*/metrics.csv"):
        df = pd.read_csv(f)
        df[df["selection"] != "oracle-target-val"].to_csv(f, index=False)
    write_tables(res, tmp_path / "out", paper=True, n_boot=0, figures=False)
    assert not list((tmp_path / "out").glob("*oracle*"))
    assert (tmp_path / "out" / "main_last.md").exists()
