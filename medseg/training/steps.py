"""The named steps of a training run (:func:`medseg.training.loop.train` calls them in order):
dataset checks, the network and optimiser, resume, the data, one epoch, validation, checkpoints,
and the run folder's metrics."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.inference.model_spec import ModelSpec
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.training.config import TrainConfig, _lr_factor, resolve_network_spec, select_classes
from medseg.training.curves import plot_curves, write_log_csv
from medseg.training.datasets import case_dicts, load_dataset, read_grid, split_cases
from medseg.training.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
)
from medseg.training.state import rng_state
from medseg.training.validation import validate_deployment, validate_network_grid

log = logging.getLogger("medseg.training.loop")



def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _loss_value(loss_fn: Callable, out: Any, y: torch.Tensor) -> torch.Tensor:
    """Loss for a plain output, or a weighted sum over deep-supervision heads (weights 1, 1/2, ...)."""
    if isinstance(out, (list, tuple)):
        heads = list(out)
    elif out.dim() == y.dim() + 1:  # DynUNet stacks heads on dim 1 in training mode
        heads = list(torch.unbind(out, dim=1))
    else:
        return loss_fn(out, y)
    weights = [0.5**i for i in range(len(heads))]
    total = sum(w * loss_fn(h, y) for w, h in zip(weights, heads, strict=True))
    return total / sum(weights)


def _write_metrics(run: Path, history: list[dict[str, Any]], best: float, best_epoch: int,
                   best_dice: dict[str, float], cfg: TrainConfig, ctx: DistContext,
                   train_cases: list[dict[str, Any]], val_cases: list[dict[str, Any]], *,
                   stopped: bool, seconds: float, extra: dict[str, Any] | None = None) -> None:
    """``metrics.json``: best validation Dice per class (and its epoch), progress, provenance."""
    metrics = {
        "best_epoch": best_epoch or None,
        "best_val_dice": {k: (None if math.isnan(v) else v) for k, v in best_dice.items()},
        "best_val_dice_mean": best if best >= 0 else None,
        "epochs_completed": history[-1]["epoch"] if history else 0,
        "epochs_planned": cfg.epochs,
        "stopped_by_time_budget": stopped,
        "n_train_cases": len(train_cases),
        "n_val_cases": len(val_cases),
        "val_case_ids": [c["id"] for c in val_cases],
        "world_size": ctx.world_size,
        "seconds": round(seconds, 3),
        **(extra or {}),
    }
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------- train


@dataclass
class _Data:
    """The dataset as the run sees it (step 1)."""

    ds: Any
    declared: dict[int, str]
    labels: dict[int, str]
    remap: dict[int, int] | None
    train_cases: list[dict[str, Any]]
    val_cases: list[dict[str, Any]]


@dataclass
class _Progress:
    """What a checkpoint carries besides the weights and optimiser (step 3: resume)."""

    start_epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    best_dice: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] | None = None


@dataclass
class _Engine:
    """Network, optimiser, schedule, AMP and loss of the run (step 2)."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    loss_fn: Any
    use_amp: bool
    amp_dtype: Any


def _check_dataset(cfg: TrainConfig, ctx: DistContext) -> _Data:
    """Step 1: rank 0 validates the dataset (headers of every file; a bad dataset stops every
    rank), then the classes and the train/validation split."""
    problem: MedsegError | None = None
    if ctx.is_main:
        try:
            load_dataset(cfg.dataset, format=cfg.format, labels=cfg.labels, validate=True)
        except MedsegError as exc:
            problem = exc
    problem = broadcast_object(problem, ctx)
    if problem is not None:
        raise problem
    ds = load_dataset(cfg.dataset, format=cfg.format, labels=cfg.labels, validate=False)
    declared = dict(sorted(ds.labels.items()))
    labels, remap = select_classes(declared, cfg.classes)
    train_cases, val_cases = split_cases(ds, val_fraction=cfg.val_fraction, seed=cfg.seed)
    if not train_cases:
        raise InputError(f"{Path(cfg.dataset).name}: no case left for training after the split")
    return _Data(ds, declared, labels, remap, train_cases, val_cases)


def _patch_and_spec(cfg: TrainConfig, data: _Data) -> tuple[tuple[int, ...], dict[str, Any], dict[str, Any]]:
    """The patch size, the network spec and the run's ``model_spec.json`` object."""
    patch = tuple(cfg.patch_size) if cfg.patch_size else None
    net_dims = None
    if isinstance(cfg.network, dict) and "spatial_dims" in cfg.network:
        net_dims = int(cfg.network["spatial_dims"])
    if patch is None:
        data_dims = net_dims or len(read_grid(data.train_cases[0]["image"][0])[0])
        patch = (256, 256) if data_dims == 2 else (96, 96, 64)
    spec = resolve_network_spec(cfg.network, spatial_dims=len(patch), in_channels=data.ds.n_channels,
                                out_channels=max(data.labels) + 1)
    model_spec = ModelSpec(
        network=spec, preset=cfg.preset, labels=data.labels, roi_size=patch, overlap=cfg.overlap,
        sw_batch_size=cfg.sw_batch_size, postprocess=dict(cfg.postprocess), task="semantic",
        preset_overrides={k: list(v) if isinstance(v, (tuple, list)) else v for k, v in cfg.preset_overrides.items()},
    ).to_json()
    return patch, spec, model_spec


def _init_state(path: Path) -> dict[str, Any]:
    """The state dict of ``cfg.init_weights`` (ConfigError when missing or not safe torch weights)."""
    from medseg.models.weights import read_state_dict

    if not path.is_file():
        raise ConfigError(f"init_weights: {path.name} does not exist")
    return read_state_dict(path, error=ConfigError, what=f"init_weights: {path.name}")


def _build_engine(cfg: TrainConfig, ctx: DistContext, spec: dict[str, Any]) -> _Engine:
    """Step 2: the network initialised from ``seed``, AdamW, the LR schedule, AMP, DiceCE."""
    from monai.losses import DiceCELoss

    from medseg.models import build_network

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = build_network(spec)
    if cfg.init_weights is not None:
        from medseg.models.weights import load_into

        load_into(model, _init_state(Path(cfg.init_weights)), error=ConfigError,
                  what=f"init_weights: {Path(cfg.init_weights).name} does not fit the network")
    model = model.to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    _lr_factor(cfg.scheduler, 0, cfg.epochs, cfg.warmup_epochs)  # validates the name early
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: _lr_factor(cfg.scheduler, e, cfg.epochs, cfg.warmup_epochs))
    use_amp = cfg.amp and ctx.device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    return _Engine(model, optimizer, scheduler, scaler, loss_fn, use_amp, amp_dtype)


def _resume(cfg: TrainConfig, ctx: DistContext, last_path: Path, eng: _Engine, spec: dict[str, Any],
            model_spec: dict[str, Any], flips: Any) -> _Progress:
    """Step 3: a fresh start, or the interrupted run's state from ``last.pt`` (checked to be the
    same network, labels and flips)."""
    prog = _Progress()
    if cfg.resume:
        ck = torch.load(last_path, map_location="cpu", weights_only=True)
        if ck.get("model_spec", {}).get("network") != spec:
            raise ConfigError("--resume: the network spec differs from the interrupted run's")
        if ck["model_spec"].get("labels") != model_spec["labels"]:
            raise ConfigError("--resume: the dataset labels differ from the interrupted run's")
        before = ck.get("flip_plan")
        if before is not None and list(before["axes"]) != list(flips.axes):
            axes = ",".join(str(a) for a in before["axes"]) or "none"
            raise ConfigError(f"--resume: the interrupted run flipped axes {list(before['axes'])}, this one "
                              f"would flip {list(flips.axes)}; pass --flip-axes {axes} to continue it")
        eng.model.load_state_dict(ck["state_dict"])
        eng.optimizer.load_state_dict(ck["optimizer"])
        eng.scheduler.load_state_dict(ck["scheduler"])
        eng.scaler.load_state_dict(ck["scaler"])
        prog = _Progress(start_epoch=int(ck["epoch"]), best=float(ck["best_metric"]), best_epoch=int(ck["best_epoch"]),
                         best_dice=dict(ck["best_dice"]), history=list(ck["history"]),
                         rng=ck["rng"][ctx.rank] if ctx.rank < len(ck["rng"]) else ck["rng"][0])
    if prog.start_epoch >= cfg.epochs:
        raise ConfigError(f"--resume: the run already finished {prog.start_epoch} epochs; "
                          "raise --epochs to train further")
    return prog


def _datasets(cfg: TrainConfig, ctx: DistContext, data: _Data, patch: tuple[int, ...], workers: int, show: bool):
    """Step 4: the cached training set (random patches after the cache) and this rank's share of
    the validation cases (cached preprocessed, and as case dicts for deployment validation)."""
    from monai.data import CacheDataset

    from medseg.training.pipeline import base_transforms, training_transforms

    train_tf = training_transforms(cfg.preset, data.declared, patch, modality=data.ds.modality, remap=data.remap,
                                   num_samples=cfg.num_samples, pos=cfg.pos, neg=cfg.neg,
                                   augmentation=cfg.augmentation, preset_overrides=cfg.preset_overrides)
    train_ds = CacheDataset(case_dicts(data.train_cases), transform=train_tf, cache_rate=cfg.cache_rate,
                            num_workers=max(1, workers), progress=show, copy_cache=True)
    my_val = case_dicts(data.val_cases)[ctx.rank::ctx.world_size]
    val_ds = None
    if cfg.validation == "network":
        val_ds = CacheDataset(my_val, transform=base_transforms(cfg.preset, data.declared, remap=data.remap,
                                                                preset_overrides=cfg.preset_overrides),
                              cache_rate=cfg.cache_rate, num_workers=max(1, workers), progress=False)
    return train_tf, train_ds, my_val, val_ds


def _loader(cfg: TrainConfig, ctx: DistContext, train_ds: Any, epoch: int, workers: int, seed: int):
    """This epoch's shuffled loader (seeded from ``(seed, epoch, rank)``)."""
    from monai.data import DataLoader, list_data_collate
    from torch.utils.data import DistributedSampler, RandomSampler

    gen = torch.Generator().manual_seed(seed)
    if ctx.distributed:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(train_ds, generator=gen)
    return DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=list_data_collate, generator=gen, pin_memory=ctx.device.type == "cuda")


def _train_epoch(cfg: TrainConfig, ctx: DistContext, eng: _Engine, net: torch.nn.Module, loader: Any,
                 epoch: int, show: bool) -> tuple[float, int, float]:
    """Step 5: one pass over the loader; returns (mean loss over all ranks, patches seen here, lr)."""
    from tqdm.auto import tqdm

    net.train()
    loss_sum = torch.zeros(2, dtype=torch.float64)
    seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
    for batch in bar:
        x = batch["image"].to(ctx.device, non_blocking=True)
        y = batch["label"].to(ctx.device, non_blocking=True)
        eng.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, dtype=eng.amp_dtype, enabled=eng.use_amp):
            out = net(x)
            loss = _loss_value(eng.loss_fn, out, y)
        eng.scaler.scale(loss).backward()
        eng.scaler.step(eng.optimizer)
        eng.scaler.update()
        loss_sum += torch.tensor([float(loss.detach()) * x.shape[0], x.shape[0]], dtype=torch.float64)
        seen += int(x.shape[0])
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    lr_used = eng.optimizer.param_groups[0]["lr"]
    eng.scheduler.step()
    tot = all_reduce_sum(loss_sum, ctx).cpu()
    return float(tot[0] / max(tot[1], 1)), seen, lr_used


def _validate(cfg: TrainConfig, ctx: DistContext, eng: _Engine, net: torch.nn.Module, data: _Data,
              patch: tuple[int, ...], model_spec: dict[str, Any], val_ds: Any, my_val: list[dict[str, Any]],
              row: dict[str, Any]) -> None:
    """Step 6: validation Dice per class (and loss on the network grid) into ``row``."""
    n_out = max(data.labels) + 1
    net.eval()
    if cfg.validation == "deployment":
        from medseg.training.pipeline import LoadCased

        sums = validate_deployment(eng.model, model_spec, my_val, n_out=n_out, device=ctx.device, amp=eng.use_amp,
                                   load_case=LoadCased(sorted(data.declared), remap=data.remap))
    else:
        sums = validate_network_grid(eng.model, val_ds, patch=patch, sw_batch_size=cfg.sw_batch_size,
                                     overlap=cfg.overlap, loss_fn=eng.loss_fn, n_out=n_out, device=ctx.device,
                                     amp_dtype=eng.amp_dtype, use_amp=eng.use_amp)
    tot = all_reduce_sum(sums, ctx).cpu()
    row["val_loss"] = float(tot[-2] / max(tot[-1], 1)) if cfg.validation == "network" else None
    per = {}
    for v, name in data.labels.items():
        cnt = float(tot[n_out + v])
        per[name] = float(tot[v] / cnt) if cnt > 0 else float("nan")
        row[f"val_dice_{name}"] = per[name]
    finite = [x for x in per.values() if not math.isnan(x)]
    row["val_dice_mean"] = float(np.mean(finite)) if finite else float("nan")


def _checkpoint(cfg: TrainConfig, ctx: DistContext, eng: _Engine, prog: _Progress, data: _Data,
                paths: tuple[Path, Path], epoch: int, improved: bool, model_spec: dict[str, Any],
                flips: Any, t_start: float) -> None:
    """Step 7: ``last.pt`` every epoch, ``best.pt`` when validation improved (or at the end
    without validation cases), the log, curves and metrics (rank 0)."""
    last_path, best_path = paths
    rngs = all_gather_objects(rng_state(), ctx)
    if ctx.is_main:
        payload = {"state_dict": eng.model.state_dict(), "epoch": epoch + 1,
                   "optimizer": eng.optimizer.state_dict(), "scheduler": eng.scheduler.state_dict(),
                   "scaler": eng.scaler.state_dict(), "rng": rngs, "best_metric": prog.best,
                   "best_epoch": prog.best_epoch, "best_dice": prog.best_dice, "history": prog.history,
                   "model_spec": model_spec, "seed": cfg.seed, "flip_plan": flips.as_dict()}
        _save_checkpoint(last_path, payload)
        if improved or (not data.val_cases and epoch + 1 == cfg.epochs):
            _save_checkpoint(best_path, payload)
        run = last_path.parent.parent
        write_log_csv(prog.history, data.labels, run / "log.csv")
        plot_curves(prog.history, data.labels, run / "curves.png")
        _write_metrics(run, prog.history, prog.best, prog.best_epoch, prog.best_dice, cfg, ctx, data.train_cases,
                       data.val_cases, stopped=False, seconds=time.monotonic() - t_start)
    barrier(ctx)
