"""Where the ct_lung_lesion false positives lie on the real chest CTs (pyradiomics lung1 / lung2).

For each case: the volume the model calls lesion, how much of it lies OUTSIDE the patient's body
(``medseg.classical.presets.body_mask``: the largest connected region above -500 HU, holes
filled slice by slice along the axial axis; blankets, gowns and the table are outside it), the number of components, the Dice against the reference
lesion (and the Dice if everything outside the body were dropped: a measurement, not part of the
bundle), and the largest components with their median HU and whether they touch the lesion.

Usage: ``python bundles/ct_lung_lesion/scripts/diagnose_real.py [BUNDLE_OR_RUN_FOLDER]`` (default:
the shipped bundle).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bundle_tools as bt  # noqa: E402


def main() -> None:
    from scipy import ndimage

    from medseg.bundle import load_bundle
    from medseg.classical.presets import body_mask
    from medseg.data import sample
    from medseg.io import load

    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    model = bt.load_run_model(src) if (src / "model_spec.json").is_file() else load_bundle(str(src))
    for case in ("lung1", "lung2"):
        image = load(sample(f"{case}_image"))
        ref = load(sample(f"{case}_label"), kind="label")[0].numpy() > 0
        hu, aff = image[0].numpy(), np.asarray(image.affine, dtype=np.float64)
        spacing = np.linalg.norm(aff[:3, :3], axis=0)
        ml = float(np.prod(spacing)) / 1000
        pred = bt.segment_array(model, hu, aff) > 0
        body = body_mask(hu, spacing, int(np.argmax(np.abs(aff[2, :3]))))
        comp, n = ndimage.label(pred)
        inside = pred & body  # what a body-outline restriction would leave (not part of the bundle)
        print(f"{case}: called lesion {pred.sum() * ml:.1f} mL in {n} components, of it outside the body "
              f"{(pred & ~body).sum() * ml:.1f} mL; reference {ref.sum() * ml:.1f} mL; Dice "
              f"{2 * (pred & ref).sum() / max(pred.sum() + ref.sum(), 1):.3f}, inside the body only "
              f"{2 * (inside & ref).sum() / max(inside.sum() + ref.sum(), 1):.3f}")
        sizes = np.bincount(comp.ravel())[1:]
        for i in np.argsort(sizes)[::-1][:8]:
            c = comp == i + 1
            print(f"  {sizes[i] * ml:6.2f} mL  median {np.median(hu[c]):6.0f} HU  inside the body "
                  f"{(c & body).sum() / c.sum():.2f}  touches the lesion {bool((c & ref).any())}")


if __name__ == "__main__":
    main()
