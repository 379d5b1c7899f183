"""Review of a ``medseg batch`` (or ``medseg segment``) output folder in ``medseg view``.

The output folder holds the label maps (``<case>/seg.nii.gz``, ``provenance.json``) and, for a
batch, the manifest; the images are where the job read them (``--images``: the batch's SOURCE
folder or CSV, or the one image of a ``segment`` run). Cases are the ``done`` records of the
manifest (:func:`medseg.batch.runner.latest_done_records`) whose folder holds ``seg.nii.gz``, or,
without a manifest, the case folders found. Each is matched to its image by the manifest key
(``sha256(input identity, weights sha256)``, recomputed from the source), else by the folder name
the job gave it; when the image is opened its hash must equal the one ``provenance.json``
recorded, so a label map is never shown on another patient's image.

The page knows a case by its position and the first 12 hex digits of its key: no folder name,
file name or header string reaches it (folder names can hold a file stem). A decision is one
line appended to ``manifest.jsonl`` of the output folder with :meth:`Manifest.append` (a single
``write`` + ``fsync``: whole or absent after a crash): the case's latest record again, with
``extra["review"] = {"decision": "accepted" | "rejected" | "edited", "at": UTC time}``, and for an
edited case ``outputs["seg_reviewed.nii.gz"]``: the edited label map, written atomically beside
``seg.nii.gz`` on the source grid. Its status stays ``done``, so a resumed batch does not redo it;
the latest record per key (what readers take) carries the decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError

DECISIONS = {"accept": "accepted", "reject": "rejected"}
REVIEWED_NAME = "seg_reviewed.nii.gz"


@dataclass
class ReviewCase:
    key: str  # the manifest key (never a name)
    folder: Path  # the case folder (never sent to the page)
    source: Any = None  # FileInput / DicomSeriesInput / Path of its image (never sent)
    input_sha256: str = ""  # what provenance.json recorded for the image


def _provenance(folder: Path) -> Any:
    """The case's :class:`~medseg.inference.result.Provenance`, None without provenance.json."""
    prov = folder / "provenance.json"
    if not prov.is_file():
        return None
    from medseg.inference.result import Provenance

    return Provenance.read(prov)


def _weights(prov: Any) -> str:
    return str((prov.model.get("weights_sha256") if prov is not None else None) or "unknown")


def _is_case(folder: Path) -> bool:
    return folder.is_dir() and (folder / "seg.nii.gz").is_file()


def is_output_folder(path: str | Path) -> bool:
    """A ``medseg batch`` / ``segment`` output folder (or one case folder of it)."""
    from medseg.batch.runner import journal_paths

    p = Path(path)
    if not p.is_dir():
        return False
    return (any(j.is_file() for j in journal_paths(p)) or _is_case(p)
            or any(_is_case(d) for d in p.iterdir() if d.is_dir()))


class Review:
    """The cases of an output folder, the one open, and the decisions (see the module doc)."""

    def __init__(self, output: str | Path, images: str | Path, *, prompt_method: str | None = None,
                 max_voxels: int | None = None, prompt_model: Any = None) -> None:
        from medseg.batch.manifest import Manifest
        from medseg.batch.runner import latest_done_records

        self.root = Path(output)
        self.prompt_method = prompt_method
        self.prompt_model = prompt_model
        self.max_voxels = max_voxels
        cases: list[ReviewCase] = []
        if _is_case(self.root):
            cases.append(ReviewCase("", self.root))
        elif self.root.is_dir():
            named = {rec.case: rec.key for rec in latest_done_records(self.root).values()}
            cases = [ReviewCase(named.get(d.name, ""), d) for d in sorted(self.root.iterdir()) if _is_case(d)]
        if not cases:
            raise InputError(f"{self.root.name}: no case folder with seg.nii.gz (a `medseg batch` or `medseg segment` output)")
        for c in cases:
            prov = _provenance(c.folder)
            c.input_sha256 = str((prov.input.get("sha256") if prov is not None else None) or "")
            if not c.key:  # no manifest: a key of the same kind, from what provenance recorded
                c.key = hashlib.sha256(f"review:{c.input_sha256}\n{_weights(prov)}".encode()).hexdigest()
        self._match_images(cases, Path(images), {_weights(_provenance(c.folder)) for c in cases})
        self.cases = cases
        self.manifest = Manifest(self.root / "manifest.jsonl")
        self.current = 0

    # ---------------------------------------------------------------- images
    def _match_images(self, cases: list[ReviewCase], images: Path, weights: set[str]) -> None:
        from medseg.batch.sources import FileInput, build_cases

        if images.is_file() and images.suffix.lower() != ".csv":
            if len(cases) != 1:
                raise ConfigError("--images is one file but the folder holds several cases; give the batch's SOURCE")
            cases[0].source = FileInput(images)
            return
        sources, _ = build_cases(str(images))
        by_key = {s.key(w): s for s in sources for w in weights}
        by_name = {s.case: s for s in sources}
        for c in cases:
            found = by_key.get(c.key) or by_name.get(c.folder.name)
            if found is not None:
                c.source = found.payload
        if not any(c.source is not None for c in cases):
            raise InputError("--images holds none of the images these cases were segmented from")

    # ---------------------------------------------------------------- the page's view
    def short(self, case: ReviewCase) -> str:
        return case.key[:12]

    def decisions(self) -> dict[str, str]:
        """Key -> the latest decision recorded in the output folder's manifest."""
        out: dict[str, str] = {}
        for rec in self.manifest.records():
            review = (rec.extra or {}).get("review")
            if isinstance(review, dict) and review.get("decision"):
                out[rec.key] = str(review["decision"])
        return out

    def listing(self) -> dict[str, Any]:
        done = self.decisions()
        return {"count": len(self.cases), "current": self.current,
                "cases": [{"index": i, "key": self.short(c), "decision": done.get(c.key),
                           "has_image": c.source is not None} for i, c in enumerate(self.cases)]}

    # ---------------------------------------------------------------- opening and deciding
    def open(self, index: Any) -> Any:
        """The :class:`~medseg.viewer.session.ViewerSession` of case ``index`` (its prediction as the
        editable label map); refuses an image whose hash is not the one the case recorded."""
        from medseg.io import load
        from medseg.viewer.grid import DEFAULT_MAX_VOXELS
        from medseg.viewer.session import ViewerSession, load_labels_on

        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.cases):
            raise ConfigError(f"case index must be 0 to {len(self.cases) - 1}")
        case = self.cases[index]
        if case.source is None:
            raise InputError(f"case {index + 1}: its image is not in --images")
        src = case.source
        path = Path(getattr(src, "path", None) or getattr(src, "root", src))
        image = load(path, series=getattr(src, "selector", None), progress=False)
        if case.input_sha256:
            from medseg.inference.pipeline import input_hash

            if input_hash(image, path)[0] != case.input_sha256:
                raise InputError(f"case {index + 1}: the image in --images is not the one this case was segmented from")
        labels, names = load_labels_on(case.folder, image)
        session = ViewerSession(image, labels=labels, label_names=names, prompt_method=self.prompt_method,
                                max_voxels=self.max_voxels or DEFAULT_MAX_VOXELS, edit_labels=True,
                                prompt_model=self.prompt_model)
        session.review_key = case.key
        self.current = index
        return session

    def decide(self, session: Any, decision: Any) -> str:
        """Record ``accept`` / ``reject`` for the open case (``accept`` after edits records
        ``edited`` and writes ``seg_reviewed.nii.gz``); returns the decision recorded."""
        from medseg.batch.manifest import CaseRecord
        from medseg.io import save_labels

        if decision not in DECISIONS:
            raise ConfigError("a decision is 'accept' or 'reject'")
        case = self.cases[self.current]
        if getattr(session, "review_key", None) != case.key:
            raise ConfigError("open a case before deciding on it")
        recorded = DECISIONS[decision]
        latest = {r.key: r for r in self.manifest.records()}.get(case.key)
        if latest is None:
            from medseg.batch.runner import latest_done_records

            latest = latest_done_records(self.root).get(case.key)
        rec = latest or CaseRecord(case.key, case.folder.name, "done")
        outputs = dict(rec.outputs)
        outputs.pop(REVIEWED_NAME, None)
        edited = session.mask is not None and session.labels is not None and not np.array_equal(
            session.mask, session.labels)
        if recorded == "accepted" and edited:
            recorded = "edited"
            save_labels(session.mask, session.image, case.folder / REVIEWED_NAME)  # atomic (temp + rename)
            outputs[REVIEWED_NAME] = str(case.folder / REVIEWED_NAME)  # the manifest's outputs: name -> path
        review = {"decision": recorded, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
                  "by": "medseg view"}
        extra = {**(rec.extra or {}), "review": review}
        json.dumps(extra)  # must serialise before it goes to the journal
        self.manifest.append(replace(rec, outputs=outputs, extra=extra))
        return recorded
