"""Score a shipped phantom-trained bundle on FURTHER unseen phantoms, beyond the four (six for the
X-ray) designated held-out ones its README reports: seeds 7001-7006 (never used for training or
for any choice of settings) on the generator's default grid in two orientations the bundles were
trained on (RAS, LPS; the X-ray phantom has none), plus seeds 7001-7002 on an axis order none of
them was trained on (ASR). A phantom's voxel axes follow its orientation, so each (seed,
orientation) is a different anatomy. Dice per label from :func:`medseg.metrics.dice` on the
source grid after :func:`medseg.inference.segment`, as in the training scripts.

Prints a Markdown table (one row per case, the mean last) and, for ``ct_lung_lesion``, the
predicted / true lesion volume ratio.

Usage (from the repository root; 1-4 minutes per bundle on 2 CPU cores)::

    python bundles/more_heldout.py ct_lung_lesion [ct_abdomen_organs ct_spine xray_chest_lungs]
    python bundles/more_heldout.py ct_spine --path /tmp/candidate_bundle --seeds 7101-7110 --no-asr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

SEEDS = range(7001, 7007)


def plan(generator: str, seeds: range, asr: bool = True) -> list[tuple[int, str | None]]:
    """(seed, orientation) pairs: RAS and LPS per seed, plus ASR for the first two seeds (3D);
    one case per seed for the 2D X-ray phantom."""
    if generator == "chest_xray":
        return [(s, None) for s in seeds]
    return [(s, o) for s in seeds for o in ("RAS", "LPS")] + ([(s, "ASR") for s in seeds[:2]] if asr else [])
#: bundle -> (phantom generator, eval_cases options)
GENERATORS = {
    "ct_lung_lesion": ("lung_ct", {}),
    "ct_abdomen_organs": ("abdomen_ct", {}),
    "ct_spine": ("spine_ct", {"only_present": True, "merged": "all_levels_merged"}),
    "xray_chest_lungs": ("chest_xray", {}),
}


def score(name: str, folder: Path, seeds: range = SEEDS, asr: bool = True) -> dict[str, dict[str, float]]:
    """Dice per label per case of the bundle in ``folder`` (trained for ``name``'s task), plus a
    ``mean`` row."""
    from medseg.bundle import load_bundle

    generator, opts = GENERATORS[name]
    model = load_bundle(folder)
    labels = dict(model.labels)
    cases = bt.iter_phantoms(generator, plan(generator, seeds, asr))
    if name != "ct_lung_lesion":
        res = bt.eval_cases(model, cases, labels, **opts)
        return {**res, "mean": bt.mean_row(res)}
    res = {}
    for cid, img, lab, aff in cases:  # one segmentation per case gives Dice and the volume ratio
        pred = bt.segment_array(model, img, aff)
        res[cid] = {**bt.dice_per_label(pred, lab, labels),
                    "volume_ratio": float((pred == 1).sum()) / max(float((lab == 1).sum()), 1.0)}
    return {**res, "mean": bt.mean_row(res)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", choices=sorted(GENERATORS))
    ap.add_argument("--bundles", type=Path, default=Path(__file__).resolve().parent,
                    help="folder holding the bundles (default: this one)")
    ap.add_argument("--path", type=Path, default=None,
                    help="score the bundle in this folder instead (one NAME: the task it was trained for)")
    ap.add_argument("--seeds", default="7001-7006", help="first-last seed (default 7001-7006)")
    ap.add_argument("--no-asr", action="store_true", help="RAS and LPS only")
    args = ap.parse_args()
    if args.path is not None and len(args.names) != 1:
        ap.error("--path takes exactly one NAME")
    first, last = (int(v) for v in args.seeds.split("-"))
    for name in args.names:
        rows = score(name, args.path or args.bundles / name, range(first, last + 1), not args.no_asr)
        cols = sorted({c for r in rows.values() for c in r}, key=lambda c: (c == "volume_ratio", c))
        print(f"\n{name} ({len(rows) - 1} further unseen phantoms)\n" + bt.fmt_table(rows, cols), flush=True)
        lows = [min(v for c, v in r.items() if c != "volume_ratio") for k, r in rows.items() if k != "mean"]
        print(f"lowest single value: {np.min(lows):.3f}", flush=True)


if __name__ == "__main__":
    main()
