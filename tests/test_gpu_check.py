"""benchmarks/gpu_check.py --tiny: every row of the GPU check, through the same code, on a CPU,
so the script is known to run the first time a GPU is lent."""
import math
import re
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_gpu_check_runs_every_row_in_tiny_mode(synth_prepared, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("DGBENCH_COMPILE_BACKEND", "aot_eager")     # what --tiny picks, undone afterwards
    import gpu_check
    assert gpu_check.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith(("| check", "| ---"))]
    assert [r[0] for r in rows] == (["step"] * 4 + ["loader samples/s, 1 CPU worker", "device augmentation"] * 2
                                    + ["sliding-window inference", "end-to-end steps/s"])
    assert all(len(r) == 7 for r in rows)
    assert [int(r[-1]) for r in rows] == sorted(int(r[-1]) for r in rows)          # seconds since the start
    steps = rows[:4]
    assert [r[1].split()[0] for r in steps] == ["erm", "maskgen"] * 2
    for r in steps:
        eager, compiled = (float(v) for v in re.findall(r"(?:eager|compiled) ([\d.]+) ms", r[2]))
        assert eager > 0 and compiled > 0
    assert re.fullmatch(r"overhead eager [+-]\d+%, compiled [+-]\d+%", steps[1][4])
    assert re.search(r"workers needed: \d+ before, \d+ after", rows[4][4])
    e2e, pure = float(rows[9][2]), float(rows[9][3].split()[-1])
    assert pure > 0 and (e2e > 0 or math.isnan(e2e))        # nan: the interval was all validation
    assert re.fullmatch(r"erm [\d.]+ s", rows[8][2]) and re.fullmatch(r"maskgen [\d.]+ s", rows[8][3])
    assert "compile backend aot_eager" in out and sys.modules["gpu_check"].TINY["sizes"][0] == (32, 32, 32)
