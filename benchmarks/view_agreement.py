"""Do a multi-view run's views agree while being wrong? Loss parts and predicted classes per view.

    python benchmarks/view_agreement.py RUN_FOLDER [RUN_FOLDER ...] [--batches 16] [--checkpoint last]

A diagnostic for methods that stack several augmented views of each batch, supervise one and
tie the others to it with a consistency term (GIN with views > 1, GIN-IPA; Ouyang et al., IEEE
TMI 2022). For each finished run folder it loads a checkpoint (default checkpoints/last.pt, the
weights the run ended with), draws `--batches` source-train batches as the run trains on them
(its sampler and augmentation), makes the method's own views of each (`train_batch`) and
prints, with the network in training mode as in a step, and no update:
- the supervised part of the loss (the loop's loss on the supervised view, `view_loss`);
- the consistency part (the method's own loss minus the supervised part);
- the voxel fraction of each class in the ground truth and in each view's prediction.

A run whose views agree (a small consistency part) while every view predicts some classes
nowhere is consistent and wrong: its consistency term is satisfied by predicting the same
classes on every view, and the supervised term alone has to pull the missing classes in.
Only source data is used. The run folders are not changed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dgbench.rundir import RunFolderError
from dgbench.train import train_batches, trained
from dgbench_methods._common import view_loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run folders of a multi-view method (gin, gin-ipa)")
    ap.add_argument("--batches", type=int, default=16, help="source-train batches (default 16)")
    ap.add_argument("--checkpoint", default="last", help="checkpoint name in checkpoints/ (default last)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the views' random draws (default 0)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    for folder in a.runs:
        try:
            t = trained(Path(folder), a.checkpoint)
        except RunFolderError as e:
            print(e, file=sys.stderr)
            return 2
        n_views = int(getattr(t.method, "n_views", 1))
        if n_views < 2:
            print(f"{t.rd.path.name}: method {t.spec.method!r} stacks no views; nothing to compare", file=sys.stderr)
            return 2
        t.net.train()
        torch.manual_seed(a.seed)
        n_classes = t.method.ctx.n_classes
        sup = cons = 0.0
        gt = torch.zeros(n_classes)
        pred = torch.zeros(n_views, n_classes)
        with torch.no_grad():
            for x, y in train_batches(t, a.batches):
                views, yy = t.method.train_batch(t.net, x, y)
                logits = t.net(views)
                s = float(view_loss(t.method.ctx.loss_fn, logits, yy, n_views))
                sup += s
                cons += float(t.method.loss(t.net, views, yy, logits)) - s
                gt += torch.bincount(y.long().flatten(), minlength=n_classes).float() / y.numel()
                for v, p in enumerate(logits.argmax(1).chunk(n_views)):
                    pred[v] += torch.bincount(p.flatten(), minlength=n_classes).float() / p.numel()
        gt, pred = gt / a.batches, pred / a.batches
        print(f"\n{t.rd.path.name} ({a.checkpoint}.pt, {a.batches} source-train batches of {t.cfg.batch_size})")
        print(f"supervised loss {sup / a.batches:.3f}, consistency part {cons / a.batches:.4f}")
        names = [t.adapter.classes.get(c, f"class {c}") for c in range(n_classes)]
        print("| voxel fraction | " + " | ".join(names) + " |")
        print("|---" * (n_classes + 1) + "|")
        print("| ground truth | " + " | ".join(f"{v:.3f}" for v in gt.tolist()) + " |")
        for v in range(n_views):
            print(f"| view {v + 1} predicted | " + " | ".join(f"{u:.3f}" for u in pred[v].tolist()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
