"""Judge the ``lung_field`` postprocess on ct_lung_lesion's weights by the rule written before measuring.

docs/PLAN_synth.md, "ct_lung_lesion: lesions only in the lung field": the same weights with their
postprocess as shipped and with ``lung_field`` added (the lung preset on the network input in HU,
holes filled per axial slice, closed by 10 mm; a lesion component stays when at least half of it
lies in that field), on the real lung1 (held out) and lung2 (a training case), the synthetic test
(lesions inserted into ts_ct, seeds 9500-9507) and the held-out phantoms 9001-9004.

Usage: ``python bundles/ct_lung_lesion/scripts/lung_field_check.py [BUNDLE] [--out JSON]``
(default: the shipped bundle; its own postprocess is the baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_tools as bt  # noqa: E402
import real_images  # noqa: E402
import train_synth  # noqa: E402

LUNG_FIELD = {"input_window_hu": [-1000, 400], "closing_mm": 10.0, "min_fraction": 0.5}


def scores(model) -> dict:
    test = list(train_synth._ts_ct_cases("test_tsct", train_synth.TEST_SEEDS))
    syn = bt.eval_cases(model, test, train_synth.LABELS)
    phantoms = bt.eval_cases(model, bt.phantom_cases("lung_ct", train_synth.TEST_PHANTOMS), train_synth.LABELS)
    return {"real": real_images.lung(model), "synthetic_test_tsct": syn,
            "synthetic_test_mean": bt.mean_row(syn)["lung_nodule"], "heldout_phantoms": phantoms,
            "heldout_phantoms_mean": bt.mean_row(phantoms)["lung_nodule"]}


def rule(new: dict, old: dict) -> tuple[bool, str]:
    """The plan's rule: lung1 above the shipped figure, lung2 and the synthetic test not below it,
    held-out phantoms not more than 0.01 below."""
    checks = {
        "lung1": (new["real"]["lung1"]["lesion Dice"], old["real"]["lung1"]["lesion Dice"],
                  new["real"]["lung1"]["lesion Dice"] > old["real"]["lung1"]["lesion Dice"]),
        "lung2": (new["real"]["lung2"]["lesion Dice"], old["real"]["lung2"]["lesion Dice"],
                  new["real"]["lung2"]["lesion Dice"] >= old["real"]["lung2"]["lesion Dice"]),
        "synthetic test": (new["synthetic_test_mean"], old["synthetic_test_mean"],
                           new["synthetic_test_mean"] >= old["synthetic_test_mean"]),
        "phantoms": (new["heldout_phantoms_mean"], old["heldout_phantoms_mean"],
                     new["heldout_phantoms_mean"] >= old["heldout_phantoms_mean"] - 0.01),
    }
    why = "; ".join(f"{k} {n:.3f} vs {o:.3f} ({'ok' if ok else 'FAILS'})" for k, (n, o, ok) in checks.items())
    return all(ok for _, _, ok in checks.values()), why


def main() -> None:
    from medseg.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--out", type=Path, default=None, help="write the figures here (JSON)")
    args = parser.parse_args()
    model = load_bundle(args.bundle)
    base_post = {k: v for k, v in model.postprocess.items() if k != "lung_field"}
    model.postprocess = base_post
    old = scores(model)
    model.postprocess = {**base_post, "lung_field": dict(LUNG_FIELD)}
    new = scores(model)
    ok, why = rule(new, old)
    for name, r in (("without lung_field", old), ("with lung_field", new)):
        print(f"{name}: lung1 {r['real']['lung1']['lesion Dice']:.3f}, lung2 {r['real']['lung2']['lesion Dice']:.3f}, "
              f"synthetic test {r['synthetic_test_mean']:.3f}, phantoms {r['heldout_phantoms_mean']:.3f}")
    print(f"rule {'MET' if ok else 'NOT met'}: {why}")
    if args.out:
        args.out.write_text(json.dumps({"postprocess_without": base_post, "lung_field": LUNG_FIELD,
                                        "without": old, "with": new, "rule_met": ok, "rule": why},
                                       indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
