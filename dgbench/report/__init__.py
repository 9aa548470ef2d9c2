"""Results -> tables, ranks, statistics and figures, rebuilt from the run folders alone.

Nothing here trains or evaluates; every number comes from ``<results>/runs/*/metrics.csv``
(the per-case, per-class Dice written by the evaluator, see :mod:`dgbench.rundir`).

Dice convention (used everywhere in this module)
------------------------------------------------
The score of one run on one split is the **clean mean**: for each foreground class, the mean
Dice over the cases whose ground truth contains the class (``gt_present``); then the
unweighted mean over the classes. A class absent from *every* case of the split is left out
(it has no defined Dice). The reference code (MONAI ``mean_batch``) would count such a class
as 0; that **reference-compatible mean** is kept next to it in the CSV files
(``*_refcompat`` columns). The two differ only when a class is absent from a whole split.
Dice is shown ×100 with one decimal.

Aggregation: a cell is the mean ± sample s.d. (ddof=1) over seeds of the per-run score.
Ranks are per dataset (1 = best) on the cell means **rounded to the shown precision**
(so two cells that print the same value tie and share the average rank), then averaged over
datasets; a method without a result on a dataset takes the worst rank there and is flagged.

Model selection: ``metrics.csv`` holds rows for each checkpoint rule (``selection``):
"source-val" (primary; best source-validation Dice), "last" (final weights) and, for splits
with target-val cases, "oracle-target-val" (best target-val Dice: the published MaskGen
reference code's selection, see dgbench.selection). Any rule that looks at target labels (name
containing "target" or "oracle") is an oracle: its tables (main_<rule>, fewshot_<rule>) are
labelled "ORACLE (uses target labels)", carry the published rows (``--paper``) and only the
columns that have its rows. When several
hyperparameter configurations exist for one (dataset, method, setting), the configuration
with the best mean source-val Dice over its seeds is used (DomainBed's training-domain
validation) and the table says so.

Run accounting: the expected grid is every observed (dataset, setting) × every observed
method × every observed seed, or, with ``tables --sweep FILE``, the runs the sweep files declare
(a declared run without a folder is missing; a folder they do not declare is left out, named). Spec and state of each folder come from ``dgbench.rundir.scan``
(the one reader of a run's spec): a grid cell without a folder is *missing*; a folder with
``failed.json`` is *failed*; one without ``done.json`` is *incomplete* (running / stale /
pending); one whose spec does not match its name is *invalid* (listed under its name's cell).
None of these is averaged; every table lists them under it. A folder without a run spec has
no trusted labels: it is not counted, and ``tables`` logs its name.

Convergence: every done run gets the :mod:`dgbench.convergence` verdict: the one recorded in
``done.json`` at the end of training, or, for run folders made before that, one computed from
the folder's files (``train_loss.csv``, else the interval means in ``val_history.csv``, and the
tables say so). A cell built from at least one run that
did not converge (or whose convergence is unknown) carries a ``†`` after its value; rank and
paired-test tables put it after the method name. A note under the table names the runs and
why; the CSV files carry the count in ``*.not_converged`` / ``not_converged`` columns.

Predictions for the example-slice figure (contract with the engine): a run folder MAY contain
``predictions/<case>.npz`` with arrays ``image`` (D,H,W float), ``label`` (D,H,W int) and
``pred`` (D,H,W int) for a few target-domain (split "test") cases, predicted with the
checkpoint of the primary selection rule. The figure uses whichever exist and is skipped,
with a logged note, when none do.
"""
from dgbench.report.collect import Collection, class_scores, collect, not_converged, run_scores
from dgbench.report.bench import bench_table, convergence_warning
from dgbench.report.tables import Table, default_paper_file, load_paper
from dgbench.report.render import to_csv, to_latex, to_markdown, write_table
from dgbench.report.stats import holm, rank_statistics, rank_tables
from dgbench.report.build import register_cli, write_tables
from dgbench.report.common import PRIMARY, REF_METHOD
from dgbench.selection import Rule, rule

__all__ = ["Collection", "class_scores", "collect", "not_converged", "run_scores", "bench_table", "convergence_warning", "Table", "default_paper_file", "load_paper", "to_csv", "to_latex", "to_markdown", "write_table", "holm", "rank_statistics", "rank_tables", "register_cli", "write_tables", "PRIMARY", "REF_METHOD", "Rule", "rule"]
