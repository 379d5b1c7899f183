"""Score the shipped ``ct_lung_lesion`` on further unseen phantoms: seeds 7001-7006 (never used
for training or for any choice of settings) on the phantom's default grid, in two trained
orientations (RAS, LPS) plus one axis order never trained on (ASR, seeds 7001-7002). The voxel
axes of a phantom follow its orientation, so each (seed, orientation) is a different anatomy.

Prints Dice per case, true / predicted lesion volume, and the mean.

Usage (from the repository root; about 2 minutes on 2 CPU cores)::

    python bundles/ct_lung_lesion/scripts/more_heldout.py [--bundle bundles/ct_lung_lesion]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import numpy as np  # noqa: E402

PLAN = [(s, o) for s in range(7001, 7007) for o in ("RAS", "LPS")] + [(7001, "ASR"), (7002, "ASR")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    from medseg.bundle import load_bundle
    from medseg.metrics import dice

    model = load_bundle(args.bundle)
    scores = []
    print("case | true_voxels | predicted_voxels | dice")
    for cid, img, lab, aff in bt.iter_phantoms("lung_ct", PLAN):
        pred = bt.segment_array(model, img, aff)
        d = float(dice(pred == 1, lab == 1))
        scores.append(d)
        print(f"{cid} | {int((lab == 1).sum())} | {int((pred == 1).sum())} | {d:.3f}", flush=True)
    print(f"mean Dice over {len(scores)} cases: {np.mean(scores):.3f} (min {min(scores):.3f}, "
          f"max {max(scores):.3f})")


if __name__ == "__main__":
    main()
