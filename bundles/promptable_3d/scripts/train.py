"""Train the class-agnostic promptable 3D network (bundle ``promptable_3d``) on CPU, and ship it.

Design, held-out classes and shipping rule: docs/PLAN_prompt.md. Encoding and crop geometry are
those of :mod:`medseg.prompt.network` (shared with inference).

Training material (label maps only, every structure a target in turn, class-agnostic):
* TotalSegmentator's CT label map of ``ts_ct_sm`` (+ its tissue types) and its MR map of
  ``ts_mr_sm`` (:mod:`medseg.data.totalseg`), images drawn by :func:`medseg.data.synth.synthesize`
  on each crop (domain-randomised, a new seed per sample);
* TotalSegmentator's vertebra map of ``ts_ct`` (S1-T11), same synthesis;
* medseg phantoms: lung CT (each nodule a target), brain MR (the brain), spine CT (each vertebra),
  their own images with random intensity scaling and noise.
HELD OUT as targets everywhere: liver, spleen, kidneys, kidney cysts (``HELD_OUT``). They stay in
the TotalSegmentator maps as context (their own random contrast, never a target). With
``--paint-held-out`` they are painted as the unlabelled tissue around them instead (CT:
soft_tissue; MR: the dark unlabelled class): tried first, it taught the network that large
homogeneous regions are background (real organs box Dice 0.12-0.17 after 29 minutes). The abdomen
phantoms (liver / spleen / kidneys only) are not used. No real image is read; the pyradiomics
lesions and TotalSegmentator's reserved ``example_ct_dicom`` / ``example_seg_dicom`` never.

Simulated interaction: box (jittered +-3 native voxels), extreme points, or clicks alone (first at
the object's centre, jittered half the time); then, for half the samples, 1-3 rounds of a
corrective click at the centre of the largest error region with the previous mask = the
network's own output (after warm-up) or a perturbed reference.

Usage: ``nice -n -5 python bundles/promptable_3d/scripts/train.py --minutes 60 --threads 2
[--work DIR] [--ship-only]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from medseg.prompt import network as N  # noqa: E402

HELD_OUT = re.compile(r"^(liver|spleen|kidney_left|kidney_right|kidney_cyst_left|kidney_cyst_right)$")
NOT_TARGETS = re.compile(r"^(outside|soft_tissue|subcutaneous_fat|torso_fat|skeletal_muscle|fat_like_bright|"
                         r"muscle_like_dark)$")


# ------------------------------------------------------------------ sources


class Source:
    """A 3D structure map with names, spacing, and its target structures (value, name)."""

    def __init__(self, name, tissue, names, spacing, *, image=None, ct=True, synth=True, targets=None):
        from scipy import ndimage

        self.name, self.tissue, self.names = name, tissue, names
        self.spacing = np.asarray(spacing, float)
        self.image, self.ct, self.synth = image, ct, synth
        self.targets = []  # (mask of the largest component, bbox lo, hi)
        vals = targets if targets is not None else [v for v, n in names.items()
                                                    if not HELD_OUT.match(n) and not NOT_TARGETS.match(n)]
        for v in vals:
            m = tissue == v
            if m.sum() < 20:
                continue
            cc, n = ndimage.label(m)
            if n > 1:
                m = cc == (int(np.argmax(np.bincount(cc.ravel())[1:])) + 1)
            if m.sum() < 20:
                continue
            idx = np.argwhere(m)
            self.targets.append((names.get(v, str(v)), idx.min(0), idx.max(0), m))


def _paint_held_out(tissue, names, fill_value):
    for v, n in list(names.items()):
        if HELD_OUT.match(n):
            tissue[tissue == v] = fill_value
            del names[v]
    return tissue, names


def build_sources(n_phantoms: int, paint: bool = False) -> list[tuple[Source, float]]:
    import nibabel as nib

    from medseg.data import phantoms, sample, totalseg

    out = []
    t, names, aff = totalseg.ct_sm_tissue()
    if paint:
        t, names = _paint_held_out(t, names, totalseg.SOFT_TISSUE)
    out.append((Source("ts_ct_sm", t, names, np.linalg.norm(aff[:3, :3], axis=0)), 0.35))
    t, names, aff = totalseg.mr_sm_tissue()
    if paint:
        t, names = _paint_held_out(t, names, totalseg.TISSUE_B)
    out.append((Source("ts_mr_sm", t, names, np.linalg.norm(aff[:3, :3], axis=0), ct=False), 0.2))
    v = nib.load(str(sample("ts_ct_vertebrae")))
    lab = np.asarray(v.dataobj).astype(np.int32)
    names = {int(k): totalseg.TOTAL_V2[int(k)] for k in np.unique(lab) if k}
    body = lab.copy()
    body[lab == 0] = totalseg.SOFT_TISSUE
    names[totalseg.SOFT_TISSUE] = "soft_tissue"
    out.append((Source("ts_ct_vertebrae", body, names, np.linalg.norm(v.affine[:3, :3], axis=0)), 0.1))
    for gen, weight, ct in (("lung_ct", 0.15, True), ("brain_mr", 0.08, False), ("spine_ct", 0.12, True)):
        f = getattr(phantoms, gen)
        per = weight / n_phantoms
        for seed in range(1, n_phantoms + 1):
            ph = f(seed=seed)
            lab = ph.label.astype(np.int32)
            if gen == "lung_ct":  # each nodule its own target
                from scipy import ndimage

                lab, n = ndimage.label(lab > 0)
                names = {i: f"nodule_{i}" for i in range(1, n + 1)}
            else:
                names = dict(ph.labels)
            out.append((Source(f"{gen}_{seed}", lab, names, ph.spacing, image=ph.image.astype(np.float32), ct=ct,
                               synth=False, targets=list(names)), per))
    return [(s, w) for s, w in out if s.targets]


def _slices(src: Source, step: int, targets) -> list[Source]:
    """2D sources: every ``step``-th slice along each axis of a 3D source that shows a target."""
    out = []
    for axis in range(3):
        for k in range(step // 2, src.tissue.shape[axis], step):
            tis = np.take(src.tissue, k, axis)
            img = None if src.image is None else np.take(src.image, k, axis)
            sl = Source(f"{src.name}_a{axis}_{k}", tis, src.names, np.delete(src.spacing, axis), image=img,
                        ct=src.ct, synth=src.synth, targets=targets)
            if sl.targets:
                out.append(sl)
    return out


def source_groups(names) -> list[str]:
    """The groups behind source names: ``lung_ct_3`` -> ``lung_ct``, ``ts_ct_sm_a2_15`` -> ``ts_ct_sm``."""
    return sorted({re.sub(r"_\d+$", "", re.sub(r"_a\d(_\d+)?$", "", n)) for n in names})


def build_sources_2d(n_phantoms: int) -> list[tuple[Source, float]]:
    """The 2D material: slices of the 3D sources (same held-out rule) and the 2D phantoms
    (chest X-ray lungs, each fluorescence nucleus a target), seeds 1..``n_phantoms``. Group
    weights below; within a group the slices share the weight equally."""
    from scipy import ndimage

    from medseg.data import phantoms

    groups: dict[str, tuple[float, list[Source]]] = {}
    for src, _ in build_sources(n_phantoms):
        group = src.name.rsplit("_", 1)[0] if src.name[-1].isdigit() else src.name
        targets = None if src.synth else list(src.names)
        w = {"ts_ct_sm": 0.25, "ts_mr_sm": 0.12, "ts_ct_vertebrae": 0.08, "lung_ct": 0.08, "brain_mr": 0.04,
             "spine_ct": 0.06}[group]
        groups.setdefault(group, (w, []))[1].extend(_slices(src, 3 if src.synth else 6, targets))
    xr = []
    for seed in range(1, n_phantoms + 1):
        ph = phantoms.chest_xray(seed=seed)
        xr.append(Source(f"chest_xray_{seed}", ph.label.astype(np.int32), dict(ph.labels), ph.spacing,
                         image=ph.image.astype(np.float32), ct=False, synth=False, targets=list(ph.labels)))
        ph = phantoms.nuclei_2d(seed=seed)
        lab, n = ndimage.label(ph.label > 0)
        groups.setdefault("nuclei_2d", (0.2, []))[1].append(
            Source(f"nuclei_2d_{seed}", lab.astype(np.int32), {i: f"nucleus_{i}" for i in range(1, n + 1)},
                   ph.spacing, image=ph.image.astype(np.float32), ct=False, synth=False,
                   targets=list(range(1, n + 1))))
    groups["chest_xray"] = (0.17, xr)
    out = []
    for w, srcs in groups.values():
        out.extend((s, w / len(srcs)) for s in srcs)
    return out


REAL_CT = {  # (image sample, file or None for the sample itself, mask sample, structures)
    "ts_ct2_vessels": ("ts_ct2_masks", "ct_cropped.nii.gz", "ts_ct2_masks",
                       ("aorta", "brachiocephalic_trunk", "celiac_trunk", "common_carotid_artery_left",
                        "subclavian_artery_left", "superior_mesenteric_artery", "iliac_artery_left",
                        "iliac_artery_right", "renal_arteries", "vertebrae_T12")),
    "ts_ct2_heart": ("ts_ct2", None, "ts_ct2_pulmonary", ("heart",)),
    "ts_ct2_pulmonary": ("ts_ct2_pulmonary", "ct_cropped.nii.gz", "ts_ct2_pulmonary", ("pulmonary_artery",)),
}


def real_ct_sources(weight: float) -> list[tuple[Source, float]]:
    """REAL CT images with real targets of a patient no benchmark reads (TotalSegmentator's
    second patient, ``ts_ct2``): the aorta, its branches and vertebra T12 on its cropped CT, the
    heart on the whole CT, the pulmonary artery on the cropped chest CT (TotalSegmentator's
    masks, each on the grid of its image). Their own images (intensity noise added), ``weight``
    shared between them."""
    import nibabel as nib

    from medseg.data import sample

    out = []
    for name, (img_sample, img_file, mask_sample, structures) in REAL_CT.items():
        path = sample(img_sample) if img_file is None else sample(img_sample) / img_file
        ct = nib.load(str(path))
        lab = np.zeros(ct.shape, np.int32)
        names = {}
        for i, structure in enumerate(structures, start=1):
            m = nib.load(str(sample(mask_sample) / f"{structure}.nii.gz"))
            if m.shape != ct.shape or not np.allclose(m.affine, ct.affine, atol=1e-3):
                raise SystemExit(f"{structure} is not on the grid of {path.name}")
            lab[(np.asarray(m.dataobj) > 0) & (lab == 0)] = i
            names[i] = structure
        out.append((Source(name, lab, names, np.linalg.norm(ct.affine[:3, :3], axis=0),
                           image=np.asarray(ct.dataobj, dtype=np.float32), ct=True, synth=False,
                           targets=list(names)), weight / len(REAL_CT)))
    return [(s, w) for s, w in out if s.targets]


# ------------------------------------------------------------------ one training sample

SYNTH = None  # SynthConfig without deformation (the target mask is not deformed), set in main
JITTER = (3, 0.15)  # box corners move by up to this many voxels, or this fraction of the extent (--box-jitter)


def _synth_config():
    from medseg.data.synth import SynthConfig

    return SynthConfig(deform_probability=0.0)


def _perturb(ref: np.ndarray, rng) -> np.ndarray:
    """A plausible wrong previous mask: dilated / eroded / shifted reference, a blob added or cut."""
    from scipy import ndimage

    m = ref.copy()
    k = rng.integers(0, 4)
    it = int(rng.integers(1, 4))
    if k == 0:
        m = ndimage.binary_dilation(m, iterations=it)
    elif k == 1:
        m = ndimage.binary_erosion(m, iterations=it)
    elif k == 2:
        m = np.roll(m, tuple(int(v) for v in rng.integers(-3, 4, m.ndim)), axis=tuple(range(m.ndim)))
    grid = np.indices(m.shape).reshape(m.ndim, -1).T
    near = np.argwhere(ndimage.binary_dilation(ref, iterations=4))
    for _ in range(int(rng.integers(0, 3))):
        if not len(near):
            break
        c = near[rng.integers(len(near))]
        r = rng.uniform(2, 8)
        ball = ((grid - c) ** 2).sum(1).reshape(m.shape) <= r * r
        m = (m | ball) if rng.random() < 0.5 else (m & ~ball)
    return m


def make_sample(src: Source, rng, net=None):
    """(x (C, *crop) float32, y (*crop) float32) for one target of ``src`` (2D or 3D)."""
    from medseg.data.synth import synthesize
    from medseg.prompt import simulate as S

    name, lo, hi, mask = src.targets[rng.integers(len(src.targets))]
    sp = src.spacing
    nd, crop = sp.size, N.crop_for(sp.size)
    mode = rng.choice(["box", "clicks", "extreme"], p=[0.45, 0.35, 0.2])
    pos, box = [], None
    if mode == "box":
        amp = JITTER[0] if rng.random() < 0.3 else np.clip(np.rint(JITTER[1] * (hi - lo + 1)), 1, JITTER[0]).astype(int)
        j = np.rint(rng.uniform(-1, 1, size=(2, nd)) * amp).astype(int)
        blo = np.clip(lo + j[0], 0, np.asarray(mask.shape) - 1)
        bhi = np.clip(np.maximum(hi + j[1], blo), 0, np.asarray(mask.shape) - 1)
        box = (blo, bhi)
        if rng.random() < 0.3:
            pos.append(S.first_click(mask[tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))], sp) + lo)
    elif mode == "extreme":
        sub = mask[tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))]
        ext = np.asarray(S.extreme_points(sub, 1, rng)) + lo
        pos.extend(ext)
        box = (ext.min(0), ext.max(0))
    else:
        sub = mask[tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))]
        pos.append(np.asarray(S.first_click(sub, sp, rng if rng.random() < 0.5 else None)) + lo)
    if box is not None:
        lo_mm, hi_mm = (np.asarray(box[0]) - 0.5) * sp, (np.asarray(box[1]) + 0.5) * sp
        centre, s = N.crop_of_box(lo_mm, hi_mm)
    else:
        centre = np.asarray(pos[0], float) * sp
        side = N.CLICK_FOV_MM * N.GROW ** rng.uniform(0, N.MAX_GROW)
        s = float(np.clip(side / crop, N.MIN_SPACING, N.MAX_SPACING))
    centre = centre + rng.uniform(-0.05, 0.05, nd) * s * crop * (box is not None)
    tis = N.sample_crop(src.tissue.astype(np.float32), sp, centre, s, order=0).astype(np.int32)
    y = N.sample_crop(mask.astype(np.float32), sp, centre, s, order=0, cval=0.0) > 0.5
    if src.synth:
        names = {int(v): src.names.get(int(v), "soft_tissue") for v in np.unique(tis)}
        img, _ = synthesize(tis, names, seed=int(rng.integers(2**31)), config=SYNTH)
        ct = src.ct if rng.random() < 0.75 else not src.ct
        if not ct:  # as an MR scanner would store it: positive, arbitrary scale
            img = (img - img.min()) * rng.uniform(0.2, 5.0)
    else:
        img = N.sample_crop(src.image, sp, centre, s, order=1)
        ct = src.ct
        if ct:
            img = img + rng.normal(0, rng.uniform(0, 20), img.shape).astype(np.float32)
        else:
            img = img * rng.uniform(0.3, 3.0) + rng.normal(0, rng.uniform(0, 0.03) * img.std(), img.shape)
    imch = N.image_channels(img.astype(np.float32), ct)
    c_pos = N.to_crop_index(pos, sp, centre, s) if pos else None
    b_lo = b_hi = None
    if box is not None:
        b_lo = N.to_crop_index([np.asarray(box[0]) - 0.5], sp, centre, s)[0]
        b_hi = N.to_crop_index([np.asarray(box[1]) + 0.5], sp, centre, s)[0]
    return _interact(imch, y, c_pos, b_lo, b_hi, rng, net)


BLOB_NAMES = ("blob", "blob_muscle", "blob_fat", "blob_artery", "blob_bone", "blob_gallbladder", "blob_spleen")


def make_blob_sample(src: Source, rng, net=None):
    """A random smooth object (an ellipsoid bent by smooth noise) painted into a crop of ``src``'s
    map with its own random contrast (often low: soft-tissue ranges), as the target: large,
    homogeneous, weak-edged objects that the held-out organs are and the other targets rarely are."""
    from scipy import ndimage

    from medseg.data.synth import synthesize
    from medseg.prompt import simulate as S

    _, lo, hi, _ = src.targets[rng.integers(len(src.targets))]
    sp = src.spacing
    nd, crop = sp.size, N.crop_for(sp.size)
    centre = (lo + hi) / 2.0 * sp
    s = float(np.clip(N.GROW ** rng.uniform(-2, 3) * N.CLICK_FOV_MM / crop, N.MIN_SPACING, N.MAX_SPACING))
    tis = N.sample_crop(src.tissue.astype(np.float32), sp, centre, s, order=0).astype(np.int32)
    mode = rng.choice(["box", "clicks", "extreme"], p=[0.45, 0.35, 0.2])
    big = crop / (2 * (1 + 2 * N.MARGIN_FRACTION))
    semi = rng.uniform(0.55, 1.0, nd) * big if mode != "clicks" else rng.uniform(3, big, nd)
    c = (crop - 1) / 2.0 + rng.uniform(-0.15, 0.15, nd) * crop * (mode == "clicks")
    g = np.indices((crop,) * nd, dtype=np.float32)
    f = sum(((g[a] - c[a]) / semi[a]) ** 2 for a in range(nd))
    noise = ndimage.gaussian_filter(rng.standard_normal((crop,) * nd).astype(np.float32),
                                    rng.uniform(3, 6) * crop / N.CROP)
    f = f + rng.uniform(0.2, 0.8) * noise / max(float(noise.std()), 1e-6)
    y = f < 1.0
    cc, n = ndimage.label(y)
    if n > 1:
        y = cc == (int(np.argmax(np.bincount(cc.ravel())[1:])) + 1)
    if y.sum() < 30:
        return make_sample(src, rng, net)
    names = {int(v): src.names.get(int(v), "soft_tissue") for v in np.unique(tis)}
    tis[y] = 9999
    names[9999] = BLOB_NAMES[rng.integers(len(BLOB_NAMES))]
    img, _ = synthesize(tis, names, seed=int(rng.integers(2**31)), config=SYNTH)
    ct = src.ct if rng.random() < 0.75 else not src.ct
    if not ct:
        img = (img - img.min()) * rng.uniform(0.2, 5.0)
    imch = N.image_channels(img.astype(np.float32), ct)
    idx = np.argwhere(y)
    blo, bhi = idx.min(0).astype(float), idx.max(0).astype(float)
    c_pos, b_lo, b_hi = None, None, None
    if mode == "box":
        b_lo = blo - 0.5 + rng.integers(-2, 3, nd)
        b_hi = bhi + 0.5 + rng.integers(-2, 3, nd)
        if rng.random() < 0.3:
            c_pos = np.asarray([S.first_click(y, (1.0,) * nd)], float)
    elif mode == "extreme":
        ext = np.asarray(S.extreme_points(y, 1, rng), float)
        c_pos, b_lo, b_hi = ext, ext.min(0) - 0.5, ext.max(0) + 0.5
    else:
        c_pos = np.asarray([S.first_click(y, (1.0,) * nd, rng if rng.random() < 0.5 else None)], float)
    return _interact(imch, y, c_pos, b_lo, b_hi, rng, net)


def _interact(imch, y, c_pos, b_lo, b_hi, rng, net):
    """Simulated corrections (for half the samples), then random axis permutation and flips."""
    from medseg.prompt import simulate as S

    neg = []
    prev = None
    x = N.encode(imch, c_pos, None, b_lo, b_hi, None)
    if y.any() and rng.random() < 0.5:
        cpos = [] if c_pos is None else [tuple(v) for v in c_pos]
        rounds = int(rng.integers(1, 4))
        for _ in range(rounds):
            if net is not None and rng.random() < 0.6:
                prev = N._forward(net, x) > 0
            elif prev is None:
                prev = _perturb(y, rng)
            nxt = S.corrective_click(prev, y, (1.0,) * y.ndim, rng if rng.random() < 0.5 else None)
            if nxt is None:
                break
            (cpos if nxt[1] else neg).append(tuple(float(v) for v in nxt[0]))
            x = N.encode(imch, np.asarray(cpos) if cpos else None, np.asarray(neg) if neg else None, b_lo, b_hi,
                         prev)
    # orientation-agnostic: random axis permutation and flips of the cube
    perm = rng.permutation(y.ndim)
    x = np.transpose(x, (0, *(perm + 1)))
    y = np.transpose(y, perm)
    for ax in range(y.ndim):
        if rng.random() < 0.5:
            x, y = np.flip(x, ax + 1), np.flip(y, ax)
    return np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=np.float32)


# ------------------------------------------------------------------ training


def train(args) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sources = (build_sources(args.phantoms, args.paint_held_out) if args.dims == 3
               else build_sources_2d(args.phantoms))
    if args.real_ct:
        sources += real_ct_sources(args.real_ct)
    w = np.asarray([wt for _, wt in sources])
    w = w / w.sum()
    n_targets = sum(len(s.targets) for s, _ in sources)
    print(f"{len(sources)} sources, {n_targets} targets, built in {time.time() - t0:.0f} s", flush=True)
    net = N.build_net(args.dims)
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    step, log = 0, []
    t_start = time.time()
    ema = None
    while time.time() - t_start < budget:
        frac = (time.time() - t_start) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0))))
        use_net = net if step >= args.warmup else None
        if use_net is not None:
            net.eval()
        xs, ys = [], []
        for _ in range(args.batch):
            src = sources[rng.choice(len(sources), p=w)][0]
            if src.synth and rng.random() < args.blobs:
                x, y = make_blob_sample(src, rng, use_net)
            else:
                x, y = make_sample(src, rng, use_net)
            xs.append(x)
            ys.append(y)
        net.train()
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))[:, None]
        logits = net(x)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        p = torch.sigmoid(logits)
        axes = tuple(range(1, y.ndim))
        inter = (p * y).sum(axes)
        dice = 1 - (2 * inter + 1) / (p.sum(axes) + y.sum(axes) + 1)
        loss = bce + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        ema = float(loss) if ema is None else 0.98 * ema + 0.02 * float(loss)
        if step % 25 == 0:
            el = time.time() - t_start
            print(f"step {step} loss {ema:.4f} lr {opt.param_groups[0]['lr']:.2e} {el / 60:.1f} min "
                  f"({el / step:.2f} s/step)", flush=True)
            log.append({"step": step, "loss_ema": round(ema, 5), "minutes": round(el / 60, 2)})
        if step % 200 == 0:
            torch.save(net.state_dict(), work / "last.pt")
    torch.save(net.state_dict(), work / "last.pt")
    info = {"steps": step, "batch": args.batch, "spatial_dims": args.dims, "init": args.init,
            "real_ct_weight": args.real_ct, "box_jitter": list(JITTER), "blobs": args.blobs, "minutes": round((time.time() - t_start) / 60, 1),
            "threads": args.threads, "seed": args.seed, "lr": args.lr, "n_sources": len(sources),
            "n_targets": n_targets, "sources": source_groups(s.name for s, _ in sources),
            "log": log}
    (work / "train_info.json").write_text(json.dumps(info, indent=1))
    print(f"done: {step} steps in {info['minutes']} min", flush=True)
    return work / "last.pt"


# ------------------------------------------------------------------ bundle


DESCRIPTION = {
    3: ("class-agnostic promptable (interactive) 3D segmentation: clicks, box, extreme points, previous mask -> "
        "one object",
        "Small 3D U-Net (prompts as input channels), trained on CPU on domain-randomised images drawn from label "
        "maps; liver, spleen and kidneys held out as targets. Research only.",
        "TotalSegmentator label maps (ts_ct_sm, ts_mr_sm, ts_ct vertebrae; images never read except the MR's "
        "body outline), medseg phantoms (lung_ct, brain_mr, spine_ct)"),
    2: ("class-agnostic promptable (interactive) 2D segmentation (X-ray, microscopy, one slice): clicks, box, "
        "extreme points, previous mask -> one object",
        "Small 2D U-Net (prompts as input channels), trained on CPU on slices of domain-randomised images drawn "
        "from label maps and on 2D phantoms; liver, spleen and kidneys held out as targets; no real microscopy "
        "image trained on. Research only.",
        "slices of TotalSegmentator label maps (ts_ct_sm, ts_mr_sm, ts_ct vertebrae) with synthetic intensities, "
        "slices of medseg phantoms (lung_ct, brain_mr, spine_ct), medseg 2D phantoms (chest_xray, nuclei_2d)"),
}


def ship(weights: Path, out: Path, info: dict, version: str, note: str) -> None:
    import shutil

    from medseg.bundle.trust import sha256_file
    from medseg.io.atomic import atomic_write_text

    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out / "models" / "model.pt.tmp")
    (out / "models" / "model.pt.tmp").replace(out / "models" / "model.pt")
    old = {}
    if (out / "configs" / "metadata.json").is_file():
        old = json.loads((out / "configs" / "metadata.json").read_text())
    changelog = {version: note, **{k: v for k, v in old.get("changelog", {}).items() if k != version}}
    dims = int(info.get("spatial_dims", 3))
    task, description, data_source = DESCRIPTION[dims]
    meta = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20240725.json",
        "version": version, "changelog": changelog, "name": N.BUNDLES[dims],
        "task": task, "description": description,
        "authors": "medseg", "copyright": "Copyright (c) medseg",
        "intended_use": "Research and annotation help only: not for diagnostic or treatment decisions.",
        "data_source": data_source,
        "held_out_targets": ["liver", "spleen", "kidney_left", "kidney_right", "kidney_cyst_left",
                             "kidney_cyst_right"],
        "medseg_promptable": {"in_channels": N.IN_CHANNELS, "crop": N.crop_for(dims), "spatial_dims": dims,
                              "network": N.NETWORK,
                              "margin_mm": N.MARGIN_MM, "margin_fraction": N.MARGIN_FRACTION,
                              "click_fov_mm": N.CLICK_FOV_MM, "spacing_mm": [N.MIN_SPACING, N.MAX_SPACING],
                              "click_sigma_voxels": N.CLICK_SIGMA,
                              "default": False,  # set true only when the shipping rule is met
                              "normalisation": "CT (0.5th percentile < -500): clip(HU,-1000,1000)/1000 and "
                                               "clip((HU-40)/200,-1,1); else robust z-score /5 and 1-99 "
                                               "percentile to [-1,1]",
                              "weights": "models/model.pt (state dict; torch.load weights_only=True)"},
        "training": {k: v for k, v in info.items() if k != "log"},
    }
    atomic_write_text(out / "configs" / "metadata.json", json.dumps(meta, indent=1) + "\n")
    sums = [f"{sha256_file(out / 'models' / 'model.pt')}  models/model.pt",
            f"{sha256_file(out / 'configs' / 'metadata.json')}  configs/metadata.json"]
    atomic_write_text(out / "models" / "sha256sums.txt", "\n".join(sums) + "\n")
    print(f"shipped {out} version {version}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=300, help="steps before the network's own output is a previous mask")
    ap.add_argument("--phantoms", type=int, default=4, help="phantoms per generator (seeds 1..N)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paint-held-out", action="store_true",
                    help="paint the held-out organs as the unlabelled tissue (else they stay context, never targets)")
    ap.add_argument("--blobs", type=float, default=0.35,
                    help="share of the synthetic samples whose target is a random smooth blob painted in")
    ap.add_argument("--init", default=None, help="start from these weights (a state dict)")
    ap.add_argument("--real-ct", type=float, default=0.0,
                    help="sampling weight of the real ts_ct2 CTs with their masks (real_ct_sources; 0: not used)")
    ap.add_argument("--box-jitter", type=float, nargs=2, default=(3, 0.15), metavar=("VOXELS", "FRACTION"),
                    help="box corners jittered by up to VOXELS, or FRACTION of the extent")
    ap.add_argument("--dims", type=int, choices=(2, 3), default=3,
                    help="3: promptable_3d; 2: promptable_2d (bundles/promptable_2d/scripts/train.py)")
    ap.add_argument("--work", default=None, help="scratch folder (default /tmp/promptable_<dims>d_run)")
    ap.add_argument("--out", default=None, help="bundle folder (default bundles/promptable_<dims>d)")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--note", default="first build")
    ap.add_argument("--ship-only", action="store_true", help="ship WORK/last.pt without training")
    args = ap.parse_args(argv)
    global SYNTH, JITTER
    SYNTH = _synth_config()
    JITTER = (int(args.box_jitter[0]), float(args.box_jitter[1]))
    args.work = args.work or f"/tmp/promptable_{args.dims}d_run"
    args.out = args.out or str(REPO / "bundles" / N.BUNDLES[args.dims])
    work = Path(args.work)
    weights = work / "last.pt" if args.ship_only else train(args)
    info = json.loads((work / "train_info.json").read_text()) if (work / "train_info.json").is_file() else {}
    info.setdefault("spatial_dims", args.dims)
    ship(weights, Path(args.out), info, args.version, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
