"""What holds a MaskGen-family run's source-val Dice down? Its test-time inputs, varied.

    python benchmarks/maskgen_inputs.py RUN_FOLDER [RUN_FOLDER ...] [--batches 64] [--checkpoint best]
                                        [--val-cases N]

A diagnostic for methods that train on inputs unlike the ones they are tested on. MaskGen zeroes
whole input channels with probability p and rescales the survivors by 1/(1-p) in training, and
feeds every channel unscaled at test time: the mean of each input channel is kept, its second
moment is not, so the BatchNorm running variances learned in training do not describe the test
inputs (the "variance shift" of Li et al., CVPR 2019, "Understanding the disharmony between
dropout and batch normalization by variance shift").

For each finished run folder (its checkpoint, by default checkpoints/best.pt) it prints the
mean source-val Dice of the checkpoint:
- as saved (the run's own evaluation path and settings);
- after re-estimating every BatchNorm layer's running statistics (cumulative average, weights
  untouched) on `--batches` source-train batches as the run trains on them (its sampler, its
  augmentation and, for MaskGen, its channel masking): a control, which should change little;
- the same on the same batches with the method's training-only input change switched off
  (MaskGen: no channel masking, so every channel as at test time).
If the third is far above the first two, the run's test-time BatchNorm statistics are the
mechanism. Then, with the saved statistics, which channels the network reads at test time:
- intensity only: the feature channels zeroed and the intensity scaled by 1/(1-p), the input a
  MaskGen network met in training whenever every feature channel was masked;
- features only: the intensity channel zeroed, every feature channel as at test time.
Only source data is used. The run folders are not changed. Other methods (ERM) get the first
three columns, as a control.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

from dgbench.rundir import RunFolderError
from dgbench.train import Trainer, train_batches, trained


def recalibrate(t: Trainer, batches: int, unmasked: bool) -> None:
    """Re-estimate the BatchNorm running statistics of t.net on source-train batches."""
    bns = [m for m in t.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                    # cumulative average over the batches
    t.net.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for i, (x, y) in enumerate(train_batches(t, batches)):
            if unmasked:                     # the method's own test-time input (MaskGen: no masking)
                z = t.method.infer_input(x)
            else:
                torch.manual_seed(i)
                z, _ = t.method.train_batch(t.net, x, y)
            t.net(z)
    t.net.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run folders")
    ap.add_argument("--batches", type=int, default=64, help="source-train batches for the re-estimate")
    ap.add_argument("--checkpoint", default="best", help="checkpoint name in checkpoints/ (default best)")
    ap.add_argument("--val-cases", type=int, default=None, help="only the first N source-val cases (default all)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print("| run | source-val Dice as saved | BN re-estimated, training inputs | BN re-estimated, test-time "
          "inputs | intensity only | features only |\n|---|---|---|---|---|---|", flush=True)
    for folder in a.runs:
        try:
            t = trained(Path(folder), a.checkpoint)
        except RunFolderError as e:
            print(e, file=sys.stderr)
            return 2
        rd = t.rd
        t.val_cases = t.val_cases[:a.val_cases]
        saved = copy.deepcopy(t.net.state_dict())
        cells = [t.validate()]
        for unmasked in (False, True):
            t.net.load_state_dict(saved)
            recalibrate(t, a.batches, unmasked)
            cells.append(t.validate())
        t.net.load_state_dict(saved)
        if hasattr(t.method, "channel_mask"):
            p = float(t.method.hp["p"])
            scale = 1.0 / (1.0 - p) if t.method.hp["rescale"] else 1.0
            full = t.method.infer_input
            for keep in ("intensity", "features"):
                mult = torch.zeros(t.method.input_channels())
                if keep == "intensity":
                    mult[0] = scale
                else:
                    mult[1:] = 1.0
                t.method.infer_input = lambda x, m=mult.view(1, -1, 1, 1, 1): full(x) * m
                cells.append(t.validate())
            t.method.infer_input = full
        print(f"| {rd.path.name} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
