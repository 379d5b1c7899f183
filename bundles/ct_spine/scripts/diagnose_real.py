"""What the ct_spine network itself says on the real CT, before the ``vertebra_levels`` postprocess.

On TotalSegmentator's ``example_ct`` (patient A; see docs/README.md for what was trained on it):
the merged T12-L5 Dice of the network's own per-voxel labels, and a confusion table (rows: the
TotalSegmentator level, columns: the level the network gives, 0 = background). Compare with the
postprocessed figures of ``bundles/real_images.py ct_spine``.

Usage: ``python bundles/ct_spine/scripts/diagnose_real.py [BUNDLE_OR_RUN_FOLDER]`` (default: the shipped bundle).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402
import real_images  # noqa: E402


def main() -> None:
    import nibabel as nib

    from medseg.bundle import load_bundle
    from medseg.data import sample
    from medseg.data.totalseg import TOTAL_V2, remap

    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    model = bt.load_run_model(src) if (src / "model_spec.json").is_file() else load_bundle(str(src))
    model.postprocess = {}
    img = nib.load(str(sample("ts_ct")))
    ref = remap(np.asarray(nib.load(str(sample("ts_ct_vertebrae"))).dataobj), TOTAL_V2, real_images.SPINE_TS)
    pred = bt.segment_array(model, np.asarray(img.dataobj, dtype=np.float32), img.affine)
    fg, rf = pred > 0, ref > 0
    print(f"merged T12-L5 Dice without the postprocess: {2 * (fg & rf).sum() / (fg.sum() + rf.sum()):.3f}")
    names = ["0", *real_images.SPINE_NAMES.values()]
    print("reference \\ network | " + " | ".join(names))
    for v, n in real_images.SPINE_NAMES.items():
        print(f"{n} | " + " | ".join(str(int(c)) for c in np.bincount(pred[ref == v], minlength=7)[:7]))


if __name__ == "__main__":
    main()
