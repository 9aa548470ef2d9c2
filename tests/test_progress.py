"""dgbench.progress: quiet, line-based progress off a terminal; tqdm on one."""
import io

from dgbench import progress as pg


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_off_a_terminal_a_line_per_ten_percent_and_no_carriage_returns():
    out, clock = io.StringIO(), Clock()
    bar = pg.LineProgress(3000, "train r1", "step", file=out, clock=clock)
    for _ in range(3000):
        clock.t += 0.001                        # fast: only the 10% bands trigger lines
        bar.update()
        bar.set_postfix(loss="0.500")
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert len(lines) == 10                     # 10%, 20%, ..., 100%; close adds nothing new
    assert lines[0].startswith("train r1: 300/3000 step (10%), ")
    assert lines[-1].startswith("train r1: 3000/3000 step (100%), ") and lines[-1].endswith("loss=0.500")
    assert "left" not in lines[-1] and "~" in lines[0]


def test_off_a_terminal_a_slow_job_gets_a_line_every_thirty_seconds():
    out, clock = io.StringIO(), Clock()
    bar = pg.LineProgress(1000, "slow", "step", initial=100, file=out, clock=clock)
    for _ in range(40):                          # 40 steps of 10 s: 400 s, 4% of the total
        clock.t += 10.0
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 14                      # every 3rd step (30 s): 13 lines, + the last on close
    assert lines[0] == "slow: 103/1000 step (10%), 0.1 step/s, 0m30s elapsed, ~2h29m left"


def test_set_n_then_refresh_like_the_sweep_bar():
    out, clock = io.StringIO(), Clock()
    bar = pg.LineProgress(100, "3 runs", "step", file=out, clock=clock)
    bar.n = 55
    bar.refresh()
    bar.refresh()                                # nothing new: no second line
    bar.close()
    assert out.getvalue().splitlines() == ["3 runs: 55/100 step (55%)"]


def test_a_terminal_gets_tqdm_and_disable_prints_nothing():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    from tqdm import tqdm
    assert isinstance(pg.progress(10, "x", file=Tty()), tqdm)
    assert isinstance(pg.progress(10, "x", file=io.StringIO()), pg.LineProgress)
    quiet = io.StringIO()
    with pg.progress(10, "x", file=quiet, disable=True) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_a_run_off_a_terminal_writes_a_few_plain_lines(tmp_path, on_tiny_folder, capsys):
    """train.py and evaluate.py bars through dgbench.progress: a log file gets at most a line per
    10% of each bar (training steps; each final evaluation's cases), never tqdm's frames."""
    from conftest import TINY_TRAIN
    from dgbench.spec import resolve
    from dgbench.train import execute
    capsys.readouterr()
    spec = resolve("folder", "erm", seed=0, train=TINY_TRAIN)
    assert execute(spec, tmp_path, progress=True) == "done"
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s]" not in err              # no tqdm frame
    lines = [line for line in err.splitlines() if line.strip()]
    bars: dict[str, int] = {}
    for line in lines:
        desc = line.split(": ", 1)[0]
        bars[desc] = bars.get(desc, 0) + 1
    assert spec.run_id in bars and "evaluate last" in bars       # the training bar and the final evaluation
    assert set(bars) <= {spec.run_id, "evaluate last", "evaluate source-val"}, bars
    assert all(n <= 11 for n in bars.values()), bars             # 10% bands (+ the last line)
    assert len(lines) <= 33
