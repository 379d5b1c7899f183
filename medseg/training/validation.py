"""Validation during training: the Dice that picks ``best.pt``.

Two ways, chosen by ``TrainConfig.validation``:

- ``"network"`` (default): MONAI's ``sliding_window_inference`` on the preprocessed (network)
  grid, argmax, no postprocessing; also gives the validation loss. Cheap (the preprocessed
  cases are cached), but it is not what ships.
- ``"deployment"``: exactly what ``medseg segment`` runs on the run folder
  (:func:`medseg.inference.segment`: medseg's stitcher, the per-axis or MONAI preprocessing,
  the model's postprocessing, the inverse to the SOURCE grid), scored against the label file on
  its own grid. The checkpoint is then chosen by the pipeline that ships. No loss (the deployed
  pipeline keeps no logits): ``val_loss`` stays empty.

Both return the same sums, ``[dice sums per class (n_out), counts per class (n_out), loss, n]``
(index 0 of each block, the background, unused), for an all-reduce across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def validate_network_grid(model: torch.nn.Module, val_ds: Sequence[dict[str, Any]], *, patch: Sequence[int],
                          sw_batch_size: int, overlap: float, loss_fn: Any, n_out: int, device: torch.device,
                          amp_dtype: torch.dtype, use_amp: bool) -> torch.Tensor:
    """Dice per class and loss of ``model`` on the cached, preprocessed validation cases."""
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    dice_metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    sums = torch.zeros(2 * n_out + 2, dtype=torch.float64)
    with torch.no_grad():
        for i in range(len(val_ds)):
            item = val_ds[i]
            x = item["image"].as_tensor()[None].to(device)
            y = item["label"].as_tensor()[None].to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = sliding_window_inference(x, tuple(patch), sw_batch_size, model, overlap=overlap,
                                                  mode="gaussian")
            logits = logits.float()
            sums[-2] += float(loss_fn(logits, y))
            sums[-1] += 1
            pred = one_hot(torch.argmax(logits, dim=1, keepdim=True), n_out)
            d = dice_metric(pred, one_hot(y.long(), n_out))[0].double().cpu()
            ok = ~torch.isnan(d)
            sums[1:n_out][ok] += d[ok]
            sums[n_out + 1:2 * n_out][ok] += 1
        dice_metric.reset()
    return sums


def validate_deployment(model: torch.nn.Module, model_spec: dict[str, Any], cases: Sequence[dict[str, Any]], *,
                        load_case: Any, n_out: int, device: torch.device, amp: bool) -> torch.Tensor:
    """Dice per class of what :func:`medseg.inference.segment` makes of each validation case
    (``load_case``: the case dict -> ``{"image", "label"}`` on the source grid, the training
    pipeline's own loader), on the source grid. Dice as MONAI's ``ignore_empty``: a class absent
    from the reference is not counted for that case."""
    from medseg.inference import SegmentationModel, segment

    deployed = SegmentationModel.from_spec(model_spec, network=model)
    sums = torch.zeros(2 * n_out + 2, dtype=torch.float64)
    for case in cases:
        item = load_case(dict(case))
        pred = segment(item["image"], deployed, device=device, progress=False, amp=amp)[0].numpy()
        ref = item["label"].as_tensor()[0].numpy()
        for v in range(1, n_out):
            r = ref == v
            if not r.any():
                continue
            p = pred == v
            sums[v] += 2.0 * float(np.logical_and(p, r).sum()) / float(p.sum() + r.sum())
            sums[n_out + v] += 1
    return sums
