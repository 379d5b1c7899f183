"""One dataclass per JSON file medseg writes, validated when built, with one reader and writer:
statistics.json (StructureStatistics), the batch manifest's lines (CaseRecord),
train_config.json (TrainConfig) and evaluate's summary.json (EvaluationSummary) read back what they wrote and refuse other shapes or a newer
schema_version (medseg.schema)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_inference_segment import bone_model

from medseg.batch.manifest import CaseRecord, Manifest
from medseg.errors import ConfigError, InputError
from medseg.evaluation.statistics import StructureStatistics, write_statistics
from medseg.inference.pipeline import segment_file
from medseg.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_statistics_travel_in_the_result_and_equal_the_file(tmp_path):
    from medseg.data.phantoms import spine_ct
    from medseg.data.phantoms.writers import save_phantom

    src = save_phantom(spine_ct(shape=(32, 30, 16), seed=4), tmp_path / "spine") / "image.nii.gz"
    res = segment_file(src, bone_model(), tmp_path / "out", formats="nifti", progress=False,
                       extra_writers=[write_statistics])
    stats = res.records["statistics.json"]
    assert "statistics.json" in res.files and (res.path / "statistics.json").read_text() == stats.dumps()
    assert StructureStatistics.read(res.path / "statistics.json") == stats
    seg = nib.load(str(res.path / "seg.nii.gz"))  # independent: voxel count x |det(affine)|
    ml = np.count_nonzero(np.asarray(seg.dataobj) == 1) * abs(np.linalg.det(seg.affine[:3, :3])) / 1000
    assert stats.volumes_ml() == {"vertebrae": pytest.approx(ml, abs=1e-4)}


def test_statistics_refuse_other_shapes(tmp_path):
    good = {"units": {"volume_ml": "mL"}, "structures": {"1": {"name": "liver", "voxels": 3, "volume_ml": 0.5}}}
    assert StructureStatistics.from_json(good).volumes_ml() == {"liver": 0.5}
    with pytest.raises(InputError, match="schema_version 2"):
        StructureStatistics.from_json({**good, "schema_version": 2})
    with pytest.raises(InputError, match="structure 1 lacks volume_ml"):
        StructureStatistics.from_json({"structures": {"1": {"name": "liver", "voxels": 3}}})
    with pytest.raises(InputError, match="lacks 'structures'"):
        StructureStatistics.from_json({"units": {}})


def test_case_record_round_trip_and_validation(tmp_path):
    rec = CaseRecord("k1", "case-a", "done", outputs={"seg.nii.gz": "/x/seg.nii.gz"}, timings_s={"total": 1.5},
                     extra={"volume_ml": {"liver": 1.0}})
    assert CaseRecord.from_json(json.loads(rec.to_json())) == rec
    with pytest.raises(ValueError, match="unknown status"):
        CaseRecord("k", "c", "maybe")
    with pytest.raises(ValueError, match="timings_s"):
        CaseRecord("k", "c", "done", timings_s={"total": "slow"})
    with pytest.raises(InputError, match="schema_version 3"):
        CaseRecord.from_json({**json.loads(rec.to_json()), "schema_version": 3})
    m = Manifest(tmp_path / "manifest.jsonl")
    m.append(rec)
    with open(m.path, "a", encoding="utf-8") as fh:  # a hand-edited line and a torn one are not records
        fh.write(json.dumps({**json.loads(rec.to_json()), "key": "k2", "status": "maybe"}) + "\n")
        fh.write(rec.to_json()[:20])
    assert m.records() == [rec]


def test_train_config_round_trip(tmp_path):
    from medseg.transforms.augment import AugmentationConfig

    cfg = TrainConfig(dataset=tmp_path / "ds", output=tmp_path / "run", preset="ct_abdomen", labels={1: "liver"},
                      patch_size=(16, 16, 8), augmentation=AugmentationConfig(flip_axes=(0, 2), gamma=(0.8, 1.2)),
                      validation="deployment")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({**cfg.to_json(), "flip_plan": {"axes": [0]}}))
    back = TrainConfig.read(tmp_path / "run")
    assert back.to_json() == cfg.to_json() and back.augmentation == cfg.augmentation
    assert back.labels == {1: "liver"} and back.patch_size == (16, 16, 8)
    with pytest.raises(ConfigError, match="schema_version 2"):
        TrainConfig.from_json({**cfg.to_json(), "schema_version": 2})
    with pytest.raises(ConfigError, match="^train_config.json: epochs"):
        TrainConfig.from_json({**cfg.to_json(), "epochs": 0})


def test_every_bundle_script_chooses_best_pt_with_the_deployment_path():
    """The shipped bundles' training scripts train through bundle_tools.train_run, whose default is
    validation="deployment"; none passes another validation or imports medseg.training's train or
    TrainConfig itself (a script training another kind of network with its own loop is not one)."""
    tools = ast.parse((REPO / "bundles" / "bundle_tools.py").read_text())
    (train_run,) = [n for n in tools.body if isinstance(n, ast.FunctionDef) and n.name == "train_run"]
    defaults = dict(zip([a.arg for a in train_run.args.kwonlyargs], train_run.args.kw_defaults, strict=True))
    assert ast.literal_eval(defaults["validation"]) == "deployment"
    scripts = sorted((REPO / "bundles").glob("*/scripts/*.py"))
    trains = []
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medseg.training"):
                names = {a.name for a in node.names}
                assert not names & {"train", "TrainConfig"}, f"{script.relative_to(REPO)} trains without train_run"
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "train_run":
                trains.append(script)
                for kw in node.keywords:
                    assert kw.arg != "validation" or ast.literal_eval(kw.value) == "deployment", script
    assert len({s.parent.parent.name for s in trains}) >= 6  # every shipped bundle with a training script


def test_evaluation_summary_is_what_evaluate_wrote_and_refuses_other_shapes(tmp_path):
    """summary.json of a real evaluate run reads back into EvaluationSummary and writes the same
    object again; a file with a missing key, a wrong type or a newer version is refused in one line."""
    from medseg.data.phantoms import abdomen_ct
    from medseg.evaluation import evaluate
    from medseg.evaluation.report import json_safe
    from medseg.evaluation.summary import EvaluationSummary

    ph = abdomen_ct(shape=(24, 22, 10), seed=3)
    for sub, lab in (("pred", np.where(ph.label == 2, 0, ph.label)), ("ref", ph.label)):
        (tmp_path / sub).mkdir()
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), ph.affine), str(tmp_path / sub / "case1.nii.gz"))
    res = evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "eval", plots=False)
    path = tmp_path / "eval" / "summary.json"
    on_disk = json.loads(path.read_text())
    summary = EvaluationSummary.read(path)
    assert summary.n_cases == 1 and summary.cases == ["case1"] and summary.failed == {}
    assert json.loads(json.dumps(json_safe(summary.to_json()))) == on_disk  # the file, key for key
    assert json.loads(json.dumps(json_safe(res.summary))) == on_disk  # what evaluate() returned
    assert summary.per_label["1"]["metrics"]["dice"]["mean"] == pytest.approx(1.0)
    for broken, words in (({k: v for k, v in on_disk.items() if k != "per_label"}, "lacks 'per_label'"),
                          ({**on_disk, "n_cases": "one"}, "'n_cases' must be a count"),
                          ({**on_disk, "labels": {"x": "liver"}}, "'labels' keys must be label values"),
                          ({**on_disk, "schema_version": 99}, "schema_version 99")):
        path.write_text(json.dumps(broken))
        with pytest.raises(InputError, match=words) as err:
            EvaluationSummary.read(path)
        assert "\n" not in str(err.value)
