"""The MONAI bundle specification, checked without the network.

MONAI's own ``verify_metadata`` downloads a JSON schema from the web, which is not reachable
here, so the required keys of ``configs/metadata.json`` (MONAI Bundle Specification,
docs.monai.io ``mb_specification``; ``monai.bundle.utils.DEFAULT_METADATA``) are checked here.
"""

from __future__ import annotations

import re
from typing import Any

#: Keys every metadata.json must hold. Besides these, one of :data:`PACKAGES_KEYS` must be
#: there: ``required_packages_version`` replaced the older ``optional_packages_version``, which
#: MONAI still accepts and the model zoo still writes (medseg's build writes both).
REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)

PACKAGES_KEYS: tuple[str, ...] = ("required_packages_version", "optional_packages_version")

#: Keys written by medseg although the specification marks them optional.
OPTIONAL_METADATA_KEYS: tuple[str, ...] = (
    "changelog",
    "optional_packages_version",
    "name",
    "data_source",
    "data_type",
    "image_classes",
    "label_classes",
    "pred_classes",
    "intended_use",
    "references",
    "eval_metrics",
)

#: Keys every tensor format specifier (an entry of ``network_data_format.inputs/outputs``) holds.
TENSOR_FORMAT_KEYS: tuple[str, ...] = (
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)

TENSOR_TYPES = ("image", "series", "tuples", "probabilities")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([a-z0-9.+-]*)$", re.IGNORECASE)
_SHAPE_EXPR = re.compile(r"^[0-9a-z*+\-/() ]+$")
_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


#: An OUTPUT tensor may leave these out: MONAI's schema does not ask for them and the model zoo
#: (whose metadata MONAI's CI validates) omits them (29 of 31 outputs have no 'modality').
OUTPUT_OPTIONAL_KEYS = ("modality", "is_patch_data", "channel_def")


def _check_tensor(name: str, spec: Any, *, output: bool = False) -> list[str]:
    if not isinstance(spec, dict):
        return [f"network_data_format {name} is not an object"]
    required = [k for k in TENSOR_FORMAT_KEYS if not (output and k in OUTPUT_OPTIONAL_KEYS)]
    problems = [f"network_data_format {name} lacks '{k}'" for k in required if k not in spec]
    if problems:
        return problems
    if output:
        spec = {"is_patch_data": False, **spec}
    if spec["type"] not in TENSOR_TYPES and not output:
        problems.append(f"network_data_format {name} type {spec['type']!r} is not one of {TENSOR_TYPES}")
    if not isinstance(spec["num_channels"], int) or spec["num_channels"] < 1:
        problems.append(f"network_data_format {name} num_channels must be a positive integer")
    shape = spec["spatial_shape"]
    if not isinstance(shape, list) or not shape or not all(
        (isinstance(s, int) and s > 0) or (isinstance(s, str) and _SHAPE_EXPR.match(s)) for s in shape
    ):
        problems.append(f"network_data_format {name} spatial_shape must be a list of sizes or expressions")
    if spec["dtype"] not in _DTYPES:
        problems.append(f"network_data_format {name} dtype {spec['dtype']!r} is not a tensor dtype")
    vr = spec["value_range"]
    if not isinstance(vr, list) or len(vr) not in (0, 2) or not all(isinstance(v, (int, float)) for v in vr):
        problems.append(f"network_data_format {name} value_range must be [] or [min, max]")
    if not isinstance(spec["is_patch_data"], bool):
        problems.append(f"network_data_format {name} is_patch_data must be true or false")
    cd = spec.get("channel_def")
    if "channel_def" in spec and (not isinstance(cd, dict) or len(cd) != spec.get("num_channels")):
        problems.append(f"network_data_format {name} channel_def must name each of the num_channels channels")
    return problems


def check_metadata(meta: Any) -> list[str]:
    """Return the problems of a parsed ``metadata.json`` (empty list: conforms to the spec)."""
    if not isinstance(meta, dict):
        return ["metadata.json is not a JSON object"]
    problems = [f"metadata lacks required key '{k}'" for k in REQUIRED_METADATA_KEYS if k not in meta]
    if not any(k in meta for k in PACKAGES_KEYS):
        problems.append("metadata lacks required key 'required_packages_version' (or the older "
                        "'optional_packages_version')")
    for key in ("version", "monai_version", "pytorch_version", "numpy_version"):
        if key in meta and not (isinstance(meta[key], str) and _VERSION.match(meta[key])):
            problems.append(f"metadata '{key}' must be a version string like '1.2.3'")
    for key in ("task", "description", "authors", "copyright"):
        if key in meta and not (isinstance(meta[key], str) and meta[key].strip()):
            problems.append(f"metadata '{key}' must be a non-empty string")
    for key in PACKAGES_KEYS:
        if key in meta and not (
            isinstance(meta[key], dict) and all(isinstance(v, str) for v in meta[key].values())
        ):
            problems.append(f"metadata '{key}' must map package names to version strings")
    if "changelog" in meta:
        cl = meta["changelog"]
        if not isinstance(cl, dict) or meta.get("version") not in cl:
            problems.append("metadata 'changelog' must be an object with an entry for the current version")
    if "references" in meta and not isinstance(meta["references"], list):
        problems.append("metadata 'references' must be a list")
    ndf = meta.get("network_data_format")
    if ndf is not None:
        if not isinstance(ndf, dict) or not isinstance(ndf.get("inputs"), dict) or not isinstance(
            ndf.get("outputs"), dict
        ):
            problems.append("network_data_format must hold 'inputs' and 'outputs' objects")
        else:
            if not ndf["inputs"] or not ndf["outputs"]:
                problems.append("network_data_format needs at least one input and one output")
            for section in ("inputs", "outputs"):
                for name, spec in ndf[section].items():
                    problems.extend(_check_tensor(f"{section}.{name}", spec, output=section == "outputs"))
    return problems
