"""Stage 3b (optional): SAM mask refinement, the PartSLIP++ step. Each detected box prompts SAM in its view.

A box covers its part and whatever lies behind or beside it (a mug handle's box covers part of the
body); a mask does not. ``SamMaskRefiner.refine`` turns every box of every view into a (H, W) bool
mask that voting (``vote_evidence.points_inside_masks``) uses instead of the rectangle.

Batching: the image encoder runs on ``batch_size`` views per pass; the mask decoder then takes all
boxes of those views as prompts in one pass (views padded to the same box count; a pass holds at
most ``max_prompts`` boxes so memory stays bounded). fp16 autocast on CUDA; the same code on CPU.
Preprocessing (resize the longest side, normalize, pad) and mask post-processing (upsample, crop
the padding, resize, threshold) are done in torch on the model's device with the numbers read
from the checkpoint's SamProcessor, so nothing loops over images on the CPU.

Weights: a known model name (``sam_vit_base`` ...; the models-dir copy), a save_pretrained folder or
a hub id. Hub ids are read from the local HuggingFace cache only unless ``allow_download`` is set,
so a robot without network fails at once with the ``partslip models download`` fix. Checkpoints are
read as safetensors, or ``.bin`` after a ``torch.load(weights_only=True)`` check.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from partslip_core.config import MaskConfig
from partslip_core.detect.base import DetectorError
from partslip_core.models import looks_like_path
from partslip_core.types import RenderedViews, ViewDetections, resolve_device

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sam_vit_base"  # partslip_core.models entry used when masks.weights is empty
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


class MaskError(DetectorError):
    """SAM could not be loaded or run (missing or corrupt weights, wrong model type, OOM ...)."""


@runtime_checkable
class MaskRefiner(Protocol):
    """Turns the boxes of K views into masks: returns K ViewDetections with the same boxes and ``masks`` set."""

    name: str

    def refine(self, views: RenderedViews, detections: Sequence[ViewDetections]) -> list[ViewDetections]:
        ...


def _download_hint(name: str = DEFAULT_MODEL_NAME) -> str:
    from partslip_core.models import KNOWN_MODELS
    spec = KNOWN_MODELS.get(name) or KNOWN_MODELS[DEFAULT_MODEL_NAME]
    return (f"On a machine with network run `partslip models download {spec.name}` (or `huggingface-cli download "
            f"{spec.repo_id} --local-dir models/{spec.local_path}`), copy the folder to this machine and set "
            f"masks.weights to it (or put it under $PARTSLIP_MODELS_DIR, default ./models). See models/README.md.")


# ----------------------------------------------------------------------------------------------- loading

def resolve_sam_source(weights: str) -> str:
    """``weights`` as a folder, else a known model name (its models-dir copy, else its hub id), else a hub id."""
    from partslip_core.models import KNOWN_MODELS, local_model_path
    if weights and Path(weights).expanduser().exists():
        return str(Path(weights).expanduser())
    name = weights or DEFAULT_MODEL_NAME
    spec = KNOWN_MODELS.get(name)
    if spec is None:
        return weights
    if spec.backend != "sam":
        raise MaskError(f"masks: {name!r} is a {spec.backend} model, not SAM; choose one of "
                        f"{sorted(n for n, s in KNOWN_MODELS.items() if s.backend == 'sam')}")
    local = local_model_path(name)
    return str(local) if local is not None else spec.repo_id


def _known_sam_name(weights: str) -> str:
    """The known SAM model ``weights`` names or whose hub id it is; else the default (for download hints)."""
    from partslip_core.models import KNOWN_MODELS
    for name, spec in KNOWN_MODELS.items():
        if spec.backend == "sam" and weights in (name, spec.repo_id):
            return name
    return DEFAULT_MODEL_NAME


def _check_folder(path: Path, hint: str) -> None:
    if not path.is_dir():
        raise MaskError(f"masks: {path} is a file, not a SAM model folder (expected a save_pretrained directory "
                        "with config.json, model.safetensors and preprocessor_config.json)")
    present = {p.name for p in path.iterdir()}
    wanted = {"config": ("config.json",), "weights": _WEIGHT_FILES, "processor config": _PROCESSOR_FILES}
    missing = [f"{what} ({' or '.join(names)})" for what, names in wanted.items() if not present.intersection(names)]
    if missing:
        raise MaskError(f"masks: SAM folder {path} is incomplete, missing: {'; '.join(missing)}. " + hint)
    if "model.safetensors" not in present and "model.safetensors.index.json" not in present:
        from partslip_core.models import ModelError, open_weights
        try:  # a .bin checkpoint is opened with weights_only=True first: no pickled code runs
            open_weights(path / "pytorch_model.bin")
        except ModelError as error:
            raise MaskError(f"masks: {error}. " + hint) from error


def load_sam(source: str, allow_download: bool = False, model_name: str = DEFAULT_MODEL_NAME) -> tuple[Any, Any]:
    """(SamModel in eval mode on CPU, SamProcessor) from a folder or hub id; every failure is a MaskError
    whose fix names ``model_name`` (the known model to download)."""
    from transformers import SamModel, SamProcessor
    hint = _download_hint(model_name)
    local = Path(source).expanduser()
    if local.exists():
        _check_folder(local, hint)
        source = str(local)
    elif looks_like_path(source):
        raise MaskError(f"masks: SAM folder {source!r} does not exist. " + hint)
    hub_only = not local.exists()
    kwargs = {"local_files_only": hub_only and not allow_download}
    try:
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(source, **kwargs)
    except Exception as error:  # OSError: not cached / no such repo / offline
        where = "the hub did not provide it"
        if kwargs["local_files_only"]:
            where = ("it is not a local folder and the HuggingFace cache does not hold it (hub downloads are off: "
                     "set masks.allow_download to try the hub)")
        raise MaskError(f"masks: could not load SAM {source!r}: {where}: {type(error).__name__}: "
                        f"{str(error).splitlines()[0][:200] if str(error) else ''}. " + hint) from error
    if config.model_type != "sam":
        raise MaskError(f"masks: {source!r} holds a {config.model_type!r} model, not 'sam'")
    try:
        model, info = SamModel.from_pretrained(source, config=config, output_loading_info=True, **kwargs)
    except Exception as error:
        raise MaskError(f"masks: the SAM weights in {source!r} could not be read ({type(error).__name__}: "
                        f"{str(error)[:300]}); truncated, corrupt or the wrong file: download it again. "
                        + hint) from error
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise MaskError(f"masks: the checkpoint in {source!r} does not match its SAM config: {len(missing)} weight(s) "
                        f"missing or of the wrong shape (e.g. {sorted(missing)[:3]}); a partial or mixed-up download")
    try:
        processor = SamProcessor.from_pretrained(source, **kwargs)
    except Exception as error:
        raise MaskError(f"masks: the SamProcessor files in {source!r} could not be loaded "
                        f"({type(error).__name__}: {str(error)[:300]})") from error
    return model.eval(), processor


@dataclass(frozen=True)
class SamInputSpec:
    """What SAM's image processor does, as numbers: resize the longest side to ``longest_edge``, scale
    by ``rescale`` (1/255), normalize by mean/std, pad bottom/right with zeros to ``pad_hw``."""

    longest_edge: int
    pad_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float

    @staticmethod
    def from_processor(processor: Any) -> "SamInputSpec":
        image_processor = getattr(processor, "image_processor", processor)
        # sizes are dicts in transformers 4.x, SizeDict objects in 5.x
        value = lambda obj, key: obj[key] if isinstance(obj, dict) else getattr(obj, key)  # noqa: E731
        pad = image_processor.pad_size
        return SamInputSpec(longest_edge=int(value(image_processor.size, "longest_edge")),
                            pad_hw=(int(value(pad, "height")), int(value(pad, "width"))),
                            mean=tuple(float(m) for m in image_processor.image_mean),
                            std=tuple(float(s) for s in image_processor.image_std),
                            rescale=float(image_processor.rescale_factor))

    def resized_hw(self, height: int, width: int) -> tuple[int, int]:
        """The processor's rounding (get_preprocess_shape)."""
        scale = self.longest_edge / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)


# ----------------------------------------------------------------------------------------------- refiner

@dataclass
class MaskStats:
    """Counters over the refiner's life: boxes refined, and masks replaced by their box rectangle
    because SAM's mask was empty (after clipping) or scored below ``min_mask_score``."""

    boxes: int = 0
    box_fallbacks: int = 0


class SamMaskRefiner:
    """Box prompts -> SAM masks for every view. ``refine`` returns detections with ``masks`` (M, H, W) bool."""

    name = "sam"

    def __init__(self, model: Any, spec: SamInputSpec, device: torch.device | str = "cpu", batch_size: int = 10,
                 max_prompts: int = 256, half_precision: bool = True, multimask_output: bool = False,
                 mask_threshold: float = 0.0, clip_to_box: bool = True, clip_margin: float = 0.1,
                 min_mask_score: float = 0.0) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.batch_size, self.max_prompts = int(batch_size), int(max_prompts)
        self.half = bool(half_precision) and self.device.type == "cuda"
        self.multimask_output, self.mask_threshold = bool(multimask_output), float(mask_threshold)
        self.clip_to_box, self.clip_margin = bool(clip_to_box), float(clip_margin)
        self.min_mask_score = float(min_mask_score)
        self.stats = MaskStats()
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_config(cls, config: MaskConfig, device: str = "cpu") -> "SamMaskRefiner":
        try:
            target = resolve_device(device)
        except RuntimeError as error:
            raise MaskError(str(error)) from error
        source = resolve_sam_source(config.weights)
        model, processor = load_sam(source, config.allow_download, _known_sam_name(config.weights))
        log.info("masks: loaded SAM %s on %s%s", source, target, " (fp16 autocast)" if config.half_precision
                 and target.type == "cuda" else "")
        return cls(model, SamInputSpec.from_processor(processor), target, config.batch_size, config.max_prompts,
                   config.half_precision, config.multimask_output, config.mask_threshold, config.clip_to_box,
                   config.clip_margin, config.min_mask_score)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if self.half else contextlib.nullcontext()

    def refine(self, views: RenderedViews, detections: Sequence[ViewDetections]) -> list[ViewDetections]:
        """One ViewDetections per view, same boxes/labels/scores, ``masks`` from SAM (replacing any given)."""
        if len(detections) != views.num_views:
            raise ValueError(f"masks: {len(detections)} detections for {views.num_views} views")
        height, width = views.image_size
        masks = [np.zeros((d.num_boxes, height, width), bool) for d in detections]
        todo = [k for k, d in enumerate(detections) if d.num_boxes > 0]
        fallbacks_before = self.stats.box_fallbacks
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for k, view_masks in zip(chunk, self.predict(views.images[chunk], [detections[k].boxes for k in chunk])):
                masks[k] = view_masks
        fallbacks = self.stats.box_fallbacks - fallbacks_before
        if fallbacks:
            log.debug("masks: %d of %d boxes kept their rectangle (empty or low-scoring SAM mask)", fallbacks,
                      sum(d.num_boxes for d in detections))
        return [ViewDetections(d.boxes, d.labels, d.scores, m) for d, m in zip(detections, masks)]

    @torch.inference_mode()
    def predict(self, images: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """images: (B, H, W, 3) uint8; boxes: B arrays (M_b, 4) xyxy pixels -> B arrays (M_b, H, W) bool.

        One image-encoder pass for the B views, then mask-decoder passes over all their boxes.
        """
        height, width = images.shape[1:3]
        resized = self.spec.resized_hw(height, width)
        with self._autocast():
            embeddings = self.model.get_image_embeddings(self.preprocess(images))
        scale = torch.tensor([resized[1] / width, resized[0] / height] * 2, device=self.device)
        counts = [len(b) for b in boxes]
        views_per_pass = max(1, self.max_prompts // max(counts))
        results = []
        for start in range(0, len(boxes), views_per_pass):
            group = range(start, min(start + views_per_pass, len(boxes)))
            most = max(counts[b] for b in group)
            prompts = torch.stack([self._pad_boxes(boxes[b], most) for b in group]) * scale  # (b, most, 4)
            with self._autocast():
                out = self.model(image_embeddings=embeddings[group.start:group.stop], input_boxes=prompts,
                                 multimask_output=self.multimask_output)
            # (b, most, h, w) low-res logits and (b, most) predicted IoU
            logits, quality = self._best_mask(out.pred_masks.float(), out.iou_scores.float())
            for i, b in enumerate(group):
                results.append(self._to_image_masks(logits[i, :counts[b]], quality[i, :counts[b]], boxes[b],
                                                    resized, (height, width)))
        return results

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, pad_h, pad_w) float32 on the device, as SamProcessor does it
        (PIL's bilinear resize ~ torch's antialiased one, within one grey level)."""
        pixels = torch.as_tensor(np.ascontiguousarray(images), device=self.device).permute(0, 3, 1, 2).float()
        resized = self.spec.resized_hw(*images.shape[1:3])
        pixels = F.interpolate(pixels, size=resized, mode="bilinear", align_corners=False, antialias=True)
        pixels = (pixels.round().clamp(0, 255) * self.spec.rescale - self._mean) / self._std
        pad_h, pad_w = self.spec.pad_hw
        return F.pad(pixels, (0, pad_w - resized[1], 0, pad_h - resized[0]))

    def _pad_boxes(self, boxes: np.ndarray, count: int) -> torch.Tensor:
        """(M, 4) -> (count, 4) by repeating the first box: each prompt is decoded on its own, pads are cut off."""
        tensor = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        return torch.cat([tensor, tensor[:1].expand(count - len(tensor), 4)])

    def _best_mask(self, logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, m, n, h, w), (b, m, n) -> the mask with the best predicted IoU per box (n = 1 or 3)."""
        best = iou.argmax(dim=2)
        index = best[:, :, None, None, None].expand(-1, -1, 1, *logits.shape[-2:])
        return logits.gather(2, index)[:, :, 0], iou.gather(2, best[:, :, None])[:, :, 0]

    def _to_image_masks(self, logits: torch.Tensor, quality: torch.Tensor, boxes: np.ndarray,
                        resized: tuple[int, int], image_hw: tuple[int, int], chunk: int = 32) -> np.ndarray:
        """(M, h, w) low-res logits -> (M, H, W) bool: SamProcessor.post_process_masks, then
        ``clip_masks_to_boxes``. Done ``chunk`` masks at a time: an upsampled 1024 x 1024 float mask is 4 MB."""
        height, width = image_hw
        box_t = torch.as_tensor(boxes, dtype=torch.float32, device=self.device).reshape(-1, 4)
        out = []
        for start in range(0, len(logits), chunk):
            part = F.interpolate(logits[start:start + chunk, None], size=self.spec.pad_hw, mode="bilinear",
                                 align_corners=False)
            part = F.interpolate(part[..., :resized[0], :resized[1]], size=image_hw, mode="bilinear",
                                 align_corners=False)
            weak = quality[start:start + chunk] < self.min_mask_score if self.min_mask_score > 0 else None
            mask, fell_back = clip_masks_to_boxes(part[:, 0] > self.mask_threshold, box_t[start:start + chunk],
                                                  self.clip_margin if self.clip_to_box else None, weak)
            self.stats.box_fallbacks += int(fell_back.sum())
            out.append(mask.cpu().numpy())
        self.stats.boxes += len(boxes)
        return np.concatenate(out) if out else np.zeros((0, height, width), bool)


def clip_masks_to_boxes(masks: torch.Tensor, boxes: torch.Tensor, margin: float | None = 0.1,
                        weak: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each mask inside its box and never leave a box without pixels.

    masks: (M, H, W) bool (modified in place); boxes: (M, 4) float xyxy pixels; margin: the box grows by
    this fraction of its width/height on each side before clipping (None = no clipping); weak: optional
    (M,) bool, masks to replace anyway. A mask that is empty after clipping, or weak, becomes its box's
    rectangle (pixel centres strictly inside, voting's rule). Returns (masks, (M,) bool replaced).
    """
    height, width = masks.shape[1:]
    cols = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5  # pixel centres
    rows = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    boxes = boxes.to(device=masks.device, dtype=torch.float32)
    if margin is not None:  # broadcast the box's row and column ranges; no (M, H, W) rectangle is built
        grown = boxes + torch.tensor([-1.0, -1.0, 1.0, 1.0], device=masks.device) * margin * (
            boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        inside_y, inside_x = _box_ranges(grown, cols, rows)
        masks &= inside_y[:, :, None]
        masks &= inside_x[:, None, :]
    replace = ~masks.flatten(1).any(dim=1)
    if weak is not None:
        replace |= weak
    if bool(replace.any()):
        inside_y, inside_x = _box_ranges(boxes[replace], cols, rows)
        masks[replace] = inside_y[:, :, None] & inside_x[:, None, :]
    return masks, replace


def _box_ranges(boxes: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 4) xyxy boxes and pixel-centre coordinates (W,), (H,) -> rows (M, H) and columns (M, W) strictly
    inside each box (voting's rule); their outer product is the box's pixel rectangle."""
    inside_x = (cols[None, :] > boxes[:, 0, None]) & (cols[None, :] < boxes[:, 2, None])
    inside_y = (rows[None, :] > boxes[:, 1, None]) & (rows[None, :] < boxes[:, 3, None])
    return inside_y, inside_x
