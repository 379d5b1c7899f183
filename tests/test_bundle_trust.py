"""Trust policy: altered bundles are refused before anything in them runs (a canary file must not
appear), the CLI exits 2 with the findings listed, and a pickle payload in model.pt is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_bundle_build import shared_bundle

from medseg.errors import BundleError, TrustError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return shared_bundle(tmp_path_factory)


def _altered(bundle: Path, tmp_path: Path, change) -> Path:
    b = tmp_path / "altered"
    shutil.copytree(bundle, b)
    cfg_path = b / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    change(cfg)
    cfg_path.write_text(json.dumps(cfg, indent=1))
    return b


def _variants(canary: Path) -> dict:
    touch = f"touch {canary}"

    def statement(cfg):
        cfg["initialize"] = [f"$import os; os.system('{touch}')"]

    def target(cfg):
        cfg["network_def"] = {"_target_": "os.system", "command": touch}

    def imports(cfg):
        cfg["imports"] = ["$import glob", "$import subprocess"]
        cfg["initialize"] = [f"$subprocess.run(['touch', '{canary}'])"]

    def chain(cfg):
        cfg["evil"] = f"$__import__('os').system('{touch}')"
        cfg["alias"] = "@evil"
        cfg["network_def"]["dropout"] = "@alias"

    def dotted_escape(cfg):
        cfg["network_def"]["_target_"] = "monai.networks.nets.torch.load"

    def reader(cfg):
        cfg["preprocessing"]["transforms"][0]["reader"] = "os.system"

    def dunder(cfg):
        cfg["network"] = "$@network_def.__class__.__init__.__globals__['os'].system('true')"

    def macro(cfg):
        cfg["network_def"] = "%/etc/hostname"

    def debug_mode(cfg):
        cfg["network_def"]["_mode_"] = "debug"

    def unsafe_load(cfg):
        cfg["ckpt"] = "$torch.load(@bundle_root + '/models/model.pt', weights_only=False)"

    def pretrained(cfg):
        cfg["network_def"]["pretrained"] = True

    return {
        "pretrained": (pretrained, "pretrained asks to fetch weights at run time"),
        "statement": (statement, "import os; os.system"),
        "target": (target, "_target_ 'os.system' is not allow-listed"),
        "imports": (imports, "import '$import subprocess'"),
        "chain": (chain, "name '__import__' is not allowed"),
        "dotted_escape": (dotted_escape, "monai.networks.nets.torch.load"),
        "reader": (reader, "reader 'os.system' is not a MONAI reader"),
        "dunder": (dunder, "attribute '__class__' is not allowed"),
        "macro": (macro, "macro"),
        "debug_mode": (debug_mode, "_mode_ 'debug'"),
        "unsafe_load": (unsafe_load, "attribute 'torch.load' is not allowed"),
    }


@pytest.mark.parametrize("variant", sorted(_variants(Path("x"))))
def test_altered_config_is_refused_before_running(bundle, tmp_path, variant):
    from medseg.bundle import load_bundle, run_inference_config

    canary = tmp_path / "CANARY"
    change, fragment = _variants(canary)[variant]
    b = _altered(bundle, tmp_path, change)
    with pytest.raises(TrustError) as err:
        load_bundle(b)
    msg = str(err.value)
    assert fragment in msg
    assert "rerun with --trust-bundle if you trust its author" in msg
    (tmp_path / "in").mkdir()
    shutil.copyfile(b / "tests/ref_input.nii.gz", tmp_path / "in" / "x.nii.gz")
    with pytest.raises(TrustError):
        run_inference_config(b, tmp_path / "in", tmp_path / "out")
    assert not canary.exists()
    assert not (tmp_path / "out").exists()


def test_trusted_config_does_run_code(bundle, tmp_path):
    """Positive control: the canary mechanism detects execution when the user trusts the bundle."""
    from medseg.bundle import run_inference_config

    canary = tmp_path / "CANARY"
    b = _altered(bundle, tmp_path, lambda c: c.update(
        initialize=[f"$__import__('pathlib').Path('{canary}').touch()"]))
    (tmp_path / "in").mkdir()
    shutil.copyfile(b / "tests/ref_input.nii.gz", tmp_path / "in" / "x.nii.gz")
    with pytest.raises(TrustError):
        run_inference_config(b, tmp_path / "in", tmp_path / "out", check_sums=False)
    assert not canary.exists()
    out = run_inference_config(b, tmp_path / "in", tmp_path / "out", trust=True, check_sums=False)
    assert canary.exists() and [p.name for p in out] == ["x_seg.nii.gz"]


@pytest.mark.parametrize("command", ["verify", "segment"])
def test_cli_refuses_with_exit_2(bundle, tmp_path, command, capsys):
    from medseg import cli

    canary = tmp_path / "CANARY"
    change, _ = _variants(canary)["statement"]
    b = _altered(bundle, tmp_path, change)
    if command == "verify":
        argv = ["bundle", "verify", str(b)]
    else:
        argv = ["segment", str(b / "tests/ref_input.nii.gz"), "--bundle", str(b), "--output", str(tmp_path / "o")]
    code = cli.main(argv)  # the same entry point as the `medseg` console script
    out, err = capsys.readouterr()
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("medseg: error:") and "Traceback" not in err
    if command == "verify":
        assert "FAIL trust" in out and "import os; os.system" in out
    else:
        assert "import os; os.system" in last and "--trust-bundle" in last
    assert not canary.exists()
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.nii.gz"))


class _Payload:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant_pickle(bundle: Path, tmp_path: Path, *, resign: bool) -> tuple[Path, Path]:
    import torch

    from medseg.bundle.trust import sha256_file

    b = tmp_path / "pickled"
    shutil.copytree(bundle, b)
    canary = tmp_path / "CANARY"
    torch.save({"weight": _Payload(canary)}, b / "models/model.pt")
    if resign:
        sums = b / "models/sha256sums.txt"
        lines = [f"{sha256_file(b / rel)}  {rel}" for _, rel in (ln.split("  ", 1) for ln in
                                                                sums.read_text().splitlines())]
        sums.write_text("\n".join(lines) + "\n")
    return b, canary


def test_pickle_payload_in_weights_is_not_executed(bundle, tmp_path):
    import torch

    from medseg.bundle import load_bundle, verify_bundle

    b, canary = _plant_pickle(bundle, tmp_path, resign=True)
    with pytest.raises(BundleError, match="weights_only refused it") as err:
        load_bundle(b)
    assert not isinstance(err.value, TrustError)
    assert not canary.exists()
    report = verify_bundle(b)
    assert [c.name for c in report.checks if c.ok is False] == ["checksums", "weights"]  # metadata sha differs
    assert not canary.exists()
    # positive control: an unsafe load WOULD run the payload
    torch.load(b / "models/model.pt", weights_only=False)
    assert canary.exists()


def test_weights_with_wrong_checksum_are_not_read(bundle, tmp_path, monkeypatch):
    import torch

    from medseg.bundle import load_bundle

    b, canary = _plant_pickle(bundle, tmp_path, resign=False)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(b)
    assert calls == [] and not canary.exists()


def test_expression_grammar():
    from medseg.bundle.trust import check_expression

    accepted = [
        "@bundle_root + '/models/model.pt'",
        "torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "@evaluator.run()",
        "monai.utils.set_determinism(seed=0)",
        "[{'image': i, 'label': l} for i, l in zip(@images, @labels)]",
        "@network_def.to(@device)",
        "monai.handlers.from_engine(['loss'], first=True)",
        # zoo idioms (issue 14): a handler reference called on the engine, dtypes, os.path, a lambda
        "@checkpointloader(@evaluator) if @load_pretrain else None",
        "numpy.float32",
        "setattr(torch.backends.cudnn, 'benchmark', True)",
        "list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii.gz'))))",
        "lambda x: torch.where(x[[2]] > 0, 4, x[0])",
        "lambda batchdata, *_, **__: (batchdata.to(@device), None, (), {})",
    ]
    for expr in accepted:
        assert check_expression(expr) == [], expr
    refused = {
        "__import__('os').system('x')": "name '__import__' is not allowed",
        "eval('1')": "name 'eval' is not allowed",
        "open('/etc/passwd').read()": "name 'open' is not allowed",
        "(lambda: 1)()": "call of a computed function is not allowed",
        "lambda x: __import__('os')": "name '__import__' is not allowed",
        "lambda x: x.__class__": "attribute '__class__' is not allowed",
        "lambda x: x('touch')": "name 'x' is not allowed",
        "lambda os: os.system('x')": "lambda parameter 'os' is not allowed",
        "setattr(torch.backends.cudnn, 'enabled', False)": "name 'setattr' is not allowed",
        "os.system('x')": "attribute 'os.system' is not allowed",
        "[0] * 1000000 * 1000000": "repeating a list or string with '*' is not allowed (memory bomb)",
        "len('ab' * @n)": "repeating a list or string with '*' is not allowed (memory bomb)",
        "list(range(10000000000))": "integers beyond 1000000000 are not allowed (range() and repetition bombs)",
        "[[glob][0].os.environ][0].get('HOME')": "module 'glob' may only be used through an allow-listed name (glob.glob)",
        "torch.load('m.pt')": "attribute 'torch.load' is not allowed",
        "glob.os.system('x')": "attribute 'glob.os.system' is not allowed",
        "@x.__class__": "attribute '__class__' is not allowed",
        "'{0.__class__}'.format(@x)": "call of 'format' is not allowed",
        "f'{@x}'": "syntax JoinedStr is not allowed",
        "import os": "not a single Python expression",
        "1; 2": "not a single Python expression",
        "dict(**@x)": "'**' unpacking is not allowed",
        # MONAI evaluates the text with '#' -> '::': a comment for the checker is a slice step for MONAI
        "[0.0][0 #__import__('os')\n]": "name '__import__' is not allowed",
        # MONAI puts __local_refs['x'] inside the string: its quotes end the string
        "len('a @x b')": "a reference inside a string is not allowed",
        "@::x + 1": "a relative reference ('@::id', '@#id') is not allowed",
        "@##x": "a relative reference ('@::id', '@#id') is not allowed",
        "sorted(@a, key=@saver)": "key= of sorted() must be a lambda",
    }
    for expr, problem in refused.items():
        assert problem in check_expression(expr), (expr, check_expression(expr))
    # in a config: only handlers and lambdas may be called, and engines start only from 'run'
    assert "calling @saver is not allowed (only a monai.handlers component or a $lambda)" in check_expression(
        "@saver(@img, None, '/tmp/x')", callable_ref=lambda ref: ref != "saver")
    assert check_expression("@checkpointloader(@evaluator)", callable_ref=lambda ref: ref == "checkpointloader") == []
    assert any("'.run()' is only allowed in the top-level 'run' section" in p for p in check_expression(
        "@evaluator.run()", allow_run=False))


def test_component_rules_follow_the_class_signature():
    """Writers found from their signature must write under @output_dir with plain names; a class in
    _mode_ callable, a network that downloads by default and the engine's output_dir are refused."""
    from medseg.bundle.trust import find_untrusted

    base = {"output_dir": "$@bundle_root + '/eval'", "bundle_root": "."}

    def problems(**cfg):
        return " | ".join(find_untrusted({**base, **cfg}, source="inference.json"))

    ok = {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg"}
    assert problems(s=ok) == ""
    assert problems(s={**ok, "output_dir": "$@output_dir + '/sub'"}) == ""
    assert "must be given as '@output_dir'" in problems(s={k: v for k, v in ok.items() if k != "output_dir"})
    assert "must be given as '@output_dir'" in problems(s={**ok, "output_dir": "$@output_dir + '/../x'"})
    assert "must be given as '@output_dir'" in problems(s={**ok, "output_dir": "$@output_dir[:0] + '/x'"})
    assert "'data_root_dir' moves where it writes" in problems(s={**ok, "data_root_dir": "/a/b"})
    assert "holds a path" in problems(s={**ok, "output_postfix": "../x"})
    # a reference to a plain literal is checked as that literal (the zoo writes "@output_postfix")
    assert problems(s={**ok, "output_postfix": "@p"}, p="x") == ""
    assert "holds a path" in problems(s={**ok, "output_postfix": "@p"}, p="../x")
    assert "must be written out" in problems(s={**ok, "output_postfix": "@p"}, p="$'x' + 'y'")
    assert "must be written out" in problems(s={**ok, "output_postfix": "@p"}, p="@q", q="$'x'")
    assert "must be given as '@output_dir'" in problems(m={"_target_": "WriteFileMappingd", "keys": "pred"})
    assert "_mode_ 'callable' of class" in problems(c={"_target_": "LoadImage", "_mode_": "callable"})
    assert "fetches by default (pretrained=True)" in problems(n={"_target_": "EfficientNetBN",
                                                                 "model_name": "efficientnet-b0"})
    assert problems(n={"_target_": "EfficientNetBN", "model_name": "efficientnet-b0", "pretrained": False}) == ""
    assert "not allow-listed" in problems(n={"_target_": "PerceptualLoss", "spatial_dims": 2})
    assert "must lie in the bundle" in problems(output_dir="/tmp/elsewhere")
    assert "holds the id separator" in problems(**{"a::b": 1})
    assert "'store' must be given as '@output_dir'" in problems(z={"_target_": "ZarrAvgMerger", "merged_shape": [1]})
    assert "reads a file outside the bundle" in problems(h={"_target_": "CheckpointLoader", "load_path": "/x.pt",
                                                          "load_dict": {}})
