"""The report's pictures: each case's overlay montage (copied from the case folder, or drawn from
the label map alone) and the prediction-vs-reference montage, written into ``<stem>_files/``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medseg.errors import InputError, MedsegError
from medseg.report.cases import CaseReport


def _safe_name(case: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case)[:120].strip("._") or "case"


def _render_overlay(seg: Path, out_png: Path, label_names: Mapping[int, str]) -> None:
    """Montage of the label map alone (the source image is not kept in a segment output)."""
    import numpy as np

    from medseg.io.overlay import save_overlay_montage
    from medseg.io.read import read_volume  # numpy: a report needs neither torch nor MONAI
    from medseg.io.volume import Volume

    lab = read_volume(seg, kind="label")
    image = Volume(lab.array.astype(np.float32), lab.affine, lab.meta)
    save_overlay_montage(image, lab, out_png, label_names=dict(label_names) or None)


def _attach_image(rep: CaseReport, case_dir: Path | None, files_dir: Path, html_dir: Path, idx: int) -> None:
    from medseg.io.atomic import atomic_write_bytes

    if case_dir is None or rep.status != "done":
        return
    target = files_dir / f"{idx:04d}_{_safe_name(rep.case)}.png"
    src = case_dir / "overlay.png"
    if src.is_file():
        atomic_write_bytes(target, src.read_bytes())
    elif (case_dir / "seg.nii.gz").is_file():
        try:
            _render_overlay(case_dir / "seg.nii.gz", target, rep.labels)
        except MedsegError as exc:
            rep.image_note = f"no overlay: {exc}"
            return
        rep.image_note = "label map only (the source image is not part of the output folder)"
    else:
        return
    rep.image = target.relative_to(html_dir).as_posix()
    if rep.reference_file is not None and rep.ndim == 3 and (case_dir / "seg.nii.gz").is_file():
        compare = files_dir / f"{idx:04d}_{_safe_name(rep.case)}_reference.png"
        try:
            _render_comparison(case_dir / "seg.nii.gz", rep.reference_file, compare, rep.labels)
        except MedsegError as exc:
            rep.compare_note = f"reference not drawn: {exc}"
        else:
            rep.compare_image = compare.relative_to(html_dir).as_posix()
            rep.compare_note = ("prediction filled, reference outlined in white, on slices through either "
                                "(the source image is not part of the output folder)")


def _render_comparison(seg: Path, reference: Path, out_png: Path, label_names: Mapping[int, str]) -> None:
    """The prediction and its reference in one montage (:mod:`medseg.report.compare`); the
    reference is put on the prediction's grid exactly (same grid or another axis order) or not
    drawn (GeometryError: no resampling in a QA picture)."""
    from medseg.evaluation.cases import read_label_map
    from medseg.io.read import read_volume
    from medseg.metrics._arrays import align_to_reference, as_label_array
    from medseg.report.compare import save_comparison_montage

    pred = read_volume(seg, kind="label")
    ref = read_label_map(reference)
    p, r = as_label_array(pred, "prediction"), as_label_array(ref, "reference")
    if p.ndim != 3:
        raise InputError("the comparison montage is drawn for 3D label maps only")
    on_pred, _ = align_to_reference(ref, pred, r, p)  # the reference onto the prediction's grid
    save_comparison_montage(p, on_pred, np.asarray(pred.affine, dtype=np.float64), out_png,
                            label_names=dict(label_names))
