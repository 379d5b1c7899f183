"""A corpus of hostile MONAI bundles: each variant alters a good bundle so that, if medseg ran its
configs or followed its files, a canary file would appear (or the environment / a file outside
the bundle would be read, or something would be written outside the output folder).

Used by tests/test_bundle_hostile.py (in-process and through the CLI) and by
benchmarks/bench_hostile_bundles.py (every variant in a fresh `medseg` process). A variant is
``make(bundle_dir, canary)``: it edits the copy at ``bundle_dir`` in place. ``executes_when_trusted``
marks the variants whose payload really runs once the user passes ``--trust-bundle``: the
positive control that shows the canary would catch an escape.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[[Path, Path], None]
    executes_when_trusted: bool = False


def _edit(bundle: Path, change: Callable[[dict], None], config: str = "inference.json") -> None:
    path = bundle / "configs" / config
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg, indent=1))


def _touch_py(canary: Path) -> str:
    return f"__import__('pathlib').Path({str(canary)!r}).touch()"


def _config(change_for: Callable[[Path], Callable[[dict], None]], config: str = "inference.json"):
    """A variant that edits one config; ``change_for(canary)`` returns the edit."""
    return lambda bundle, canary: _edit(bundle, change_for(canary), config)


def _net_arg(expr_for: Callable[[Path], str]):
    """Put an expression into an argument of network_def (evaluated when the network is built)."""
    def change_for(canary: Path):
        def change(cfg: dict) -> None:
            cfg["network_def"]["dropout"] = expr_for(canary)
        return change
    return _config(change_for)


def _set(key: str, value_for: Callable[[Path], object]):
    return _config(lambda canary: (lambda cfg: cfg.__setitem__(key, value_for(canary))))


def _first_transform(**args):
    def change(cfg: dict) -> None:
        cfg["preprocessing"]["transforms"][0].update(args)
    return _config(lambda canary: change)


def _symlink_weights(bundle: Path, canary: Path) -> None:
    outside = canary.parent / "outside_model.pt"
    shutil.copyfile(bundle / "models" / "model.pt", outside)  # same bytes: only the link is wrong
    (bundle / "models" / "model.pt").unlink()
    os.symlink(outside, bundle / "models" / "model.pt")


def _symlink_config(bundle: Path, canary: Path) -> None:
    outside = canary.parent / "outside_inference.json"
    shutil.copyfile(bundle / "configs" / "inference.json", outside)
    (bundle / "configs" / "inference.json").unlink()
    os.symlink(outside, bundle / "configs" / "inference.json")


def _symlink_models_dir(bundle: Path, canary: Path) -> None:
    outside = canary.parent / "outside_models"
    shutil.copytree(bundle / "models", outside)
    shutil.rmtree(bundle / "models")
    os.symlink(outside, bundle / "models")


def _sums_outside(bundle: Path, canary: Path) -> None:
    sums = bundle / "models" / "sha256sums.txt"
    sums.write_text(sums.read_text() + f"{'0' * 64}  ../../{canary.name}\n")


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled_weights(bundle: Path, canary: Path) -> None:
    import torch

    from medseg.bundle.trust import sha256_file

    torch.save({"weight": _Payload(str(canary))}, bundle / "models" / "model.pt")
    sums = bundle / "models" / "sha256sums.txt"
    rows = [line.split("  ", 1) for line in sums.read_text().splitlines() if line.strip()]
    sums.write_text("".join(f"{sha256_file(bundle / rel)}  {rel}\n" for _, rel in rows))


def _imports(*stmts: str, expr_for: Callable[[Path], str]):
    def change_for(canary: Path):
        def change(cfg: dict) -> None:
            cfg["imports"] = list(stmts)
            cfg["network_def"]["dropout"] = expr_for(canary)
        return change
    return _config(change_for)


def _touch_sh(canary: Path) -> str:
    return f"touch {canary}"


def _write_config(bundle: Path, name: str, text: str) -> None:
    (bundle / "configs" / name).write_text(text)


def _yaml_with_code(bundle: Path, canary: Path) -> None:
    """An inference.yaml beside the JSON: `python -m monai.bundle run --config_file` can run it."""
    _write_config(bundle, "inference.yaml", f"network_def:\n  _target_: UNet\n  dropout: \"${_touch_py(canary)} or 0.0\"\n")


def _yaml_python_tag(bundle: Path, canary: Path) -> None:
    _write_config(bundle, "evil.yaml", f"x: !!python/object/apply:os.system [\"touch {canary}\"]\n")


def _yaml_alias_bomb(bundle: Path, canary: Path) -> None:
    """Nine levels of ten aliases each: 10**9 entries once expanded (a billion laughs)."""
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    _write_config(bundle, "bomb.yaml", text)


def _saver(cfg: dict) -> dict:
    return cfg["postprocessing"]["transforms"][-1]  # SaveImaged of the shipped inference.json


def _callable_class(canary: Path):
    """A class built with ``_mode_: callable`` is the bare class: an expression builds it with arguments
    the checker never saw as config keys (LoadImage's reader is pydoc.locate-d, then called)."""
    def change(cfg: dict) -> None:
        cfg["loader_cls"] = {"_target_": "LoadImage", "_mode_": "callable"}
        cfg["network_def"]["dropout"] = (f"$@loader_cls(reader='subprocess.run', args=['touch', {str(canary)!r}])"
                                         " and 0.0")
    return change


def _call_writer(canary: Path):
    """Calling a transform with extra arguments: SaveImage(img, meta, filename) writes where filename says
    (run_inference_config evaluates 'initialize', with output_dir pointed at medseg's folder)."""
    def change(cfg: dict) -> None:
        cfg["saver"] = {"_target_": "SaveImage", "output_dir": "@output_dir", "resample": False}
        cfg["to_tensor"] = {"_target_": "EnsureType"}
        cfg["initialize"] = [f"$@saver(@to_tensor([[[1.0, 2.0], [3.0, 4.0]]]), None, {str(canary)!r})"]
    return change


def _engine_run(canary: Path):
    """load_bundle only builds network_def and leaves the bundle's output_dir alone: an engine started from
    there runs its postprocessing (SaveImaged) into a folder of the bundle's choosing."""
    def change(cfg: dict) -> None:
        cfg["output_dir"] = str(canary)
        cfg["dataset_dir"] = "$@bundle_root + '/tests'"
        cfg["net2"] = json.loads(json.dumps(cfg["network_def"]))
        cfg["ev2"] = {**cfg["evaluator"], "network": "@net2", "val_handlers": [], "device": "cpu"}
        cfg["network_def"]["dropout"] = "$@ev2.run() or 0.0"
    return change


def _sorted_key_writer(canary: Path):
    """sorted(..., key=@saver) calls a config-built writer on a tensor; output_dir is the bundle's own."""
    def change(cfg: dict) -> None:
        cfg["output_dir"] = str(canary)
        cfg["saver"] = {"_target_": "SaveImage", "output_dir": "@output_dir", "resample": False}
        cfg["net2"] = json.loads(json.dumps(cfg["network_def"]))
        cfg["network_def"]["dropout"] = "$len(sorted([list(@net2.parameters())[0][0]], key=@saver)) * 0.0"
    return change


def _dataset_in_network_def(bundle: Path, canary: Path) -> None:
    """While load_bundle builds network_def, ``@ds[0]`` runs a dataset's transforms: a SaveImaged into the
    bundle's own output_dir ('$@bundle_root + /eval'), which the bundle made a link out of itself."""
    shutil.copyfile(bundle / "tests" / "ref_input.nii.gz", bundle / "tests" / f"{canary.name}.nii.gz")
    os.symlink(canary.parent, bundle / "eval")

    def change(cfg: dict) -> None:
        cfg["ds"] = {"_target_": "Dataset", "data": f"$[{{'image': @bundle_root + '/tests/{canary.name}.nii.gz'}}]",
                     "transform": {"_target_": "Compose", "transforms": [
                         {"_target_": "LoadImaged", "keys": "image"},
                         {"_target_": "SaveImaged", "keys": "image", "output_dir": "@output_dir", "resample": False}]}}
        cfg["network_def"]["dropout"] = "$len(@ds[0]) * 0.0"
    _edit(bundle, change)


def _flat_key_shadows_id(bundle: Path, canary: Path) -> None:
    """A top-level key "a::b" has the id of {"a": {"b": ...}}; parsed first, it is what '@a::b' reaches in
    MONAI while a checker walking the nesting sees the harmless one."""
    _dataset_in_network_def(bundle, canary)

    def change(cfg: dict) -> None:
        ds = cfg.pop("ds")
        rest = dict(cfg)
        cfg.clear()
        cfg.update({"a::b": ds, **rest, "a": {"b": [1]}})
        cfg["network_def"]["dropout"] = "$len(@a::b[0]) * 0.0"
    _edit(bundle, change)


def _deep_json(bundle: Path, canary: Path) -> None:
    _write_config(bundle, "deep.json", "{\"a\": " + "[" * 100000 + "]" * 100000 + "}")


VARIANTS: list[Variant] = [
    # expression escapes through a module smuggled into a value
    Variant("torch_builtins_eval", _net_arg(lambda c: f"$[[torch][0].builtins][0].eval({_touch_py(c)!r}) and 0.0"),
            True),
    Variant("np_f2py_subprocess", _net_arg(
        lambda c: f"$[[np][0].f2py.subprocess][0].run({_touch_sh(c)!r}, shell=True) and 0.0"), True),
    Variant("comprehension_module", _net_arg(
        lambda c: f"$[g for g in [glob]][0].os.system({_touch_sh(c)!r}) * 0.0"), True),
    Variant("dict_comprehension_module", _net_arg(
        lambda c: f"${{k: v for k, v in [('m', glob)]}}['m'].os.system({_touch_sh(c)!r}) * 0.0"), True),
    Variant("environment_read", _net_arg(lambda c: "$len([[glob][0].os.environ][0].get('HOME', '')) * 0.0")),
    Variant("set_literal_module", _net_arg(lambda c: "$len({torch}) * 0.0")),
    Variant("dunder_globals", _net_arg(
        lambda c: f"$@_meta_.__class__.__init__.__globals__['__builtins__']['exec']({_touch_py(c)!r}) or 0.0")),
    Variant("format_string", _net_arg(lambda c: "$len('{0.__class__.__init__.__globals__}'.format(@_meta_)) * 0.0")),
    Variant("lambda_call", _net_arg(lambda c: f"$(lambda: {_touch_py(c)})() or 0.0"), True),
    Variant("builtin_import", _net_arg(lambda c: f"${_touch_py(c)} or 0.0"), True),
    Variant("getattr_string_built", _net_arg(
        lambda c: f"$getattr(glob, 'o' + 's').system({_touch_sh(c)!r}) * 0.0"), True),
    Variant("walrus", _net_arg(lambda c: "$(x := 0.0)")),
    Variant("generator_next", _net_arg(lambda c: "$next(x for x in [0.0])")),
    Variant("fstring", _net_arg(lambda c: "$float(f'{0.0}')")),
    Variant("percent_format", _net_arg(lambda c: "$float('%s' % 0.0)")),
    Variant("ref_into_imports", _imports("$import glob",
                                         expr_for=lambda c: f"$@imports#0.os.system({_touch_sh(c)!r}) * 0.0")),
    Variant("unsafe_torch_load", _net_arg(
        lambda c: "$len(torch.load(@bundle_root + '/models/model.pt', weights_only=False)) * 0.0")),
    Variant("url_in_expression", _net_arg(lambda c: "$len('https://example.invalid/w.pt') * 0.0")),
    Variant("path_climb_in_expression", _net_arg(lambda c: "$len(glob.glob(@bundle_root + '/../../*')) * 0.0")),
    # the zoo idioms the grammar accepts (lambdas, os.path, cudnn flags, calling a reference), abused
    Variant("lambda_param_module", _net_arg(
        lambda c: f"$(lambda g: g.os.system({_touch_sh(c)!r}))(glob) * 0.0"), True),
    Variant("lambda_default_module", _net_arg(lambda c: "$(lambda m=glob: 0.0)()")),
    Variant("setattr_payload", _net_arg(
        lambda c: f"$setattr(torch.backends.cudnn, 'benchmark', {_touch_py(c)}) or 0.0"), True),
    Variant("os_path_globals", _net_arg(
        lambda c: f"$os.path.join.__globals__['os'].system({_touch_sh(c)!r}) * 0.0")),
    Variant("lambda_called_by_reference", lambda b, c: _edit(b, lambda cfg: (
        cfg.__setitem__("hook", f"$lambda: {_touch_py(c)}"),
        cfg["network_def"].__setitem__("dropout", "$@hook() or 0.0"))), True),
    # statements and imports
    Variant("statement", _set("initialize", lambda c: [f"$import os; os.system({_touch_sh(c)!r})"])),
    Variant("import_subprocess", _imports("$import glob", "$import subprocess",
                                          expr_for=lambda c: f"$subprocess.run(['touch', {str(c)!r}]) and 0.0"), True),
    Variant("from_import", _imports("$from os import system", expr_for=lambda c: f"$system({_touch_sh(c)!r}) * 0.0"),
            True),
    # _target_ and the other places MONAI turns a name into a callable
    Variant("target_os_system", _config(lambda c: lambda cfg: cfg.__setitem__(
        "network_def", {"_target_": "os.system", "command": _touch_sh(c)})), True),
    Variant("target_builtins_exec", _config(lambda c: lambda cfg: cfg.__setitem__(
        "network_def", {"_target_": "builtins.exec", "source": _touch_py(c)}))),
    Variant("target_dotted_escape", _config(lambda c: lambda cfg: cfg["network_def"].__setitem__(
        "_target_", "monai.networks.nets.torch.load"))),
    Variant("target_monai_bundle_run", _config(lambda c: lambda cfg: cfg.__setitem__(
        "initialize", [{"_target_": "monai.bundle.scripts.run", "config_file": "x.json"}]))),
    Variant("target_mlflow_handler", _config(lambda c: lambda cfg: cfg.__setitem__(
        "handlers", [{"_target_": "MLFlowHandler", "tracking_uri": "file:///tmp/x"}]))),
    Variant("reader_list_popen", _first_transform(reader=["subprocess.Popen"])),
    Variant("reader_string_locate", _first_transform(reader="os.system")),
    Variant("reader_numpy_pickle", _first_transform(reader="NumpyReader")),
    Variant("reader_by_reference", lambda b, c: _edit(b, lambda cfg: (
        cfg.__setitem__("my_reader", "subprocess.Popen"),
        cfg["preprocessing"]["transforms"][0].__setitem__("reader", "@my_reader")))),
    Variant("writer_locate", _config(lambda c: lambda cfg: cfg["postprocessing"]["transforms"].append(
        {"_target_": "SaveImaged", "keys": "pred", "writer": "os.system", "output_dir": "@output_dir"}))),
    Variant("merger_cls_locate", _config(lambda c: lambda cfg: cfg["inferer"].__setitem__(
        "merger_cls", "builtins.exec"))),
    Variant("dotted_name_value", _config(lambda c: lambda cfg: cfg["network_def"].__setitem__("act", "os.system"))),
    # writes outside the output folder, network at load time
    Variant("save_outside_output", lambda b, c: _edit(b, lambda cfg: cfg["postprocessing"]["transforms"].append(
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": str(c.parent / "outside_out")}))),
    Variant("pretrained_url", _config(lambda c: lambda cfg: cfg["network_def"].__setitem__(
        "pretrained_url", "https://example.invalid/w.pt"))),
    Variant("pretrained_true", _config(lambda c: lambda cfg: cfg["network_def"].__setitem__("pretrained", True))),
    Variant("plain_url_value", _set("weights_source", lambda c: "https://example.invalid/w.pt")),
    # config mechanics
    Variant("macro_outside", _set("network_def", lambda c: "%/etc/hostname")),
    Variant("macro_relative", _set("network_def", lambda c: "%../../other.json#network_def")),
    Variant("debug_mode", _config(lambda c: lambda cfg: cfg["network_def"].__setitem__("_mode_", "debug"))),
    Variant("requires", _config(lambda c: lambda cfg: cfg["network_def"].__setitem__(
        "_requires_", f"${_touch_py(c)}"))),
    Variant("code_in_metadata", lambda b, c: _edit(b, lambda cfg: cfg.__setitem__("evil", f"${_touch_py(c)}"),
                                                   "metadata.json")),
    Variant("code_in_medseg_json", lambda b, c: _edit(b, lambda cfg: cfg.__setitem__("evil", f"${_touch_py(c)}"),
                                                      "medseg.json")),
    # files that leave the bundle, weights that run code
    Variant("symlink_weights", _symlink_weights),
    Variant("symlink_config", _symlink_config),
    Variant("symlink_models_dir", _symlink_models_dir),
    Variant("checksum_path_outside", _sums_outside),
    Variant("pickle_payload_resigned", _pickled_weights),
    # configs MONAI could be pointed at beside the ones medseg runs
    Variant("yaml_config_with_code", _yaml_with_code),
    Variant("yaml_python_tag", _yaml_python_tag),
    Variant("yaml_alias_bomb", _yaml_alias_bomb),
    Variant("json_nested_too_deep", _deep_json),
    # the checker must see the text MONAI evaluates: MONAI turns every '#' into '::' first, so a Python
    # comment (ignored by the checker) becomes a slice step (evaluated)
    Variant("hash_comment_slice_step", _net_arg(lambda c: f"$[0.0][0 #({_touch_py(c)} or 1)\n][0]"), True),
    # writers: where they write is decided by more than output_dir
    Variant("output_dir_expression_elsewhere", _config(lambda c: lambda cfg: _saver(cfg).__setitem__(
        "output_dir", f"$@output_dir[:0] + {str(c.parent / 'outside_out')!r}"))),
    Variant("output_dir_longer_id", _config(lambda c: lambda cfg: (
        cfg.__setitem__("output_dirx", str(c.parent / "outside_out")),
        _saver(cfg).__setitem__("output_dir", "$@output_dirx")))),
    Variant("saver_default_cwd", _config(lambda c: lambda cfg: _saver(cfg).pop("output_dir"))),
    Variant("saver_data_root_dir", _config(lambda c: lambda cfg: _saver(cfg).__setitem__(
        "data_root_dir", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n"))),
    Variant("saver_postfix_climbs", _config(lambda c: lambda cfg: _saver(cfg).__setitem__(
        "output_postfix", f"seg/../../{c.name}"))),
    Variant("file_mapping_default_cwd", _config(lambda c: lambda cfg: (
        _saver(cfg).__setitem__("savepath_in_metadict", True),
        cfg["postprocessing"]["transforms"].append({"_target_": "WriteFileMappingd", "keys": "pred"})))),
    Variant("call_writer_with_filename", _config(_call_writer)),
    # writes through a symbolic link in the bundle: refused even with --trust-bundle (a bundle may
    # hold no link at all), so no positive control; the red-team run saw it write outside
    Variant("dataset_run_from_network_def", _dataset_in_network_def),
    Variant("flat_key_shadows_nested_id", _flat_key_shadows_id),
    Variant("callable_check_fooled_by_train_json", lambda b, c: (
        _edit(b, _call_writer(c)), _edit(b, lambda cfg: cfg.__setitem__("saver", {"_target_": "StatsHandler"}),
                                         "train.json"))),
    Variant("sorted_key_calls_writer", _config(_sorted_key_writer)),
    # these three write into the output_dir the config names; load_bundle now points output_dir at an
    # empty folder of its own while it builds the network, so even trusted they land there: no
    # positive control (the red-team run saw each write outside before that)
    Variant("engine_run_from_network_def", _config(_engine_run)),
    # a class instead of an instance; a network that downloads unless told not to
    Variant("callable_mode_class", _config(_callable_class), True),
    Variant("checkpoint_load_outside", _config(lambda c: lambda cfg: (
        cfg.__setitem__("loader", {"_target_": "CheckpointLoader", "load_path": str(c.parent / "outside_model.pt"),
                                   "load_dict": {"model": "@network_def"}}),
        cfg.__setitem__("network", "$@loader(None) or @network_def")))),
    # the rules widened for the model zoo (issue 14), each with the escape it must still refuse:
    # load_path through a reference, a sibling folder, a file-name choice that climbs out
    Variant("load_path_reference_outside", _config(lambda c: lambda cfg: (
        cfg.__setitem__("ckpt", str(c.parent / "outside_model.pt")),
        cfg.__setitem__("loader", {"_target_": "CheckpointLoader", "load_path": "@ckpt",
                                   "load_dict": {"model": "@network_def"}}),
        cfg.__setitem__("network", "$@loader(None) or @network_def")))),
    Variant("load_path_sibling_of_bundle", _config(lambda c: lambda cfg: (
        cfg.__setitem__("loader", {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '_x/model.pt'",
                                   "load_dict": {"model": "@network_def"}}),
        cfg.__setitem__("network", "$@loader(None) or @network_def")))),
    Variant("load_path_name_choice_climbs", _config(lambda c: lambda cfg: (
        cfg.__setitem__("modelname", "$'model.pt' if @load_pretrain else '../../outside_model.pt'"),
        cfg.__setitem__("load_pretrain", False),
        cfg.__setitem__("loader", {"_target_": "CheckpointLoader",
                                   "load_path": "$@bundle_root + '/models/' + @modelname",
                                   "load_dict": {"model": "@network_def"}}),
        cfg.__setitem__("network", "$@loader(None) or @network_def")))),
    # a relative top-level output_dir is accepted (medseg always replaces it), one that climbs is not
    Variant("output_dir_relative_climbs", _set("output_dir", lambda c: f"./../../{c.name}")),
    # '.run()' in a section medseg never evaluates is accepted ('evaluating'); not in one that the
    # network reaches, nor in one medseg evaluates by name
    Variant("run_section_referenced", _config(lambda c: lambda cfg: (
        cfg.__setitem__("evaluating", ["$@evaluator.run()"]),
        cfg.__setitem__("device", "$'cpu' if len(@evaluating) else 'cpu'")))),
    Variant("run_in_initialize", _config(lambda c: lambda cfg: cfg.__setitem__("initialize", ["$@evaluator.run()"]))),
    Variant("pretrained_by_default", _config(lambda c: lambda cfg: cfg.__setitem__("network_def", {
        "_target_": "EfficientNetBN", "model_name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 1,
        "num_classes": 3}))),
]


def make_variant(good_bundle: Path, variant: Variant, work: Path) -> tuple[Path, Path]:
    """Copy ``good_bundle`` into ``work/<name>/bundle`` and apply ``variant``: (bundle, canary)."""
    root = work / variant.name
    root.mkdir(parents=True)
    bundle = root / "bundle"
    shutil.copytree(good_bundle, bundle, symlinks=True)
    canary = root / "CANARY"
    variant.make(bundle, canary)
    return bundle, canary


def leftovers(root: Path, bundle: Path, allowed: Path | None = None) -> list[str]:
    """Files under ``root`` that are neither the bundle, the variant's own setup files nor under ``allowed``."""
    setup = {"outside_model.pt", "outside_inference.json", "outside_models"}
    out = []
    for p in root.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(root)
        if rel.parts[0] in setup or p.is_relative_to(bundle) or (allowed and p.is_relative_to(allowed)):
            continue
        out.append(rel.as_posix())
    return sorted(out)
