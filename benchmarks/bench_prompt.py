"""Interactive segmentation with the classical methods behind ``medseg.prompt.segment``.

Real structures with references, through :mod:`medseg.data` (pinned, sha256-checked):
* lesions: pyradiomics lung1, lung2 (CT), brain1, brain2 (T1c MR), breast1 (MR);
* organs: TotalSegmentator's ``example_ct_sm`` with its ``example_seg`` (liver, spleen, kidneys);
  the reserved blind test (``example_ct_dicom``) is never read;
* nuclei: the stardist DSB image, each nucleus one object (``--nuclei`` of them, seeded choice).

Per object and method: Dice after one box (exact, and jittered by up to 3 voxels per side),
after one click at the object's centre, after the extreme points (2 per axis); Dice after each of
1..20 clicks (first at the centre, then at the centre of the largest error region; see
:mod:`medseg.prompt.simulate`), NoC@85 / NoC@90 capped at 20; the same with jittered clicks. And
the time of one prompt on a 256x256x128 CT crop. Writes ``benchmarks/results/prompt_classical.json``
and prints a Markdown table.

Usage: ``python benchmarks/bench_prompt.py [--quick] [--nuclei 25] [--clicks 20]``.
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

METHODS = ("region-growing", "random-walker", "grabcut", "auto")
CLICK_METHODS = ("region-growing", "auto")  # random-walker alone from clicks: see the 1-click column
JITTER_METHODS = ("auto",)
STOP_AT = 0.95  # the simulated annotator stops once satisfied; that Dice is carried forward
ORGANS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}  # TotalSegmentator v2 "total"


def load_cases(n_nuclei: int, seed: int = 0) -> list[dict]:
    import medseg.io
    from medseg.data import sample

    cases = []
    for name in ("lung1", "lung2", "brain1", "brain2", "breast1"):
        im = medseg.io.load(sample(f"{name}_image"))
        ref = medseg.io.load(sample(f"{name}_label"), kind="label").numpy()[0] > 0
        cases.append({"set": "lesions", "name": name, "image": im, "ref": ref})
    ct = medseg.io.load(sample("ts_ct_sm"))
    seg = medseg.io.load(sample("ts_ct_sm_seg"), kind="label").numpy()[0]
    for organ, value in ORGANS.items():
        cases.append({"set": "organs", "name": organ, "image": ct, "ref": seg == value})
    img = medseg.io.load(sample("nuclei_image"))
    inst = medseg.io.load(sample("nuclei_mask"), kind="label").numpy()[0]
    ids = [int(v) for v in np.unique(inst) if v]
    rng = np.random.default_rng(seed)
    for v in sorted(rng.choice(ids, size=min(n_nuclei, len(ids)), replace=False).tolist()):
        cases.append({"set": "nuclei", "name": f"nucleus_{v}", "image": img, "ref": inst == v})
    return cases


def run_case(case: dict, n_clicks: int, methods, click_methods, seed: int, model=None) -> dict:
    """``model``: a promptable bundle folder for the ``promptable`` method (default: the shipped one)."""
    from medseg.classical._sitk import spacing_of
    from medseg.prompt import segment
    from medseg.prompt import simulate as S

    im, ref = case["image"], case["ref"]
    spacing = spacing_of(np.asarray(im.affine), ref.ndim)
    rng = np.random.default_rng(seed)
    box = S.box_of(ref)
    box_j = S.box_of(ref, 3, rng)
    centre = S.first_click(ref, spacing)
    extremes = S.extreme_points(ref)
    out: dict = {"set": case["set"], "name": case["name"], "voxels": int(ref.sum()), "methods": {}}

    def run(method, **kw):
        t = time.perf_counter()
        m = segment(im, voxel=True, method=method, model=model if method == "promptable" else None,
                    **kw).numpy()[0] > 0
        return m, time.perf_counter() - t

    for method in methods:
        r: dict = {}
        for key, kw in (("box", {"box": box}), ("box_jitter3", {"box": box_j}), ("click", {"points": [centre]}),
                        ("extreme", {"extreme_points": extremes})):
            m, sec = run(method, **kw)
            r[key] = round(S.dice(m, ref), 4)
            r[f"{key}_s"] = round(sec, 3)
        if method in click_methods and n_clicks:
            sessions = [("clicks", None)]
            if method in JITTER_METHODS:
                sessions.append(("clicks_jitter", np.random.default_rng(seed + 1)))
            for tag, jrng in sessions:
                def seg(points, labels, previous, _m=method):
                    return run(_m, points=points, labels=labels, previous=previous)[0]
                curve = S.click_session(seg, ref, spacing, n_clicks=n_clicks, rng=jrng, stop_at=STOP_AT)
                r[tag] = [round(d, 4) for d in curve]
                r[f"noc85_{tag}"] = S.noc(curve, 0.85, n_clicks)
                r[f"noc90_{tag}"] = S.noc(curve, 0.90, n_clicks)
        out["methods"][method] = r
    return out


def timing_case_256():
    """The timing input both prompt benchmarks use: the real ts_ct_sm resampled onto a 256x256x128
    grid (affine scaled to keep its world extent), its liver as the object, and that object's
    box and first click. Returns ``(image MetaTensor, reference mask, box, centre click)``."""
    import torch
    from monai.data import MetaTensor
    from scipy import ndimage

    import medseg.io
    from medseg.data import sample
    from medseg.prompt import simulate as S

    ct = medseg.io.load(sample("ts_ct_sm"))
    seg = medseg.io.load(sample("ts_ct_sm_seg"), kind="label").numpy()[0]
    zoom = [256 / ct.shape[1], 256 / ct.shape[2], 128 / ct.shape[3]]
    arr = ndimage.zoom(ct.numpy()[0].astype(np.float32), zoom, order=1)
    ref = ndimage.zoom((seg == ORGANS["liver"]).astype(np.uint8), zoom, order=0) > 0
    aff = np.asarray(ct.affine, dtype=np.float64).copy()
    aff[:3, :3] = aff[:3, :3] / np.asarray(zoom)[None, :]
    im = MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(aff))
    return im, ref, S.box_of(ref), S.first_click(ref, [1.0, 1.0, 1.0])


def time_prompts(im, tasks: dict, repeats: int) -> dict:
    """Median seconds of ``segment(im, voxel=True, method=m, **kw)`` for each ``key: (m, kw)``."""
    from medseg.prompt import segment

    res = {}
    for key, (method, kw) in tasks.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            segment(im, voxel=True, method=method, **kw)
            times.append(time.perf_counter() - t)
        res[key] = {"method": method, "median_s": round(float(np.median(times)), 3)}
    return res


def timing_256(repeats: int = 3) -> dict:
    """One prompt on a 256x256x128 CT crop: the real ts_ct_sm resampled onto that grid."""
    from medseg.prompt import segment
    from medseg.prompt import simulate as S

    im, ref, box, centre = timing_case_256()
    prev = segment(im, box=box, voxel=True, method="grabcut").numpy()[0]
    nxt = S.corrective_click(prev > 0, ref, [1.0, 1.0, 1.0])
    res = {"shape": list(im.shape[1:]), "object": "liver (real CT resampled)"}
    tasks = {"box_grabcut": ("grabcut", {"box": box}), "click_region_growing": ("region-growing", {"points": [centre]}),
             "click_random_walker": ("random-walker", {"points": [centre]}),
             "correction_auto": ("auto", {"points": [centre, nxt[0]], "labels": [1, nxt[1]], "previous": prev})}
    res.update(time_prompts(im, tasks, repeats))
    return res


def summarise(rows: list[dict], methods) -> dict:
    out: dict = {}
    for s in sorted({r["set"] for r in rows}):
        sub = [r for r in rows if r["set"] == s]
        out[s] = {"n": len(sub)}
        for m in methods:
            vals = [r["methods"][m] for r in sub if m in r["methods"]]
            if not vals:
                continue
            summ = {k: round(float(np.mean([v[k] for v in vals])), 4)
                    for k in ("box", "box_jitter3", "click", "extreme")}
            for tag in ("clicks", "clicks_jitter"):
                if tag in vals[0]:
                    curve = np.mean([v[tag] for v in vals], axis=0)
                    summ[f"{tag}_mean_dice"] = [round(float(d), 4) for d in curve]
                    summ[f"noc85_{tag}"] = round(float(np.mean([v[f"noc85_{tag}"] for v in vals])), 2)
                    summ[f"noc90_{tag}"] = round(float(np.mean([v[f"noc90_{tag}"] for v in vals])), 2)
            out[s][m] = summ
    return out


def table(summary: dict, methods) -> str:
    lines = ["| set | method | box | box +-3 vx | 1 click | extreme pts | Dice @5 clicks | @20 | NoC@85 | NoC@90 "
             "| NoC@90 jittered |", "|" + "---|" * 11]
    for s, d in summary.items():
        for m in methods:
            if m not in d:
                continue
            v = d[m]
            c = v.get("clicks_mean_dice")
            lines.append(f"| {s} (n={d['n']}) | {m} | {v['box']:.3f} | {v['box_jitter3']:.3f} | {v['click']:.3f} | "
                         f"{v['extreme']:.3f} | {c[4] if c else float('nan'):.3f} | {c[-1] if c else float('nan'):.3f} | "
                         f"{v.get('noc85_clicks', '-')} | {v.get('noc90_clicks', '-')} | "
                         f"{v.get('noc90_clicks_jitter', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nuclei", type=int, default=10, help="nuclei drawn (seeded) from the 125")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 nuclei, 5 clicks (a smoke run, not the figures)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prompt_classical.json"))
    ap.add_argument("--timing-only", action="store_true",
                    help="re-measure only the 256x256x128 timing into the existing results file")
    args = ap.parse_args(argv)
    if args.timing_only:
        import os

        res = json.loads(Path(args.out).read_text())
        timing = timing_256()
        timing["load_average_1min"] = round(os.getloadavg()[0], 2)
        res["timing_256x256x128"] = timing
        from medseg.io.atomic import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(res, indent=1) + "\n")
        print(timing)
        return 0
    if args.quick:
        args.nuclei, args.clicks = 5, 5
    import warnings

    warnings.filterwarnings("ignore", message=".*probability range.*")
    from tqdm import tqdm

    t0 = time.perf_counter()
    cases = load_cases(args.nuclei, args.seed)
    order = {"organs": 0, "nuclei": 1, "lesions": 2}  # fastest first: results are written after each object
    cases.sort(key=lambda c: order[c["set"]])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from medseg.io.atomic import atomic_write_text

    timing = timing_256()
    print("one prompt, 256x256x128 CT crop: " + ", ".join(
        f"{k} {v['median_s']} s" for k, v in timing.items() if isinstance(v, dict)), flush=True)
    rows: list[dict] = []
    result: dict = {}
    for c in tqdm(cases, desc="objects", disable=not sys.stderr.isatty()):
        t1 = time.perf_counter()
        rows.append(run_case(c, args.clicks, METHODS, CLICK_METHODS, args.seed))
        print(f"{c['set']}/{c['name']}: " + ", ".join(f"{m} box {v['box']:.3f} click {v['click']:.3f}"
                                                       for m, v in rows[-1]["methods"].items())
              + f" ({time.perf_counter() - t1:.0f} s)", flush=True)
        summary = summarise(rows, METHODS)
        result = {"command": "python benchmarks/bench_prompt.py" + (" --quick" if args.quick else
                                                                     f" --clicks {args.clicks} --nuclei {args.nuclei}"),
                  "protocol": {"n_clicks": args.clicks, "box_jitter_voxels": 3, "seed": args.seed,
                               "first_click": "object centre (farthest from the boundary, mm)",
                               "corrective": "centre of the largest error component; jittered: uniform among its "
                                             "voxels at least half as deep as the centre",
                               "noc_cap": args.clicks, "stop_at_dice": STOP_AT,
                               "click_methods": list(CLICK_METHODS), "jittered_click_methods": list(JITTER_METHODS)},
                  "complete": len(rows) == len(cases), "objects_done": len(rows), "objects_planned": len(cases),
                  "summary": summary, "timing_256x256x128": timing, "cases": rows,
                  "wall_s": round(time.perf_counter() - t0, 1)}
        atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    summary = result["summary"]
    print(table(summary, METHODS))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
