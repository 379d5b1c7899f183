"""The training loop (plain PyTorch): DiceCE loss, AdamW, cosine/poly LR, sliding-window validation,
best/last checkpoints, exact resume, seeded determinism, AMP on GPU, DDP under torchrun.

Run folder written by rank 0 (contract shared with inference and bundles)::

    RUN/model_spec.json      {"network", "preset", "labels", "inference": {...}, "task"}
    RUN/train_config.json    the configuration of the run (no patient data), with "flip_plan":
                             the augmentation's flipped voxel axes and why (see resolve_flip_axes)
    RUN/checkpoints/best.pt  {"state_dict", "epoch", "optimizer", "scheduler", "scaler", "rng", ...}
    RUN/checkpoints/last.pt  same, after the last finished epoch (what --resume restarts from)
    RUN/log.csv, RUN/curves.png, RUN/metrics.json

Reproducibility: the model is initialised from ``seed``; every epoch re-seeds the augmentation
chain and the data order from ``(seed, epoch, rank)``, and checkpoints carry the torch, numpy and
python RNG states, so a run interrupted after epoch k and resumed ends with the same weights as an
uninterrupted one (bit-for-bit on CPU with ``num_workers=0``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.inference.model_spec import ModelSpec
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.io.jsonfile import read_json_object
from medseg.settings import progress_enabled
from medseg.training.curves import plot_curves, write_log_csv
from medseg.training.datasets import case_dicts, load_dataset, read_grid, split_cases
from medseg.training.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)

ARCHS = ("unet", "dynunet", "segresnet")

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything a training run needs. Sizes are voxels; ``lr`` is AdamW's peak learning rate.

    ``batch_size`` volumes per step, each giving ``num_samples`` patches (foreground-balanced by
    ``pos:neg``), so a step sees ``batch_size * num_samples`` patches. ``patch_size`` None picks
    (96, 96, 64) for 3D networks and (256, 256) for 2D ones. ``num_workers`` None picks 0 on a
    machine with <= 2 cores, else min(4, cores // 2). ``max_minutes`` stops after the epoch in
    which the budget ran out (resume later with ``resume=True``). ``classes`` trains on a subset
    of the dataset's label names (renumbered 1..n in the given order; the others become background).
    ``preset_overrides`` replace parameters of the preset (e.g. ``{"target_spacing": [2.5, 2.5,
    2.5]}`` mm) for training and, through ``model_spec.json`` ``inference.preset_overrides``, for
    inference.
    """

    dataset: str | Path
    output: str | Path
    preset: str
    network: dict[str, Any] | str = "unet"
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    format: str = "auto"
    labels: dict[int, str] | None = None
    classes: list[str] | None = None
    epochs: int = 100
    patch_size: tuple[int, ...] | None = None
    batch_size: int = 2
    num_samples: int = 2
    pos: float = 1.0
    neg: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    val_every: int = 1
    val_fraction: float = 0.2
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    amp: bool = True
    max_minutes: float | None = None
    num_workers: int | None = None
    cache_rate: float = 1.0
    augmentation: Any = None
    overlap: float = 0.5
    sw_batch_size: int = 4
    postprocess: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = True
    progress: bool = True


# --------------------------------------------------------------------------------- helpers


def resolve_network_spec(network: dict[str, Any] | str, *, spatial_dims: int, in_channels: int,
                         out_channels: int) -> dict[str, Any]:
    """Network spec from a dict, a JSON string, a JSON file path or an arch name (unet, dynunet,
    segresnet); fills ``spatial_dims``/``in_channels``/``out_channels`` and checks given ones."""
    if isinstance(network, dict):
        spec = dict(network)
    elif isinstance(network, str) and network.strip().startswith("{"):
        try:
            spec = json.loads(network)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"network spec is not valid JSON ({exc.msg} at char {exc.pos})") from exc
    elif isinstance(network, str) and network.lower().endswith(".json"):
        p = Path(network)
        if not p.is_file():
            raise ConfigError(f"network spec file '{p.name}' not found")
        spec = read_json_object(p, error=ConfigError, name=f"network spec file '{p.name}'")
        spec = spec.get("network", spec)
    elif isinstance(network, str) and network.lower() in ARCHS:
        spec = {"arch": network.lower()}
    else:
        raise ConfigError(f"network '{network}' is neither JSON, a .json file nor one of {ARCHS}")
    if not isinstance(spec, dict) or "arch" not in spec:
        raise ConfigError("network spec must be a JSON object with an 'arch' key")
    for key, value in (("spatial_dims", spatial_dims), ("in_channels", in_channels),
                       ("out_channels", out_channels)):
        if key in spec and int(spec[key]) != value:
            raise ConfigError(f"network spec says {key}={spec[key]} but the data needs {value}")
        spec[key] = value
    return spec


def select_classes(labels: dict[int, str], classes: list[str] | None
                   ) -> tuple[dict[int, str], dict[int, int] | None]:
    """Keep the label ``classes`` (names) of ``labels``, renumbered 1..n in the given order.
    Returns (new labels, remap old value -> new value), or ``(labels, None)`` for all classes."""
    if not classes:
        return labels, None
    by_name = {v: k for k, v in labels.items()}
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise ConfigError(f"class '{missing[0]}' is not a label of the dataset; "
                          f"choose from {', '.join(labels.values())}")
    if len(set(classes)) != len(classes):
        raise ConfigError("a class is listed twice in classes")
    new = {i + 1: name for i, name in enumerate(classes)}
    return new, {by_name[name]: i for i, name in new.items()}


def _default_workers() -> int:
    n = os.cpu_count() or 1
    return 0 if n <= 2 else min(4, n // 2)


def _lr_factor(kind: str, epoch: int, epochs: int, warmup: int) -> float:
    """LR multiplier for (0-based) ``epoch``: linear warm-up, then cosine to 0 or poly (0.9)."""
    if warmup > 0 and epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    span = max(1, epochs - warmup)
    t = min(1.0, (epoch - warmup) / span)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "poly":
        return (1.0 - t) ** 0.9
    raise ConfigError(f"scheduler '{kind}' unknown; use cosine or poly")


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (keys sorted, raw tensor bytes): equal digests = equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    """torch/numpy/python RNG states as tensors and plain lists, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (no pickled numpy objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(pystate), "gauss": pygauss},
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _progress_enabled(cfg: TrainConfig, ctx: DistContext) -> bool:
    return ctx.is_main and progress_enabled(cfg.progress)


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


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """Re-raise a MedsegError that MONAI wrapped in a RuntimeError ("applying transform ...")."""
    try:
        yield
    except RuntimeError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MedsegError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


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


def _json_config(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["dataset"], d["output"] = str(cfg.dataset), str(cfg.output)
    d["augmentation"] = asdict(cfg.augmentation) if cfg.augmentation is not None else None
    if d.get("labels"):
        d["labels"] = {str(k): v for k, v in d["labels"].items()}
    return d


# ---------------------------------------------------------------------------------- train


def train(config: TrainConfig, *, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
          ) -> Path:
    """Train a segmentation network on a dataset and return the run folder.

    Works in one process or under ``torchrun`` (DDP; rank 0 writes). ``on_epoch_end(epoch, row)``
    is called on every rank after each finished epoch and its checkpoint (epoch is 1-based).
    Raises InputError for a bad dataset, ConfigError for bad options.
    """
    cfg = config
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.val_every < 1 or cfg.lr <= 0:
        raise ConfigError("epochs, batch_size and val_every must be >= 1 and lr > 0")
    ctx = init_distributed(cfg.device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if cfg.deterministic:
            if ctx.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        with _typed_errors():
            return _train(cfg, ctx, on_epoch_end)
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_det_warn)
        cleanup(ctx)


def _train(cfg: TrainConfig, ctx: DistContext,
           on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> Path:
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot
    from torch.utils.data import DistributedSampler, RandomSampler
    from tqdm.auto import tqdm

    from medseg.models import build_network
    from medseg.training.pipeline import base_transforms, flip_plan, training_transforms
    from medseg.transforms.augment import seed_augmentation

    run = Path(cfg.output)
    ckpt_dir = run / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if not cfg.resume and last_path.exists():
        raise ConfigError(f"run folder '{run.name}' already holds a run; pass --resume to continue "
                          "it or choose another --output")
    if cfg.resume and not last_path.exists():
        raise ConfigError(f"--resume: no checkpoints/last.pt in '{run.name}'")

    # rank 0 validates the dataset (headers of every file); a bad dataset stops every rank
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

    patch = tuple(cfg.patch_size) if cfg.patch_size else None
    net_dims = None
    if isinstance(cfg.network, dict) and "spatial_dims" in cfg.network:
        net_dims = int(cfg.network["spatial_dims"])
    if patch is None:
        data_dims = net_dims or len(read_grid(train_cases[0]["image"][0])[0])
        patch = (256, 256) if data_dims == 2 else (96, 96, 64)
    spec = resolve_network_spec(cfg.network, spatial_dims=len(patch), in_channels=ds.n_channels,
                                out_channels=max(labels) + 1)
    model_spec = ModelSpec(
        network=spec, preset=cfg.preset, labels=labels, roi_size=patch, overlap=cfg.overlap,
        sw_batch_size=cfg.sw_batch_size, postprocess=dict(cfg.postprocess), task="semantic",
        preset_overrides={k: list(v) if isinstance(v, (tuple, list)) else v for k, v in cfg.preset_overrides.items()},
    ).to_json()
    flips = flip_plan(cfg.preset, declared, patch, augmentation=cfg.augmentation, remap=remap,
                      preset_overrides=cfg.preset_overrides)

    # model, optimiser, schedule -------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = build_network(spec).to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    _lr_factor(cfg.scheduler, 0, cfg.epochs, cfg.warmup_epochs)  # validates the name early
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: _lr_factor(cfg.scheduler, e, cfg.epochs, cfg.warmup_epochs))
    use_amp = cfg.amp and ctx.device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    n_out = max(labels) + 1

    start_epoch, best, best_epoch, best_dice, history = 0, -1.0, 0, {}, []
    resume_rng = None
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
        model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch = int(ck["epoch"])
        best, best_epoch = float(ck["best_metric"]), int(ck["best_epoch"])
        best_dice, history = dict(ck["best_dice"]), list(ck["history"])
        resume_rng = ck["rng"][ctx.rank] if ctx.rank < len(ck["rng"]) else ck["rng"][0]
    if start_epoch >= cfg.epochs:
        raise ConfigError(f"--resume: the run already finished {start_epoch} epochs; "
                          "raise --epochs to train further")

    net: torch.nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                      else None)

    # data ------------------------------------------------------------------------------------
    workers = _default_workers() if cfg.num_workers is None else int(cfg.num_workers)
    train_tf = training_transforms(cfg.preset, declared, patch, modality=ds.modality, remap=remap,
                                   num_samples=cfg.num_samples, pos=cfg.pos, neg=cfg.neg,
                                   augmentation=cfg.augmentation, preset_overrides=cfg.preset_overrides)
    show = _progress_enabled(cfg, ctx)
    train_ds = CacheDataset(case_dicts(train_cases), transform=train_tf, cache_rate=cfg.cache_rate,
                            num_workers=max(1, workers), progress=show, copy_cache=True)
    my_val = case_dicts(val_cases)[ctx.rank::ctx.world_size]
    val_ds = CacheDataset(my_val, transform=base_transforms(cfg.preset, declared, remap=remap,
                                                    preset_overrides=cfg.preset_overrides),
                          cache_rate=cfg.cache_rate, num_workers=max(1, workers), progress=False)
    dice_metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)

    # the run folder appears only once the data loaded and preprocessed without error
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "model_spec.json", json.dumps(model_spec, indent=2) + "\n")
        atomic_write_text(run / "train_config.json",
                          json.dumps({**_json_config(cfg), "flip_plan": flips.as_dict()}, indent=2) + "\n")
        log.info("augmentation flips voxel axes %s (%s): %s", list(flips.axes) or "none", flips.mode,
                 flips.reason)

    if resume_rng is not None:
        _set_rng_state(resume_rng)
    t_start = time.monotonic()
    patches_seen = 0
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.monotonic()
        epoch_seed = (cfg.seed * 1_000_003 + epoch * 7919 + ctx.rank) % 2**31
        seed_augmentation(train_tf, epoch_seed)
        gen = torch.Generator().manual_seed(epoch_seed)
        if ctx.distributed:
            sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                         shuffle=True, seed=cfg.seed, drop_last=False)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(train_ds, generator=gen)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                            collate_fn=list_data_collate, generator=gen,
                            pin_memory=ctx.device.type == "cuda")
        net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
        for batch in bar:
            x = batch["image"].to(ctx.device, non_blocking=True)
            y = batch["label"].to(ctx.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=use_amp):
                out = net(x)
                loss = _loss_value(loss_fn, out, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += torch.tensor([float(loss.detach()) * x.shape[0], x.shape[0]], dtype=torch.float64)
            patches_seen += int(x.shape[0])
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        lr_used = optimizer.param_groups[0]["lr"]
        scheduler.step()
        tot = all_reduce_sum(loss_sum, ctx).cpu()
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(tot[0] / max(tot[1], 1)),
                               "val_loss": None, "lr": lr_used}

        # validation ---------------------------------------------------------------------------
        do_val = bool(val_cases) and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
        if do_val:
            net.eval()
            sums = torch.zeros(2 * n_out + 2, dtype=torch.float64)  # dice sums, counts, loss, n
            with torch.no_grad():
                for i in range(len(val_ds)):
                    item = val_ds[i]
                    x = item["image"].as_tensor()[None].to(ctx.device)
                    y = item["label"].as_tensor()[None].to(ctx.device)
                    with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=use_amp):
                        logits = sliding_window_inference(x, patch, cfg.sw_batch_size, model,
                                                          overlap=cfg.overlap, mode="gaussian")
                    logits = logits.float()
                    sums[-2] += float(loss_fn(logits, y))
                    sums[-1] += 1
                    pred = one_hot(torch.argmax(logits, dim=1, keepdim=True), n_out)
                    d = dice_metric(pred, one_hot(y.long(), n_out))[0].double().cpu()
                    ok = ~torch.isnan(d)
                    sums[1:n_out][ok] += d[ok]
                    sums[n_out + 1:2 * n_out][ok] += 1
                dice_metric.reset()
            tot = all_reduce_sum(sums, ctx).cpu()
            row["val_loss"] = float(tot[-2] / max(tot[-1], 1))
            per = {}
            for v, name in labels.items():
                cnt = float(tot[n_out + v])
                per[name] = float(tot[v] / cnt) if cnt > 0 else float("nan")
                row[f"val_dice_{name}"] = per[name]
            finite = [x for x in per.values() if not math.isnan(x)]
            row["val_dice_mean"] = float(np.mean(finite)) if finite else float("nan")
        row["seconds"] = round(time.monotonic() - t0, 3)
        history.append(row)

        improved = do_val and not math.isnan(row["val_dice_mean"]) and row["val_dice_mean"] > best
        if improved:
            best, best_epoch = row["val_dice_mean"], epoch + 1
            best_dice = {n: row[f"val_dice_{n}"] for n in labels.values()}
        rngs = all_gather_objects(_rng_state(), ctx)
        if ctx.is_main:
            payload = {"state_dict": model.state_dict(), "epoch": epoch + 1,
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "scaler": scaler.state_dict(), "rng": rngs, "best_metric": best,
                       "best_epoch": best_epoch, "best_dice": best_dice, "history": history,
                       "model_spec": model_spec, "seed": cfg.seed, "flip_plan": flips.as_dict()}
            _save_checkpoint(last_path, payload)
            if improved or (not val_cases and epoch + 1 == cfg.epochs):
                _save_checkpoint(best_path, payload)
            write_log_csv(history, labels, run / "log.csv")
            plot_curves(history, labels, run / "curves.png")
            _write_metrics(run, history, best, best_epoch, best_dice, cfg, ctx, train_cases, val_cases,
                           stopped=False, seconds=time.monotonic() - t_start)
        barrier(ctx)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, dict(row))
        over = cfg.max_minutes is not None and time.monotonic() - t_start > cfg.max_minutes * 60
        if broadcast_object(bool(over), ctx) and epoch + 1 < cfg.epochs:
            stopped_early = True
            break

    digests = all_gather_objects(weights_digest(model), ctx)
    seen = all_gather_objects(patches_seen, ctx)
    if ctx.is_main:
        if not best_path.exists():  # no validation ever ran: best = last
            _save_checkpoint(best_path, torch.load(last_path, map_location="cpu", weights_only=True))
        _write_metrics(run, history, best, best_epoch, best_dice, cfg, ctx, train_cases, val_cases,
                       stopped=stopped_early, seconds=time.monotonic() - t_start,
                       extra={"weights_sha256_per_rank": digests, "patches_seen_per_rank": seen})
    barrier(ctx)
    return run
