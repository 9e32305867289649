"""GLIP, the paper's detector, through the official GLIP code (``maskrcnn_benchmark``), when installed.

maskrcnn_benchmark is a compiled CUDA extension that cannot be installed on every machine; it is built
in the Docker image (see Dockerfile). Everything that does not need it is a pure function here and is
unit-tested without it: the caption / entity spans, checkpoint reading (``weights_only=True``),
few-shot prompt checks and the conversion of GLIP's output (a ``BoxList``: ``.bbox`` (M, 4) in
``.mode`` "xyxy"/"xywh" for an image of ``.size`` (W, H), fields "scores" and "labels", labels
1-based entity indices into the caption's entities) into part-indexed boxes.

Few-shot checkpoints (PartSLIP's 8-shot prompt tuning) add a zero-initialized 1000 x 768 offset to
the text *token embeddings by position* (``tunable_linear.weight`` in GLIP's VLDyHead): they only mean
something for the exact prompt they were tuned on. The prompt is checked against, in this order, a
sidecar ``<checkpoint>.json`` holding ``{"part_names": [...]}``, a ``part_names`` entry inside the
checkpoint, or the known PartSLIP checkpoints by file name (models.py; a mismatch there only warns,
because that list is transcribed, not read from the checkpoint). Without any of these the prompt
cannot be checked: a warning says so.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import numpy as np
import torch

from partslip_core.config import DetectorConfig
from partslip_core.detect.base import DetectorError
from partslip_core.detect.postprocess import PostprocessSettings, check_views, postprocess_view
from partslip_core.detect.prompts import build_grounding_prompt, normalize_part_names
from partslip_core.types import RenderedViews, ViewDetections, resolve_device

log = logging.getLogger(__name__)

GLIP_MISSING_HELP = (
    "the 'glip' backend needs the official GLIP code (its compiled maskrcnn_benchmark package), which is "
    "not installed here. Either run in the project's Docker image (it builds GLIP; see README, `docker build` "
    "and `docker run --gpus all`), or choose detector.backend: grounding_dino or owlv2 (pure pip installs).")
PROMPT_OFFSET_SUFFIX = "tunable_linear.weight"
ENV_CONFIG = "PARTSLIP_GLIP_CONFIG"


def glip_available() -> bool:
    return importlib.util.find_spec("maskrcnn_benchmark") is not None


def glip_caption(part_names: Sequence[str]) -> tuple[str, list[list[list[int]]]]:
    """GLIP demo's caption for a list of names ("arm . back . leg . ") and one entity span per part.

    tokens_positive[p] = [[start, end]]: part p is entity p + 1 in GLIP's 1-based labels.
    """
    prompt = build_grounding_prompt(part_names, trailing_space=True)
    return prompt.text, [[list(span)] for span in prompt.spans]


# ----------------------------------------------------------------------------------------------- checkpoints

@dataclass
class GlipCheckpoint:
    """state_dict: name -> tensor; prompt_offset: (rows, text_dim) few-shot embedding offset or None when
    absent/all-zero; part_names: the tuned prompt if recorded; prompt_source: where that came from;
    prompt_authoritative: False when the prompt comes from the transcribed table (mismatch only warns)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    prompt_offset: Optional[torch.Tensor]
    part_names: Optional[tuple[str, ...]]
    prompt_source: str = ""
    prompt_authoritative: bool = False

    @property
    def is_few_shot(self) -> bool:
        return self.prompt_offset is not None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format


def read_checkpoint_file(path: str | Path) -> Any:
    """torch.load(weights_only=True) with one clear DetectorError for missing/corrupt/unsafe files."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DetectorError(f"GLIP checkpoint not found: {path}. Run `partslip models download glip_large` "
                            "(or a glip_fewshot_<category>) where network exists and set detector.weights")
    try:
        return _torch_load(path)
    except Exception as error:
        first = str(error).splitlines()[0][:300] if str(error) else ""
        raise DetectorError(f"GLIP checkpoint {path} cannot be read with torch.load(weights_only=True) "
                            f"({type(error).__name__}: {first}); it is truncated, corrupt or not a weights "
                            "file: download it again and check it with `partslip models verify`") from error


def extract_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    """GLIP checkpoints hold {"model": state_dict, ...} (or the bare state dict); keys may carry "module."."""
    state = raw.get("model") if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping) else raw
    if not isinstance(state, Mapping) or not state:
        raise DetectorError(f"{path} is not a GLIP checkpoint: expected a dict of tensors (or {{'model': ...}}); "
                            f"got {type(raw).__name__}")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    has_text = any("language_backbone" in k for k in tensors)
    has_head = any(".rpn." in f".{k}" for k in tensors)
    if not (has_text and has_head):
        raise DetectorError(f"{path} does not look like a GLIP checkpoint (no language_backbone / rpn weights "
                            f"among {len(tensors)} tensors): wrong file?")
    return tensors


def prompt_offset(state: Mapping[str, torch.Tensor]) -> Optional[torch.Tensor]:
    """The few-shot token-embedding offset (rows x text_dim) when present and non-zero, else None."""
    for key, value in state.items():
        if key.endswith(PROMPT_OFFSET_SUFFIX) and value.ndim == 2 and bool(value.abs().amax() > 0):
            return value
    return None


def _names_from(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DetectorError(f"{where}: 'part_names' must be a list of strings; got {value!r}")
    return tuple(normalize_part_names(list(value)))


def recorded_prompt(raw: Any, path: Path) -> tuple[Optional[tuple[str, ...]], str, bool]:
    """(part_names, source, authoritative) from a sidecar JSON, the checkpoint, or the known-model table."""
    for sidecar in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise DetectorError(f"few-shot prompt file {sidecar} is unreadable: {error}") from error
            if not isinstance(data, Mapping):
                raise DetectorError(f"{sidecar}: expected an object with 'part_names'")
            return _names_from(data.get("part_names"), str(sidecar)), f"sidecar {sidecar.name}", True
    if isinstance(raw, Mapping) and "part_names" in raw:
        return _names_from(raw["part_names"], str(path)), "checkpoint metadata", True
    from partslip_core.models import fewshot_part_names
    known = fewshot_part_names(path)
    if known is not None:
        return known, f"known PartSLIP checkpoint {path.name} (transcribed list)", False
    return None, "", False


def load_glip_checkpoint(path: str | Path) -> GlipCheckpoint:
    path = Path(path).expanduser()
    raw = read_checkpoint_file(path)
    state = extract_state_dict(raw, path)
    names, source, authoritative = recorded_prompt(raw, path)
    return GlipCheckpoint(path, state, prompt_offset(state), names, source, authoritative)


def check_fewshot_prompt(checkpoint: GlipCheckpoint, part_names: Sequence[str]) -> None:
    """A prompt-tuned checkpoint must get the prompt it was tuned on (same names, same order)."""
    if not checkpoint.is_few_shot:
        return
    names = tuple(normalize_part_names(part_names))
    if checkpoint.part_names is None:
        log.warning("GLIP checkpoint %s is prompt-tuned (few-shot) but records no prompt: it only works with the "
                    "exact part list, in the same order, that it was tuned on. Add %s with {\"part_names\": [...]} "
                    "to have this checked.", checkpoint.path, checkpoint.path.with_suffix(".json").name)
        return
    if names == checkpoint.part_names:
        return
    message = (f"GLIP few-shot checkpoint {checkpoint.path.name} was prompt-tuned on the parts "
               f"{list(checkpoint.part_names)} (in this order; from {checkpoint.prompt_source}) but was asked for "
               f"{list(names)}: its learned text offset is tied to the exact prompt")
    if checkpoint.prompt_authoritative:
        raise DetectorError(message + ". Use that part list, or the zero-shot glip_large checkpoint.")
    log.warning("%s. Results will likely be poor.", message)


def missing_model_keys(model_keys: Sequence[str], checkpoint_keys: Sequence[str]) -> list[str]:
    """Model weights the checkpoint does not provide (after GLIP's "module." prefix stripping)."""
    provided = {k[len("module."):] if k.startswith("module.") else k for k in checkpoint_keys}
    return [k for k in model_keys if k not in provided]


# ----------------------------------------------------------------------------------------------- outputs

def _xyxy(prediction: Any) -> torch.Tensor:
    boxes = torch.as_tensor(prediction.bbox).float().reshape(-1, 4)
    mode = getattr(prediction, "mode", "xyxy")
    if mode == "xywh":  # maskrcnn_benchmark's convention: w = x2 - x1 + 1
        x, y, w, h = boxes.unbind(-1)
        boxes = torch.stack([x, y, x + (w - 1).clamp(min=0), y + (h - 1).clamp(min=0)], dim=-1)
    elif mode != "xyxy":
        raise DetectorError(f"unexpected GLIP box mode {mode!r} (expected xyxy or xywh)")
    return boxes


def convert_glip_prediction(prediction: Any, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A GLIP BoxList -> (boxes (M, 4) xyxy pixels of the original view, scores (M,), part labels (M,) 0-based).

    The BoxList's ``size`` is (width, height) of the image the model saw (after GLIP's resize); boxes
    are scaled to ``image_hw``. GLIP labels are 1-based entity indices, so part = label - 1; labels
    outside the caption's entities become -1 and are dropped by post-processing.
    """
    boxes = _xyxy(prediction)
    scores = torch.as_tensor(prediction.get_field("scores")).float().reshape(-1)
    labels = torch.as_tensor(prediction.get_field("labels")).long().reshape(-1) - 1
    if not (len(boxes) == len(scores) == len(labels)):
        raise DetectorError(f"GLIP output has {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    seen_w, seen_h = (float(s) for s in getattr(prediction, "size", (image_hw[1], image_hw[0])))
    height, width = image_hw
    scale = torch.tensor([width / seen_w, height / seen_h, width / seen_w, height / seen_h])
    return boxes * scale, scores, labels


# ----------------------------------------------------------------------------------------------- detector

def import_glip() -> SimpleNamespace:
    """The few GLIP entry points we use; DetectorError with instructions when GLIP is absent or broken."""
    if not glip_available():
        raise DetectorError(GLIP_MISSING_HELP)
    try:
        from maskrcnn_benchmark.config import cfg
        from maskrcnn_benchmark.engine.predictor_glip import (
            GLIPDemo, create_positive_map, create_positive_map_label_to_token_from_positive_map)
        from maskrcnn_benchmark.structures.image_list import to_image_list
        from maskrcnn_benchmark.utils.model_serialization import load_state_dict
    except Exception as error:  # ImportError (e.g. transformers too new for GLIP's code), missing _C, nltk ...
        raise DetectorError(f"maskrcnn_benchmark is installed but GLIP failed to import ({type(error).__name__}: "
                            f"{error}). GLIP's code needs transformers<4.47 (the Docker image pins 4.46.3) and a "
                            "build matching this torch/CUDA. " + GLIP_MISSING_HELP) from error
    return SimpleNamespace(cfg=cfg, GLIPDemo=GLIPDemo, create_positive_map=create_positive_map,
                           label_to_token=create_positive_map_label_to_token_from_positive_map,
                           to_image_list=to_image_list, load_state_dict=load_state_dict)


def resolve_glip_paths(config: DetectorConfig) -> tuple[Path, Path]:
    """(checkpoint, GLIP YAML config): detector.weights / .config_file, else models dir / $PARTSLIP_GLIP_CONFIG."""
    import os

    from partslip_core.models import get_spec, model_path
    weights = Path(config.weights).expanduser() if config.weights else model_path(get_spec("glip_large"))
    config_file = config.config_file or os.environ.get(ENV_CONFIG, "")
    if not config_file:
        raise DetectorError("GLIP needs its model config: set detector.config_file to GLIP's "
                            "configs/glip_Swin_L_pt.yaml (zero-shot and few-shot GLIP-L) or export "
                            f"{ENV_CONFIG} (the Docker image sets it)")
    if not Path(config_file).expanduser().is_file():
        raise DetectorError(f"GLIP config file not found: {config_file}")
    return weights, Path(config_file).expanduser()


def _build_demo(api: SimpleNamespace, config_file: Path, device: torch.device) -> Any:
    cfg = api.cfg.clone()
    cfg.local_rank, cfg.num_gpus = 0, 1  # as PartSLIP's loader sets them
    cfg.merge_from_file(str(config_file))
    # No MODEL.WEIGHT: GLIPDemo then skips its own (unrestricted) checkpoint load; we load with weights_only.
    cfg.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", str(device), "OUTPUT_DIR", tempfile.mkdtemp()])
    try:
        return api.GLIPDemo(cfg, min_image_size=800, confidence_threshold=0.7, show_mask_heatmaps=False)
    except OSError as error:  # bert-base-uncased not cached, ...
        raise DetectorError(f"GLIP could not build its model ({error}). Offline machines need bert-base-uncased "
                            "in the HuggingFace cache and nltk's punkt/averaged_perceptron_tagger data; see "
                            "models/README.md") from error


def _load_weights(api: SimpleNamespace, demo: Any, checkpoint: GlipCheckpoint) -> None:
    model_keys = list(demo.model.state_dict().keys())
    missing = [k for k in missing_model_keys(model_keys, list(checkpoint.state_dict))
               if not k.endswith(PROMPT_OFFSET_SUFFIX)]
    if len(missing) > 0.5 * len(model_keys):
        raise DetectorError(f"{checkpoint.path.name} provides only {len(model_keys) - len(missing)} of the "
                            f"{len(model_keys)} weights this GLIP config needs: checkpoint and config do not match "
                            "(e.g. GLIP-T weights with the Swin-L config)")
    if missing:
        log.warning("GLIP: %d model weights not in %s (e.g. %s)", len(missing), checkpoint.path.name, missing[:3])
    if checkpoint.is_few_shot and not any(k.endswith(PROMPT_OFFSET_SUFFIX) for k in model_keys):
        raise DetectorError(f"{checkpoint.path.name} is a prompt-tuned (few-shot) checkpoint but the GLIP config "
                            "has no prompt offset layer: use configs/glip_Swin_L_pt.yaml "
                            "(MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER: True)")
    api.load_state_dict(demo.model, checkpoint.state_dict)
    demo.model.eval()


class GlipDetector:
    """GLIP-L/T zero-shot or few-shot; all views of a shape go through the model in batches of ``batch_size``.

    Runs in fp32 (as the reference does); ``half_precision`` is ignored for GLIP because its compiled
    deformable-convolution ops are not verified under autocast.
    """

    name = "glip"

    def __init__(self, api: SimpleNamespace, demo: Any, checkpoint: GlipCheckpoint, settings: PostprocessSettings,
                 device: torch.device, batch_size: int = 10) -> None:
        self.api, self.demo, self.checkpoint = api, demo, checkpoint
        self.settings, self.device, self.batch_size = settings, device, int(batch_size)

    @classmethod
    def from_config(cls, config: DetectorConfig, device: str = "cuda") -> "GlipDetector":
        api = import_glip()
        try:
            target = resolve_device(device)
        except RuntimeError as error:
            raise DetectorError(str(error)) from error
        if target.type != "cuda":
            raise DetectorError("GLIP (maskrcnn_benchmark) runs on CUDA only (its deformable convolutions have no "
                                "CPU kernels): set device: cuda, or use grounding_dino/owlv2 on CPU")
        weights, config_file = resolve_glip_paths(config)
        checkpoint = load_glip_checkpoint(weights)
        demo = _build_demo(api, config_file, target)
        _load_weights(api, demo, checkpoint)
        settings = PostprocessSettings(config.score_threshold, config.nms_iou, config.max_detections_per_view)
        return cls(api, demo, checkpoint, settings, target, config.batch_size)

    def detect(self, views: RenderedViews, part_names: Sequence[str],
               point_fields: Optional[Mapping[str, np.ndarray]] = None) -> list[ViewDetections]:
        """Exactly K ViewDetections from the images (``point_fields`` is ignored)."""
        names = normalize_part_names(part_names)
        check_fewshot_prompt(self.checkpoint, names)
        caption, tokens_positive = glip_caption(names)
        tokenized = self.demo.tokenizer([caption], return_tensors="pt")
        positive = self.api.create_positive_map(tokenized, tokens_positive)
        label_to_token = self.api.label_to_token(positive, plus=1)  # VLDyHead: 1-based entity labels
        images = check_views(views)
        height, width = images.shape[1:3]
        results: list[ViewDetections] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            predictions = self._forward(batch, caption, label_to_token)
            for prediction in predictions:
                boxes, scores, labels = convert_glip_prediction(prediction.to("cpu"), (height, width))
                results.append(postprocess_view(boxes, scores, labels, (height, width), self.settings, len(names)))
        return results

    def _forward(self, batch: np.ndarray, caption: str, label_to_token: dict) -> list:
        # GLIP's transforms expect OpenCV-style BGR uint8 (the reference flips RGB -> BGR before calling GLIP).
        tensors = [self.demo.transforms(np.ascontiguousarray(image[:, :, ::-1])) for image in batch]
        image_list = self.api.to_image_list(tensors, self.demo.cfg.DATALOADER.SIZE_DIVISIBILITY).to(self.device)
        with torch.inference_mode():
            outputs = self.demo.model(image_list, captions=[caption] * len(tensors), positive_map=label_to_token)
        return list(outputs[0] if isinstance(outputs, tuple) else outputs)  # some forks also return features
