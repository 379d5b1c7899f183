"""Choose ``ct_spine``'s postprocess on NEW synthetic cases, then report it on the real CTs.

The plan and rule were written before measuring (docs/PLAN_synth.md, "Postprocess choice for the
run-2 weights"). Candidates, all on the same weights:

* ``consecutive`` (V0, shipped 0.4.1): ``vertebra_levels`` renames instances consecutively;
* ``none`` (V1): the network's per-voxel levels;
* ``components`` (V2): the network's levels, components under 1.5 mL per level dropped;
* ``vote`` (V3): ``vertebra_levels`` instances, each named by its majority network level.

Selection set: ``spine_case(i)`` for i = 1000-1039, synthesis seeds 11000-11039, drawn with
``train_synth.py``'s recipe (training used i = 0-119, seeds 10000-10119). The network runs once
per case; the candidates differ only after it. Score per case: mean Dice over the levels present
in the reference; then the mean over cases. The real CTs (``bundles/real_images.py``'s ``spine``)
are reported for every candidate and decide shipping only through the plan's rule.

Usage: ``python bundles/ct_spine/scripts/choose_postprocess.py [BUNDLE_OR_RUN] [--cases N] [--out JSON]
[--against JSON]``. With ``--against`` (this script's JSON for the shipped release), new weights are
judged by run 3's rule (docs/PLAN_synth.md) instead: patient B's T12 Dice above the release's,
B's volume called another level not above it, and the synthetic mean per-level Dice not below it,
each with the chosen postprocess against the release's shipped one (``consecutive``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_tools as bt  # noqa: E402
import real_images  # noqa: E402
import train_synth  # noqa: E402

FIRST_CASE = 1000
_OPEN = {"levels": list(train_synth.LABELS), "opening_mm": 3.0, "min_size_mm3": 1500.0}
CANDIDATES = {
    "consecutive": {"vertebra_levels": dict(_OPEN)},
    "none": {},
    "components": {"min_component_mm3": 1500.0},
    "vote": {"vertebra_levels": {**_OPEN, "naming": "vote"}},
}
FP = "called > 10 mm from any T12-L5 vertebra (mL)"


@contextlib.contextmanager
def network_once():
    """Run the sliding window once per input and reuse its labels for every candidate."""
    import medseg.inference.segmentation as seg

    original, cache = seg.sliding_window_labels, {}

    def cached(x, *args, **kwargs):
        key = (tuple(x.shape), float(x.sum()), float((x * x).sum()))
        if key not in cache:
            cache.clear()  # one input at a time: the candidates of a case run back to back
            cache[key] = original(x, *args, **kwargs)
        return cache[key].clone()

    seg.sliding_window_labels = cached
    try:
        yield
    finally:
        seg.sliding_window_labels = original


def case_scores(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    from scipy import ndimage

    present = {v: n for v, n in train_synth.LABELS.items() if (ref == v).any()}
    per = bt.dice_per_label(pred, ref, present)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    far = ndimage.distance_transform_edt(ref == 0, sampling=spacing) > 10
    merged = bt.dice_per_label((pred > 0).astype(np.uint8), (ref > 0).astype(np.uint8), {1: "m"})["m"]
    return {"mean per-level Dice": float(np.mean(list(per.values()))), "merged Dice": merged,
            FP: float((pred > 0)[far].sum() * np.prod(spacing) / 1000)}


def synthetic(model, n_cases: int) -> dict[str, dict[str, dict[str, float]]]:
    from medseg.data.spine_synth import spine_case
    from medseg.data.synth import synthesize

    cfg = train_synth.synth_config()
    rows: dict[str, dict[str, dict[str, float]]] = {c: {} for c in CANDIDATES}
    for i in range(FIRST_CASE, FIRST_CASE + n_cases):
        tissue, names, affine, target, kind = spine_case(i)
        img, lab = synthesize(tissue, names, seed=10_000 + i, target=target, config=cfg)
        for name, post in CANDIDATES.items():
            model.postprocess = post
            rows[name][f"synth_{i}_{kind}"] = case_scores(bt.segment_array(model, img, affine), lab, affine)
        print(f"case {i} ({kind}): " + ", ".join(
            f"{c} {rows[c][f'synth_{i}_{kind}']['mean per-level Dice']:.3f}" for c in CANDIDATES), flush=True)
    return rows


def rule(syn: dict[str, float], real: dict[str, dict], chosen: str) -> tuple[bool, str]:
    """docs/PLAN_synth.md: the chosen candidate ships only if it is not V0, beats V0 on the synthetic
    cases by >= 0.01, and is no worse than V0 on any of the real-case figures."""
    a, b = (lambda c: real[c]["ts_ct (patient A)"]), (lambda c: real[c]["ts_ct2 cropped (patient B)"])
    per = [f"{lv} Dice" for lv in train_synth.LEVELS]
    mean_a = {c: float(np.mean([a(c)[k] for k in per])) for c in real}
    checks = {
        "not V0": chosen != "consecutive",
        "synthetic >= V0 + 0.01": syn[chosen] >= syn["consecutive"] + 0.01,
        "A mean per-level": mean_a[chosen] >= mean_a["consecutive"],
        "A > 10 mm": a(chosen)[train_synth.FP_MM] <= a("consecutive")[train_synth.FP_MM],
        "A on S1": a(chosen)[train_synth.FP_S1] <= a("consecutive")[train_synth.FP_S1] + 1.0,
        "B T12": b(chosen)["T12 Dice"] >= b("consecutive")["T12 Dice"],
        "B other levels": (b(chosen)["levels other than T12 called (mL)"]
                           <= b("consecutive")["levels other than T12 called (mL)"]),
    }
    why = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())
    return all(checks.values()), f"chosen {chosen}; A mean per-level {mean_a[chosen]:.3f} vs V0 " \
                                 f"{mean_a['consecutive']:.3f}; {why}"


def run3_rule(syn: dict[str, float], real: dict[str, dict], chosen: str, against: dict) -> tuple[bool, str]:
    """docs/PLAN_synth.md, run 3: B's T12 above the release's, B's other-level volume not above it,
    the synthetic mean per-level Dice not below it (the release with its shipped postprocess)."""
    b_new, b_old = real[chosen]["ts_ct2 cropped (patient B)"], against["real_ct"]["consecutive"]["ts_ct2 cropped (patient B)"]
    other = "levels other than T12 called (mL)"
    checks = {
        f"B T12 {b_new['T12 Dice']:.3f} > {b_old['T12 Dice']:.3f}": b_new["T12 Dice"] > b_old["T12 Dice"],
        f"B other levels {b_new[other]:.1f} <= {b_old[other]:.1f} mL": b_new[other] <= b_old[other],
        f"synthetic {syn[chosen]:.3f} >= {against['synthetic_mean']['consecutive']:.3f}":
            syn[chosen] >= against["synthetic_mean"]["consecutive"],
    }
    return all(checks.values()), f"chosen {chosen}; " + ", ".join(
        f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())


def main() -> None:
    from medseg.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="write the figures here (JSON)")
    parser.add_argument("--against", type=Path, default=None,
                        help="this script's JSON for the shipped release: judge by run 3's rule")
    args = parser.parse_args()
    src = Path(args.bundle)
    model = bt.load_run_model(src) if (src / "model_spec.json").is_file() else load_bundle(str(src))
    with network_once():
        rows = synthetic(model, args.cases)
        syn = {c: float(np.mean([r["mean per-level Dice"] for r in rows[c].values()])) for c in CANDIDATES}
        chosen = max(CANDIDATES, key=lambda c: (syn[c], -float(np.mean([r[FP] for r in rows[c].values()]))))
        real = {}
        for name, post in CANDIDATES.items():
            model.postprocess = post
            real[name] = real_images.spine(model)
    if args.against:
        ok, why = run3_rule(syn, real, chosen, json.loads(args.against.read_text()))
    else:
        ok, why = rule(syn, real, chosen)
    print("\ncandidate | synthetic mean per-level | synthetic merged | synthetic mL > 10 mm | "
          "A T12/L1/L2/L3/L4/L5 | A merged | A mL > 10 mm | B T12 | B other levels mL")
    for c in CANDIDATES:
        a, b = real[c]["ts_ct (patient A)"], real[c]["ts_ct2 cropped (patient B)"]
        m = {k: float(np.mean([r[k] for r in rows[c].values()])) for k in ("merged Dice", FP)}
        print(f"{c} | {syn[c]:.3f} | {m['merged Dice']:.3f} | {m[FP]:.1f} | "
              + "/".join(f"{a[f'{lv} Dice']:.3f}" for lv in train_synth.LEVELS)
              + f" | {a['merged T12-L5 Dice']:.3f} | {a[train_synth.FP_MM]:.1f} | {b['T12 Dice']:.3f} | "
              f"{b['levels other than T12 called (mL)']:.1f}")
    print(f"rule {'MET' if ok else 'NOT met'}: {why}")
    if args.out:
        args.out.write_text(json.dumps({"candidates": CANDIDATES, "synthetic_cases": rows, "synthetic_mean": syn,
                                        "chosen": chosen, "real_ct": real, "rule_met": ok, "rule": why},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
