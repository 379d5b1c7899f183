"""nnU-Net's export (logits on the network grid -> labels on the source array), one class at a time.

``nnUNetv2_predict`` turns the stitched logits (``C x network grid``, float16 on the CPU) into
labels with ``convert_predicted_logits_to_segmentation_with_correct_shape``: it resamples ALL
class logits at once to the cropped source shape (``resampling_fn_probabilities``, which first
copies the whole ``C x network grid`` array to float64 and fills a ``C x source grid`` float16
array), takes the argmax over classes (int64), puts it back into the uncropped array and
applies ``transpose_backward``. For a model with many classes those copies are what fills the
memory (TotalSegmentator's 105 classes x a CT).

Here the same nnunetv2 resampling function runs on one class at a time, and the argmax is a
running one: a voxel's label changes only when a later class is strictly greater, which is
exactly ``numpy.argmax``'s rule (the first maximum wins). Every class's values are the float16
numbers nnU-Net compares (the resampling of one class does not depend on the others), so the
labels are identical, while the memory beyond the logits is a few arrays of the source size.
Region-based models (sigmoid, ``regions_class_order``) are refused before this is reached.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _resample_one(fn: Any, logits: np.ndarray, c: int, shape: tuple[int, ...], current: list[float],
                  target: list[float]) -> np.ndarray:
    out = fn(logits[c:c + 1], shape, current, target)
    return np.asarray(out)[0]


def logits_to_labels(logits: Any, properties: dict, plans_manager: Any, configuration_manager: Any,
                     label_manager: Any) -> np.ndarray:
    """Labels in the array space of the input as nnU-Net read it (after ``transpose_backward``),
    equal to ``convert_predicted_logits_to_segmentation_with_correct_shape`` (softmax models)."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    if label_manager.has_regions:
        raise ValueError("region-based models are not exported class by class")
    arr = logits.numpy() if hasattr(logits, "numpy") else np.asarray(logits)
    n_classes = arr.shape[0]
    spacing_t = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = tuple(int(s) for s in properties["shape_after_cropping_and_before_resampling"])
    spacing_cfg = list(configuration_manager.spacing)
    current = spacing_cfg if len(spacing_cfg) == len(shape) else [spacing_t[0], *spacing_cfg]
    fn = configuration_manager.resampling_fn_probabilities
    label_dtype = np.uint8 if len(label_manager.foreground_labels) < 255 else np.uint16
    best = _resample_one(fn, arr, 0, shape, current, spacing_t).astype(np.float32)  # float16 -> float32: exact
    labels = np.zeros(shape, dtype=label_dtype)
    mask = np.empty(shape, dtype=bool)
    for c in range(1, n_classes):
        values = _resample_one(fn, arr, c, shape, current, spacing_t)
        np.greater(values, best, out=mask)
        np.copyto(best, values, where=mask, casting="unsafe")
        labels[mask] = c
        del values
    del best, mask
    full = np.zeros(properties["shape_before_cropping"], dtype=label_dtype)
    full = insert_crop_into_image(full, labels, properties["bbox_used_for_cropping"])
    return np.asarray(full).transpose(plans_manager.transpose_backward)
