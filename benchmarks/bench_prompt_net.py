"""The trained promptable network (``promptable_3d``) on structures it never saw, beside the
classical interactive methods given the same prompts.

Sets (none of their target classes was a training target, see docs/PLAN_prompt.md):
* lesions: pyradiomics lung1, lung2 (CT), brain1, brain2 (T1c MR), breast1 (MR) - real;
* organs: TotalSegmentator ``example_ct_sm`` liver, spleen, kidneys - real CT (the image was
  never read in training; its label map was, with these four organs painted out);
* phantoms: held-out abdomen CT phantoms, seeds 9001-9004 (RAS, LPS, PIL, LAS), liver / spleen /
  kidneys (the abdomen phantoms were not trained on).
With ``--dims 2`` the 2D network (``promptable_2d``) on 2D sets, none of them trained on:
* nuclei: the real stardist DSB nuclei (the first ``--nuclei`` of ``bench_prompt.load_cases``);
* lesion_slices / organ_slices: the axial slice of largest area of each real lesion and of each
  real ``example_ct_sm`` organ above, as a 2D image (its world geometry kept);
* phantoms2d: held-out ``chest_xray`` phantoms (seeds 9001-9002, each lung) and the first 10
  nuclei of a held-out ``nuclei_2d`` phantom (seed 9001).
In 2D every classical method runs here on the same prompts (they are cheap in 2D).

Protocol (the same functions as ``bench_prompt.py``, :mod:`medseg.prompt.simulate`): Dice after
one box (exact and jittered +-3 voxels), one click at the centre, the extreme points; Dice after
1..N clicks (first at the centre, then at the centre of the largest error region, with all
clicks and the previous mask), NoC@85 / NoC@90 capped at N, and the same with jittered clicks.
The classical rows on the real sets are read from ``benchmarks/results/prompt_classical.json``
(same prompts, same seeds, run by ``bench_prompt.py``); on the phantoms they are run here
(box / click / extreme only). Also the time of one prompt on a 256x256x128 CT.

Usage: ``python benchmarks/bench_prompt_net.py [--clicks 20] [--threads 1]``; writes
``benchmarks/results/prompt_network.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_prompt as B  # noqa: E402

NET = "promptable"
PHANTOM_PLAN = [(9001, "RAS"), (9002, "LPS")]
PHANTOM_CLASSICAL = ("grabcut", "region-growing")  # `auto` is exactly these two (box / clicks)


def phantom_cases() -> list[dict]:
    import torch
    from monai.data import MetaTensor

    from medseg.data import phantoms

    cases = []
    for seed, orient in PHANTOM_PLAN:
        ph = phantoms.abdomen_ct(seed=seed, orientation=orient)
        im = MetaTensor(torch.from_numpy(ph.image.astype(np.float32))[None], affine=torch.from_numpy(ph.affine))
        for v, name in ph.labels.items():
            cases.append({"set": "phantoms", "name": f"{name}_{seed}_{orient}", "image": im, "ref": ph.label == v})
    return cases


def _slice_case(case: dict, set_name: str) -> dict:
    """The axial (last-axis) slice of largest reference area as a 2D image: the 4x4 affine keeps
    the in-plane columns and the slice's world position."""
    import torch
    from monai.data import MetaTensor

    ref3 = case["ref"]
    k = int(np.argmax(ref3.sum((0, 1))))
    a = np.asarray(case["image"].affine, dtype=np.float64)
    a2 = a.copy()  # in-plane columns and the slice normal as they are; the origin moves to slice k
    a2[:3, 3] = a[:3, :3] @ np.array([0.0, 0.0, k]) + a[:3, 3]
    img = np.asarray(case["image"].numpy()[0, :, :, k], dtype=np.float32)
    im = MetaTensor(torch.from_numpy(img)[None], affine=torch.from_numpy(a2))
    return {"set": set_name, "name": f"{case['name']}_k{k}", "image": im, "ref": ref3[:, :, k]}


def cases_2d(n_nuclei: int, seed: int, sets) -> list[dict]:
    import torch
    from monai.data import MetaTensor
    from scipy import ndimage

    from medseg.data import phantoms

    real = B.load_cases(n_nuclei, seed)
    cases = [c for c in real if c["set"] == "nuclei"]
    cases += [_slice_case(c, "lesion_slices") for c in real if c["set"] == "lesions"]
    cases += [_slice_case(c, "organ_slices") for c in real if c["set"] == "organs"]
    for seed_x in (9001, 9002):
        ph = phantoms.chest_xray(seed=seed_x)
        im = MetaTensor(torch.from_numpy(ph.image.astype(np.float32))[None], affine=torch.from_numpy(ph.affine))
        for v, name in ph.labels.items():
            cases.append({"set": "phantoms2d", "name": f"{name}_{seed_x}", "image": im, "ref": ph.label == v})
    ph = phantoms.nuclei_2d(seed=9001)
    lab, n = ndimage.label(ph.label > 0)
    im = MetaTensor(torch.from_numpy(ph.image.astype(np.float32))[None], affine=torch.from_numpy(ph.affine))
    for v in range(1, min(n, 10) + 1):
        cases.append({"set": "phantoms2d", "name": f"nucleus_9001_{v}", "image": im, "ref": lab == v})
    return [c for c in cases if c["set"] in sets]


def timing_256(repeats: int = 3, model=None) -> dict:
    """The network on the same 256x256x128 input as ``bench_prompt.timing_256``."""
    import os

    import torch

    from medseg.prompt import segment
    from medseg.prompt import simulate as S

    im, ref, box, centre = B.timing_case_256()
    segment(im, box=box, voxel=True, method=NET, model=model)  # load the weights once
    prev = segment(im, box=box, voxel=True, method=NET, model=model).numpy()[0]
    nxt = S.corrective_click(prev > 0, ref, [1.0, 1.0, 1.0])
    res = {"shape": list(im.shape[1:]), "object": "liver (real CT resampled)", "threads": torch.get_num_threads(),
           "load_average_1min_before": round(os.getloadavg()[0], 2)}
    tasks = {"box": (NET, {"box": box, "model": model}), "click": (NET, {"points": [centre], "model": model}),
             "correction": (NET, {"points": [centre, nxt[0]], "labels": [1, nxt[1]], "previous": prev,
                                  "model": model})}
    res.update(B.time_prompts(im, tasks, repeats))
    return res


def best_classical(summary_set: dict, key: str) -> tuple[str, float]:
    best = ("-", float("nan"))
    for m, v in summary_set.items():
        if m in ("n", NET) or not isinstance(v, dict) or key not in v:
            continue
        if not best[1] >= v[key]:
            best = (m, v[key])
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default=None,
                    help="default: organs,lesions,phantoms (3D); nuclei,lesion_slices,organ_slices,phantoms2d (2D)")
    ap.add_argument("--dims", type=int, choices=(2, 3), default=3)
    ap.add_argument("--nuclei", type=int, default=40, help="real nuclei in the 2D run")
    ap.add_argument("--model", default=None, help="a promptable bundle folder (default: the shipped one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prompt_network.json"))
    args = ap.parse_args(argv)
    import warnings

    import torch

    from medseg.io.atomic import atomic_write_text
    from medseg.prompt import network

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*probability range.*")
    B.JITTER_METHODS = ("auto", NET)
    t0 = time.perf_counter()
    sets = (args.sets or ("organs,lesions,phantoms" if args.dims == 3 else
                          "nuclei,lesion_slices,organ_slices,phantoms2d")).split(",")
    if args.dims == 2:
        cases = cases_2d(args.nuclei, args.seed, sets)
        classical = {"summary": {}, "protocol": {"noc_cap": args.clicks}}
    else:
        cases = [c for c in B.load_cases(0, args.seed) if c["set"] in sets]
        if "phantoms" in sets:
            cases += phantom_cases()
        classical = json.loads((ROOT / "benchmarks" / "results" / "prompt_classical.json").read_text())
    bundle = network.resolve_bundle(args.model, args.dims)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    timing = timing_256(model=args.model) if args.dims == 3 else {}
    print("one prompt, 256x256x128 CT: " + ", ".join(f"{k} {v['median_s']} s" for k, v in timing.items()
                                                      if isinstance(v, dict)), flush=True)
    rows = []
    for c in cases:
        t1 = time.perf_counter()
        row = B.run_case(c, args.clicks, (NET,), (NET,), args.seed, model=args.model)
        if args.dims == 2:  # every classical method, clicks too, on the same prompts
            cl = B.run_case(c, args.clicks, B.METHODS, B.CLICK_METHODS, args.seed)
            row["methods"].update(cl["methods"])
        elif c["set"] == "phantoms":
            cl = B.run_case(c, 0, PHANTOM_CLASSICAL, (), args.seed)
            row["methods"].update(cl["methods"])
        rows.append(row)
        r = row["methods"][NET]
        print(f"{c['set']}/{c['name']}: box {r['box']:.3f} click {r['click']:.3f} extreme {r['extreme']:.3f} "
              f"NoC90 {r.get('noc90_clicks')} ({time.perf_counter() - t1:.0f} s)", flush=True)
    methods = (NET,) + (tuple(B.METHODS) if args.dims == 2 else PHANTOM_CLASSICAL)
    summary = B.summarise(rows, methods)
    side = {}
    for s, d in summary.items():
        ref = classical["summary"].get(s, d)
        entry = {}
        for key in ("box", "box_jitter3", "click", "extreme"):
            name, val = best_classical(ref, key)
            entry[key] = {"network": d[NET][key], "best_classical": val, "best_classical_method": name}
        for key in ("noc85_clicks", "noc90_clicks", "noc90_clicks_jitter"):
            vals = {m: v[key] for m, v in ref.items() if isinstance(v, dict) and key in v and m != NET}
            if vals:
                m = min(vals, key=vals.get)
                entry[key] = {"network": d[NET].get(key), "best_classical": vals[m], "best_classical_method": m,
                              "classical_cap": classical["protocol"]["noc_cap"] if s != "phantoms" else None}
            else:
                entry[key] = {"network": d[NET].get(key)}
        side[s] = entry
    result = {"command": f"python benchmarks/bench_prompt_net.py --dims {args.dims} --sets {','.join(sets)} "
                         f"--clicks {args.clicks} --threads {args.threads}" + (f" --nuclei {args.nuclei}"
                                                                              if args.dims == 2 else "")
                         + (f" --model {args.model}" if args.model else ""),
              "bundle": {"name": meta["name"], "version": meta["version"]},
              "protocol": {"n_clicks": args.clicks, "box_jitter_voxels": 3, "seed": args.seed,
                           "stop_at_dice": B.STOP_AT, "noc_cap": args.clicks,
                           "classical_real_sets_from": "benchmarks/results/prompt_classical.json (its NoC cap: "
                                                       f"{classical['protocol']['noc_cap']} clicks)",
                           "phantoms": [f"abdomen_ct seed {s} {o}" for s, o in PHANTOM_PLAN] if args.dims == 3
                           else ["chest_xray seeds 9001-9002 (lungs)", "nuclei_2d seed 9001 (first 10 nuclei)"]},
              "summary": summary, "side_by_side": side, "timing_256x256x128": timing, "cases": rows,
              "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(B.table(summary, methods))
    print("\n| set | prompt | network | best classical | ratio |\n|---|---|---|---|---|")
    for s, e in side.items():
        for k, v in e.items():
            if "best_classical" in v and v["network"] is not None:
                ratio = v["network"] / v["best_classical"] if v["best_classical"] else float("nan")
                print(f"| {s} | {k} | {v['network']} | {v['best_classical']} ({v['best_classical_method']}) "
                      f"| {ratio:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
