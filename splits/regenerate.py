"""Rewrite the committed split files from the adapters' rules. Run it only when a rule changes
on purpose (a reviewed change: every run id of the dataset changes with its split checksum).

    python splits/regenerate.py           # writes splits/{brats,hvsmr,prostate}.json and the *.rule.json files
    python splits/regenerate.py --check   # exit 1 if a committed file differs (tests run this check)

Lists are committed where the case ids are known without the data (BraTS 001-484, HVSMR pat0-59,
the prostate sites). AMOS, TopCoW and PanDG ids are only known from the files: their rule files are
committed and `dgbench prepare` realises the split next to the cache.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dgbench.data.adapter import content_sha1

HERE = Path(__file__).resolve().parent

COMMON = {"seed": 123, "fewshot": [1, 3, 5]}
RULES = {
    "amos": {
        "rule": "source = labelled CT (id < 500) of imagesTr + imagesVa; target = labelled MRI (id >= 500). "
                "MRI cases sorted by file name, shuffled once with numpy default_rng(123): first floor(n/2) "
                "target-val, the rest test (docs/datasets.md proposal, mirroring the reference valtest split). "
                "Source-val = the last ceil(10%) of a default_rng(123) shuffle of the sorted CT ids; few-shot N "
                "= the first N of that shuffle.",
        "expected": {"ct": 300, "mri": 60}},
    "topcow": {
        "rule": "TopCoW 2024 (docs/datasets.md): the sorted MR subject numbers shuffled once with numpy "
                "default_rng(123); source = the CTA of the first 75 subjects, target-val = the MRA of the next 20, "
                "test = the MRA of the rest. Source-val = the last ceil(10%) of a default_rng(123) shuffle of "
                "the sorted 75 source subjects; few-shot N = the first N of that shuffle.",
        "cut": {"train": 75, "target_val": 20},
        "expected": {"cta": 125, "mra": 125}},
    "pandg": {
        "rule": "PROVISIONAL (docs/datasets.md). Reference layout: train/ = source (venous), val/ = target-val, "
                "test/ = test (out-of-phase). Per-domain nnU-Net layout: venous folders = source, out-of-phase "
                "folders = target, target cases sorted by id, shuffled once with numpy default_rng(123): first "
                "floor(n/2) target-val, rest test. Source-val = the last ceil(10%) of a default_rng(123) shuffle "
                "of the sorted source ids; few-shot N = the first N of that shuffle.",
        "expected": None},
}


def payloads() -> dict[str, dict]:
    from dgbench_datasets.brats import BratsDataset
    from dgbench_datasets.hvsmr import HvsmrDataset
    from dgbench_datasets.prostate import ProstateDataset
    out = {f"{cls.name}.json": cls.committed_payload() for cls in (BratsDataset, HvsmrDataset, ProstateDataset)}
    for name, rule in RULES.items():
        out[f"{name}.rule.json"] = {"dataset": name, **COMMON, **rule}
    for p in out.values():
        p["sha1"] = content_sha1(p)
    return out


def main(argv: list[str]) -> int:
    stale = []
    for fname, payload in payloads().items():
        text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path = HERE / fname
        if "--check" in argv:
            if not path.exists() or json.loads(path.read_text()) != payload:
                stale.append(fname)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
