"""``finetune()``: render labelled shapes, train the detector, evaluate a held-out split before/after, save.

The saved folder is a normal save_pretrained model folder plus ``partslip_finetune.json`` (the part
lists it was tuned on, checked when the detector loads it, and a record of the run). Point the pipeline
or the node at it with ``detector.weights: models/my_category`` (``detector.backend`` = the trained backend).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from partslip_core.config import PipelineConfig
from partslip_core.detect.base import DetectorError
from partslip_core.finetune.backends import TrainingBackend, training_backend, words_for
from partslip_core.finetune.data import LabeledShape, load_shapes, split_holdout
from partslip_core.finetune.evaluation import comparison_rows, evaluate_shapes, format_table
from partslip_core.finetune.metadata import write_metadata
from partslip_core.finetune.views import AugmentConfig, batches, build_training_set
from partslip_core.threads import torch_threads
from partslip_core.types import InputError, resolve_device

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Training settings. Either ``init`` (pretrained weights: folder, known model name or hub id; "" = the
    backend's default model) or ``scratch`` (a preset name "tiny"/"small" or a JSON of sizes: random
    weights and a tokenizer built from the part names) gives the starting model."""

    backend: str = "grounding_dino"  # grounding_dino | owlv2
    init: str = ""
    scratch: str = ""
    steps: int = 300  # optimizer steps
    batch_size: int = 4  # images per forward pass
    accumulate: int = 1  # forward passes per optimizer step (effective batch = batch_size * accumulate)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05  # linear warm-up, then cosine decay to 0
    grad_clip: float = 0.1  # max gradient norm (DETR's value); 0 = off
    freeze_backbones: bool = False  # train only fusion / heads / projections (prompt-tuning style)
    fp16: bool = True  # autocast + gradient scaling on CUDA; ignored on CPU
    seed: int = 0
    holdout: float = 0.25  # per category: a fraction (< 1) or a count (>= 1) of shapes held out for evaluation
    eval_before: bool = True  # also evaluate the starting model on the held-out split
    time_limit_s: float = 0.0  # > 0: stop training after this many seconds (fewer steps, recorded); 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if bool(self.init) and bool(self.scratch):
            raise InputError("give either init (pretrained weights) or scratch (a config to train from), not both")
        for name in ("steps", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise InputError(f"finetune {name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0 or self.holdout < 0 or not 0 <= self.warmup_fraction < 1:
            raise InputError("finetune lr must be > 0, holdout >= 0, warmup_fraction in [0, 1)")


@dataclass
class FinetuneResult:
    output_dir: Path
    losses: list[float]  # per optimizer step (mean over its forward passes)
    eval_rows: list[dict]  # comparison_rows(): per held-out category and the mean
    train_seconds: float
    num_train_images: int
    table: str = ""

    def relative_loss_drop(self, window: int = 5) -> float:
        """1 - mean(last ``window`` losses) / mean(first ``window``)."""
        first, last = np.mean(self.losses[:window]), np.mean(self.losses[-window:])
        return float(1.0 - last / first)


def lr_factor(progress: float, warmup_fraction: float) -> float:
    """Linear warm-up over ``warmup_fraction`` of training, then cosine decay to 0; progress in [0, 1]."""
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    rest = (progress - warmup_fraction) / max(1e-9, 1.0 - warmup_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))


def train(trainer: TrainingBackend, images: Sequence, config: FinetuneConfig, device: torch.device,
          progress: bool = True) -> list[float]:
    """Optimize the model on ``images``; returns the loss of every optimizer step."""
    from tqdm import tqdm
    if not images:
        raise InputError("no training images: no labelled part is visible in any render of the training shapes")
    torch.manual_seed(config.seed)
    model = trainer.model.to(device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    half = config.fp16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=half)
    sampler = batches(len(images), min(config.batch_size, len(images)), np.random.default_rng(config.seed))
    losses, smoothed = [], None
    bar = tqdm(range(config.steps), desc=f"fine-tuning {trainer.name}", disable=not progress)
    started = time.perf_counter()
    for step in bar:
        if config.time_limit_s > 0 and time.perf_counter() - started > config.time_limit_s:
            log.warning("fine-tuning stopped by time_limit_s=%.0f after %d of %d steps", config.time_limit_s, step,
                        config.steps)
            break
        # Progress is steps done, or time used when a time limit is set (the schedule then ends on time).
        elapsed = (time.perf_counter() - started) / config.time_limit_s if config.time_limit_s > 0 else 0.0
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(max(step / config.steps, elapsed), config.warmup_fraction)
        step_loss = 0.0
        for _ in range(config.accumulate):
            with torch.autocast("cuda", dtype=torch.float16, enabled=half):
                loss, _parts = trainer.loss(images, next(sampler).tolist(), device)
            if not torch.isfinite(loss):
                raise DetectorError(f"the training loss became {float(loss)}: lower the learning rate (now {config.lr})")
            scaler.scale(loss / config.accumulate).backward()
            step_loss += float(loss.detach()) / config.accumulate
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        smoothed = step_loss if smoothed is None else 0.9 * smoothed + 0.1 * step_loss
        bar.set_postfix(loss=f"{smoothed:.3f}")
    model.eval()
    return losses


def finetune(data: str | Path | Sequence[LabeledShape], output_dir: str | Path, config: FinetuneConfig | None = None,
             pipeline: PipelineConfig | None = None, part_names: Optional[Sequence[str]] = None,
             eval_shapes: Optional[Sequence[LabeledShape]] = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune ``config.backend`` on labelled shapes (a folder, see ``data.load_shapes``, or LabeledShapes).

    ``pipeline`` supplies the renderer, normalization, detector thresholds and device used for training
    and evaluation (default: the reference preset). Held-out shapes come from ``eval_shapes`` when given,
    else from ``config.holdout``. Prints nothing; the result holds the losses and the before/after table.
    """
    config = config or FinetuneConfig()
    pipeline = pipeline or PipelineConfig()
    shapes = list(data) if not isinstance(data, (str, Path)) else load_shapes(data, part_names)
    if eval_shapes is None:
        train_shapes, held_out = split_holdout(shapes, config.holdout, config.seed)
    else:
        train_shapes, held_out = shapes, list(eval_shapes)
    part_lists = {s.category: tuple(s.part_names) for s in train_shapes}
    device = resolve_device(pipeline.device)
    backend = training_backend(config.backend)
    detector_config = dataclasses.replace(pipeline.detector, backend=config.backend)
    with torch_threads(pipeline.cpu_threads), tempfile.TemporaryDirectory() as scratch_dir:
        trainer = backend.load_start(config.init, config.scratch, words_for(list(part_lists.values()),
                                     detector_config.query_template), Path(scratch_dir), config.seed,
                                     detector_config.query_template)
        if config.freeze_backbones:
            log.info("froze %d backbone tensors", trainer.freeze_backbones())
        trainer.model.to(device)
        before = (evaluate_shapes(held_out, pipeline, trainer.detector(detector_config, device), progress, "eval before")
                  if held_out and config.eval_before else None)
        images = build_training_set(train_shapes, pipeline, config.augment, config.seed, progress)
        started = time.perf_counter()
        losses = train(trainer, images, config, device, progress)
        seconds = time.perf_counter() - started
        after = evaluate_shapes(held_out, pipeline, trainer.detector(detector_config, device), progress,
                                "eval after") if held_out else []
        rows = comparison_rows(before, after) if held_out else []
        out = Path(output_dir).expanduser()
        trainer.save(out)
    record = {"start": config.init or ("scratch:" + str(config.scratch) if config.scratch else "default"),
              "training": {k: v for k, v in dataclasses.asdict(config).items() if k != "augment"},
              "augment": dataclasses.asdict(config.augment),
              "render": {"image_size": pipeline.render.image_size, "point_radius": pipeline.render.point_radius,
                         "up_axis": pipeline.normalize.up_axis},
              "train_shapes": [f"{s.category}/{s.shape_id}" for s in train_shapes],
              "held_out_shapes": [f"{s.category}/{s.shape_id}" for s in held_out],
              "train_images": len(images), "train_seconds": round(seconds, 1),
              "loss_first": losses[0], "loss_last": losses[-1], "held_out": rows}
    write_metadata(out, config.backend, part_lists, json.loads(json.dumps(record, default=_json_default)))
    return FinetuneResult(out, losses, rows, seconds, len(images), format_table(rows) if rows else "")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
