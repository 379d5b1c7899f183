"""`medseg report` on real segment, batch and evaluate outputs (phantoms written as real NIfTI and
DICOM files, segmented by a hand-set threshold model through `medseg segment`).

Independent references: volumes from nibabel (voxel count x |det(affine)|), Dice from MONAI's
`compute_dice`; the page is rendered by headless Chromium, which must load every image and sort
the table with the page's own JS. A DICOM series written with a canary patient name/ID must leave
no trace in any file of the segment output (except the DICOM SEG, which carries the patient
module on purpose) or of the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg import cli
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantoms import save_phantom, spine_ct
from medseg.io.atomic import atomic_write_bytes
from medseg.models import build_network

CANARY_NAME, CANARY_ID = "CANARY^SECRET", "CANARY0042"
CANARY_STRINGS = (b"CANARY", b"SECRET", CANARY_ID.encode())
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _run_dir(root: Path, name: str, *, kernel: int = 1, offset: tuple[int, int, int] = (0, 0, 0)) -> Path:
    """A training run folder with a hand-set bone threshold (> 300 HU); its label is named "liver"
    on purpose, so that the adult-volume check has a known label to judge on a small phantom.
    ``kernel``/``offset`` make the model look ``offset`` voxels away (not flip-equivariant)."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "kernel_size": kernel}
    net = build_network(spec)
    c = kernel // 2
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0, c + offset[0], c + offset[1], c + offset[2]] = 50.0
        net.bias[1] = -50.0 * (300.0 + 200.0) / 1400.0  # ct_spine window -200..1200 HU
    torch.save({"state_dict": net.state_dict(), "epoch": 1}, run / "checkpoints" / "best.pt")
    (run / "model_spec.json").write_text(json.dumps({
        "name": name, "network": spec, "preset": "ct_spine", "labels": {"1": "liver"},
        "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2,
                      "preset_overrides": {"target_spacing": [2.0, 2.0, 2.0]}},
        "task": "semantic"}))
    return run


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from monai.metrics import compute_dice

    return float(compute_dice(torch.from_numpy(a[None, None].astype(np.float64)),
                              torch.from_numpy(b[None, None].astype(np.float64)),
                              include_background=True, ignore_empty=False))


def _nib_ml(path: Path, label: int) -> float:
    img = nib.load(path)
    return float(np.count_nonzero(np.asarray(img.dataobj) == label)) * abs(np.linalg.det(img.affine[:3, :3])) / 1000.0


@pytest.fixture(scope="module")
def segment_output(tmp_path_factory):
    """Three real cases segmented by `medseg segment`: a DICOM series with a canary patient, a
    NIfTI phantom, and an all-air NIfTI (empty segmentation); plus references named by case."""
    root = tmp_path_factory.mktemp("report")
    run = _run_dir(root, "bone-threshold")
    out, ref = root / "seg", root / "ref"
    ref.mkdir()
    # DICOM series with canary identifiers
    ph_d = spine_ct(shape=(32, 32, 24), spacing=(2.0, 2.0, 3.0), orientation="LPS", seed=6)
    files = write_dicom_series(ph_d.image, ph_d.affine, root / "canary_series", modality="CT",
                               patient_name=CANARY_NAME, patient_id=CANARY_ID, order="shuffled")
    assert all(CANARY_ID.encode() in f.read_bytes() for f in files)  # the canary really is in the input
    assert cli.main(["segment", str(root / "canary_series"), "--bundle", str(run), "--output", str(out)]) == 0
    # NIfTI phantom and an all-air image on its grid
    ph_n = spine_ct(shape=(32, 32, 24), spacing=(2.0, 2.0, 3.0), orientation="RAS", seed=3)
    save_phantom(ph_n, root / "nii", "nifti")
    shutil.copy(root / "nii" / "image.nii.gz", root / "bone_ras.nii.gz")
    air = nib.Nifti1Image(np.full(ph_n.image.shape, -1000.0, np.float32), ph_n.affine)
    nib.save(air, root / "air.nii.gz")
    for name in ("bone_ras", "air"):
        assert cli.main(["segment", str(root / f"{name}.nii.gz"), "--bundle", str(run), "--output", str(out)]) == 0
    (dicom_case,) = [p.name for p in out.iterdir() if p.name.startswith("series-")]
    for case, label in ((dicom_case, ph_d.label), ("bone_ras", ph_n.label), ("air", ph_n.label)):
        affine = ph_d.affine if case == dicom_case else ph_n.affine
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), affine), ref / f"{case}.nii.gz")
    return {"root": root, "out": out, "ref": ref, "dicom_case": dicom_case, "run": run}


def _chromium(url: str, tmp: Path, *extra: str) -> str:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _row_cases(dom: str) -> list[str]:
    table = dom.split('id="cases"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr[^>]*data-case="([^"]+)"', table)


def test_report_segment_output_with_reference(segment_output, tmp_path, capsys):
    from medseg.report import collect

    out, ref, dicom_case = segment_output["out"], segment_output["ref"], segment_output["dicom_case"]
    html_path = tmp_path / "qa" / "report.html"
    assert cli.main(["report", str(out), "-o", str(html_path), "--reference", str(ref)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(html_path)
    # the all-air case has Dice 0 (empty prediction, non-empty reference): the one low-Dice flag
    assert printed[1] == "low Dice: 1 case/label pair(s) in 1 case(s) below 0.70 flagged (of 3 case(s))"
    page = html_path.read_text(encoding="utf-8")

    kind, cases = collect(out, reference=ref)
    assert kind == "segment"
    by = {c.case: c for c in cases}
    assert set(by) == {dicom_case, "bone_ras", "air"}
    for name, c in by.items():
        seg_path = out / name / "seg.nii.gz"
        seg = np.asarray(nib.load(seg_path).dataobj)
        truth = np.asarray(nib.load(ref / f"{name}.nii.gz").dataobj) > 0
        # size per label against nibabel, Dice against MONAI
        if name == "air":
            assert c.sizes == {} and "empty segmentation" in c.flags
        else:
            assert c.sizes[1] == pytest.approx(_nib_ml(seg_path, 1), rel=1e-9)
            assert f"liver: {c.sizes[1]:.1f} mL" in page
            # a small phantom named "liver" is far below the adult range: flagged
            assert any(f.startswith("implausible volume: liver") for f in c.flags)
        (row,) = c.metrics
        assert row["dice"] == pytest.approx(_dice(seg == 1, truth), abs=1e-6)  # MONAI works in float32
        assert row["volume_ref_ml"] == pytest.approx(_nib_ml(ref / f"{name}.nii.gz", 1), rel=1e-9)
        assert f'<td class="num">{row["dice"]:.3f}</td>' in page
    assert by[dicom_case].worst_dice() > 0.9 and by["bone_ras"].worst_dice() > 0.9
    # worst first: the empty case (Dice 0) leads, then the lower Dice
    rest = sorted((dicom_case, "bone_ras"), key=lambda n: by[n].worst_dice())
    assert _row_cases(page) == ["air", *rest]
    assert "ADULT ranges" in page

    # offline: no remote resource of any kind, images are relative files that exist
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(imgs) == 6 and all((html_path.parent / s).is_file() for s in imgs)  # overlay + reference
    assert sum(s.endswith("_reference.png") for s in imgs) == 3
    # the DICOM case's montage is the segment's own overlay.png, copied byte for byte
    dicom_img = [s for s in imgs if dicom_case in s and not s.endswith("_reference.png")][0]
    assert (html_path.parent / dicom_img).read_bytes() == (out / dicom_case / "overlay.png").read_bytes()

    # no patient identifier in any output file (the DICOM SEG carries the patient module by design)
    checked = 0
    for f in [*out.rglob("*"), *html_path.parent.rglob("*")]:
        if f.is_file() and f.name != "seg.dcm":
            data = f.read_bytes()
            if f.suffix == ".gz":
                import gzip

                data = gzip.decompress(data)
            assert not any(s in data for s in CANARY_STRINGS), f"patient identifier in {f.name}"
            checked += 1
    assert checked >= 10
    assert all(s.decode() not in dicom_case for s in CANARY_STRINGS)


@pytest.mark.chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium(segment_output, tmp_path):
    out, ref = segment_output["out"], segment_output["ref"]
    html_path = tmp_path / "report.html"
    assert cli.main(["report", str(out), "-o", str(html_path), "--reference", str(ref)]) == 0
    url = html_path.as_uri()
    dom = _chromium(url, tmp_path, "--dump-dom")
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's load handler did not run"
    assert m.group(1) == m.group(2) == "6", f"images loaded {m.group(1)}/{m.group(2)}"  # overlays + references
    default_order = _row_cases(dom)
    assert len(default_order) == 3

    # sort by case name, descending, through the page's own sortTable (hash handled on load)
    dom = _chromium(url + "#sort=1:desc", tmp_path, "--dump-dom")
    assert _row_cases(dom) == sorted(default_order, reverse=True)
    assert 'data-sorted-by="1:desc"' in dom
    # numeric sort on "Worst Dice" ascending keeps the worst first, as the default order does
    dom = _chromium(url + "#sort=7:asc", tmp_path, "--dump-dom")
    assert _row_cases(dom) == default_order
    dom = _chromium(url + "#sort=7:desc", tmp_path, "--dump-dom")
    assert _row_cases(dom)[-1] == "air"

    shot = tmp_path / "report.png"
    _chromium(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        px = np.asarray(im.convert("L"))
    assert px.std() > 10  # a rendered page, not a blank canvas


def test_report_batch_output_lists_failures(segment_output, tmp_path):
    from medseg.batch.manifest import CaseRecord, Manifest
    from medseg.errors import MedsegError
    from medseg.inference.pipeline import segment_file

    run = segment_output["run"]
    batch = tmp_path / "batch"
    src = segment_output["root"] / "bone_ras.nii.gz"
    case_dir = segment_file(src, run, batch, formats="nifti", progress=False).path  # no overlay.png
    assert not (case_dir / "overlay.png").exists()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a NIfTI file" * 20)
    with pytest.raises(MedsegError) as info:
        segment_file(broken, run, batch, progress=False)
    manifest = Manifest(batch / "manifest.jsonl")
    manifest.append(CaseRecord("k-good", case_dir.name, "done", outputs={"seg.nii.gz": "seg.nii.gz"}))
    manifest.append(CaseRecord("k-bad", "broken", "failed", reason=str(info.value)))
    html_path = batch / "report.html"
    assert cli.main(["report", str(batch)]) == 0
    page = html_path.read_text(encoding="utf-8")
    assert 'data-kind="batch"' in page
    assert _row_cases(page) == ["broken", case_dir.name]  # failed case on top
    import html

    assert html.escape(f"failed: {info.value}") in page
    # the good case's volume is the nibabel one, no metrics without a reference
    assert f"liver: {_nib_ml(case_dir / 'seg.nii.gz', 1):.1f} mL" in page
    assert "Worst Dice" not in page
    # the report rendered the missing overlay itself, from the label map, into report_files/
    (img,) = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert img.startswith("report_files/")
    from PIL import Image

    with Image.open(batch / img) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 30).any()  # coloured label pixels are drawn
    assert "label map only" in page


def test_report_evaluate_output_worst_first(segment_output, tmp_path):
    from scipy import ndimage

    from medseg.evaluation import evaluate

    ref = segment_output["ref"]
    pred, refs = tmp_path / "pred", tmp_path / "refs"
    pred.mkdir()
    refs.mkdir()
    truth_img = nib.load(ref / "bone_ras.nii.gz")
    truth = np.asarray(truth_img.dataobj) > 0
    variants = {"exact": truth, "eroded": ndimage.binary_erosion(truth, iterations=1),
                "shifted": np.roll(truth, 3, axis=0)}
    for name, mask in variants.items():
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), truth_img.affine), pred / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(truth.astype(np.uint8), truth_img.affine), refs / f"{name}.nii.gz")
    ev = tmp_path / "eval"
    evaluate(pred, refs, ev, labels={1: "liver"}, n_boot=50, plots=False)
    assert cli.main(["report", str(ev), "-o", str(tmp_path / "r.html"), "--reference", str(refs)]) == 2
    assert cli.main(["report", str(ev), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'data-kind="evaluate"' in page
    dices = {n: _dice(m, truth) for n, m in variants.items()}
    assert _row_cases(page) == sorted(dices, key=dices.get)
    for d in dices.values():
        assert f'<td class="num">{d:.3f}</td>' in page


def test_report_tta_disagreement_flag(segment_output, tmp_path):
    """A model that looks 4 voxels away along each axis is not flip-equivariant: its TTA passes disagree."""
    from medseg.inference.pipeline import segment_file
    from medseg.report import TTA_DISAGREEMENT_THRESHOLD, collect

    runs = {"shifted": _run_dir(tmp_path, "shifted", kernel=9, offset=(4, 4, 4)),
            "plain": segment_output["run"]}
    out = tmp_path / "tta"
    src = segment_output["root"] / "bone_ras.nii.gz"
    measured = {}
    for name, run in runs.items():
        case = segment_file(src, run, out / name, tta=True, formats="nifti", progress=False).path
        measured[name] = json.loads((case / "provenance.json").read_text())["tta_disagreement"]
        _, (rep,) = collect(out / name)
        flagged = any(f.startswith("TTA passes disagree") for f in rep.flags)
        assert flagged == (measured[name] > TTA_DISAGREEMENT_THRESHOLD)
    assert measured["plain"] == 0.0
    assert measured["shifted"] > TTA_DISAGREEMENT_THRESHOLD  # the flag path really ran


def test_report_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg: error:") and err.count("\n") == 1
    atomic_write_bytes(tmp_path / "x.txt", b"x")
    assert cli.main(["report", str(tmp_path / "x.txt")]) == 2
    assert not os.path.exists(tmp_path / "x.txt.html")


# ------------------------------------------------------------------ low Dice from `medseg evaluate`

LABELS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}


@pytest.fixture(scope="module")
def damaged_evaluation(tmp_path_factory):
    """Three abdomen phantoms; predictions: exact, spleen erased (Dice 0), liver eroded once (Dice
    about 0.8). `medseg evaluate` scores them; its metrics.csv is the reference for the flags."""
    import csv

    from scipy import ndimage

    root = tmp_path_factory.mktemp("lowdice")
    pred, ref, seg = root / "pred", root / "ref", root / "seg"
    for d in (pred, ref):
        d.mkdir()
    from medseg.data.phantoms import abdomen_ct

    for seed, case in enumerate(("exact", "spleen_erased", "liver_eroded"), start=1):
        ph = abdomen_ct(shape=(48, 48, 24), spacing=(4.0, 4.0, 6.0), seed=seed)
        damaged = ph.label.copy()
        if case == "spleen_erased":
            damaged[damaged == 2] = 0
        elif case == "liver_eroded":
            damaged[(damaged == 1) & ~ndimage.binary_erosion(ph.label == 1)] = 0
        nib.save(nib.Nifti1Image(ph.label.astype(np.uint8), ph.affine), ref / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(damaged.astype(np.uint8), ph.affine), pred / f"{case}.nii.gz")
        (seg / case).mkdir(parents=True)  # the same predictions as a segment output folder
        shutil.copy(pred / f"{case}.nii.gz", seg / case / "seg.nii.gz")
    ev = seg / "eval"  # evaluate output inside the segment folder: the report finds it
    labels = [f"{k}={v}" for k, v in LABELS.items()]
    assert cli.main(["evaluate", str(pred), str(ref), "-o", str(ev), "--no-plots", "--labels", *labels]) == 0
    with open(ev / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    # evaluate's Dice agrees with MONAI's on the damaged labels
    for case, label in (("spleen_erased", 2), ("liver_eroded", 1)):
        p = np.asarray(nib.load(pred / f"{case}.nii.gz").dataobj) == label
        r = np.asarray(nib.load(ref / f"{case}.nii.gz").dataobj) == label
        (row,) = [x for x in rows if x["case"] == case and int(x["label"]) == label]
        assert float(row["dice"]) == pytest.approx(_dice(p, r), abs=1e-6)
    return {"root": root, "seg": seg, "ev": ev, "ref": ref, "rows": rows}


def _below(rows: list[dict], threshold: float) -> set[tuple[str, int]]:
    """(case, label) pairs of metrics.csv under ``threshold`` (NaN with one empty mask counts as 0)."""
    out = set()
    for r in rows:
        d = float(r["dice"])
        if np.isnan(d):
            one_empty = (float(r["volume_pred_ml"]) == 0) != (float(r["volume_ref_ml"]) == 0)
            d = 0.0 if one_empty else 1.0
        if d < threshold:
            out.add((r["case"], int(r["label"])))
    return out


def _warned(page: str) -> set[tuple[str, int]]:
    box = page.split('id="low-dice"', 1)[1].split("</section>", 1)[0]
    return {(c, int(lab)) for c, lab in re.findall(r'<tr class="lowdice" data-case="([^"]+)" data-label="(\d+)"', box)}


def _highlighted(page: str) -> set[str]:
    table = page.split('id="cases"', 1)[1].split("</table>", 1)[0]
    return set(re.findall(r'<tr class="lowdice" data-case="([^"]+)"', table))


def test_report_flags_low_dice_from_an_evaluate_folder(damaged_evaluation, tmp_path, capsys):
    ev, rows = damaged_evaluation["ev"], damaged_evaluation["rows"]
    assert _below(rows, 0.7) == {("spleen_erased", 2)}  # the one damage under the default threshold
    eroded = float(next(r["dice"] for r in rows if r["case"] == "liver_eroded" and r["label"] == "1"))
    assert 0.7 < eroded < 0.95  # ... and one that only a stricter threshold catches

    html_path = tmp_path / "ev.html"
    assert cli.main(["report", str(ev), "-o", str(html_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(html_path), "low Dice: 1 case/label pair(s) in 1 case(s) below 0.70 flagged (of 3 case(s))"]
    page = html_path.read_text(encoding="utf-8")
    assert _warned(page) == {("spleen_erased", 2)} and _highlighted(page) == {"spleen_erased"}
    # the warning sits at the top: before the notes and the case table
    assert page.index('id="low-dice"') < page.index('class="note">Source:') < page.index('id="cases"')
    assert "low Dice: spleen 0.000 (below 0.70)" in page

    assert cli.main(["report", str(ev), "-o", str(html_path), "--min-dice", "0.95"]) == 0
    expected = _below(rows, 0.95)
    assert ("liver_eroded", 1) in expected
    assert capsys.readouterr().out.splitlines()[1].startswith(f"low Dice: {len(expected)} case/label pair(s) in 2 ")
    page = html_path.read_text(encoding="utf-8")
    assert _warned(page) == expected
    assert f"low Dice: liver {eroded:.3f} (below 0.95)" in page


def test_report_finds_or_takes_the_evaluation_of_a_segment_folder(damaged_evaluation, tmp_path, capsys):
    from medseg.report import write_report

    seg, ev, ref = damaged_evaluation["seg"], damaged_evaluation["ev"], damaged_evaluation["ref"]
    found = write_report(seg, tmp_path / "found.html", progress=False)
    assert found.kind == "segment" and found.evaluation == ev
    assert {(x.case, x.label, x.name) for x in found.low_dice} == {("spleen_erased", 2, "spleen")}
    page = (tmp_path / "found.html").read_text(encoding="utf-8")
    assert _warned(page) == {("spleen_erased", 2)} and _highlighted(page) == {"spleen_erased"}
    assert "evaluate output found in eval/" in page

    # given explicitly (from elsewhere), and the same cases scored in the report itself with --reference
    moved = tmp_path / "evaluation_elsewhere"
    shutil.copytree(ev, moved)
    given = write_report(seg, tmp_path / "given.html", evaluation=moved, progress=False)
    computed = write_report(seg, tmp_path / "computed.html", reference=ref, progress=False)
    assert given.low_dice == found.low_dice
    assert {(x.case, x.label) for x in computed.low_dice} == {("spleen_erased", 2)}

    assert cli.main(["report", str(seg), "--evaluation", str(moved), "--reference", str(ref)]) == 2
    assert cli.main(["report", str(seg), "--min-dice", "1.5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("medseg: error:") for e in err)
