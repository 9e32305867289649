"""Grounding DINO and OWLv2 through HuggingFace ``transformers`` (pure PyTorch, pip-installable).

Both load from a local directory (``save_pretrained`` layout, e.g. made by ``partslip models
download``) or a hub id, run all K views of a shape in as few forward passes as ``batch_size``
allows (one for the reference K=10), optionally under fp16 autocast on CUDA, and share the
threshold / per-class NMS / top-k post-processing of ``postprocess.py``.

transformers is imported inside the loading functions only, so importing this module is cheap.
The code uses APIs that exist in transformers 4.46 (the Docker image, for GLIP's sake) and 5.x.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from partslip_core.config import DetectorConfig
from partslip_core.detect.base import DetectorError
from partslip_core.models import looks_like_path
from partslip_core.detect.postprocess import PostprocessSettings, check_views, cxcywh_to_xyxy, postprocess_view
from partslip_core.detect.prompts import (DEFAULT_OWL_TEMPLATE, GroundingPrompt, build_grounding_prompt,
                                          build_owl_queries, normalize_part_names, phrases_to_part_indices,
                                          positive_map, token_part_index)
from partslip_core.types import InputError, RenderedViews, ViewDetections, resolve_device

log = logging.getLogger(__name__)

DEFAULT_HUB_IDS = {
    "grounding_dino": "IDEA-Research/grounding-dino-base",
    "owlv2": "google/owlv2-base-patch16-ensemble",
}
DEFAULT_MODEL_NAMES = {"grounding_dino": "grounding_dino_base", "owlv2": "owlv2_base"}  # models.yaml entries
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


# ----------------------------------------------------------------------------------------------- loading

def resolve_source(weights: str, backend: str) -> str:
    """Where to load from: ``weights`` (a folder, a hub id, or a known model name such as
    "grounding_dino_tiny"); empty = the default model. Known names resolve to their models-dir copy
    when present, else to their hub id."""
    from partslip_core.models import KNOWN_MODELS, local_model_path  # light module, no heavy imports
    if weights and Path(weights).expanduser().exists():
        return str(Path(weights).expanduser())
    name = weights or DEFAULT_MODEL_NAMES[backend]
    spec = KNOWN_MODELS.get(name)
    if spec is None:
        return weights
    if spec.backend != backend:
        raise DetectorError(f"{backend}: {name!r} is a {spec.backend} model; choose one of "
                            f"{sorted(n for n, s in KNOWN_MODELS.items() if s.backend == backend)}")
    local = local_model_path(name)
    return str(local) if local is not None else spec.repo_id


def _offline() -> bool:
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):
        return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def hub_downloads_allowed() -> bool:
    """Go to the HuggingFace hub only when asked (``PARTSLIP_ALLOW_DOWNLOAD=1``): a missing model otherwise
    fails at once from the local folder / cache check instead of after ~27 s of hub retries."""
    asked = os.environ.get("PARTSLIP_ALLOW_DOWNLOAD", "0") not in ("", "0", "false", "False")
    return asked and not _offline()


def _download_hint(backend: str) -> str:
    name = DEFAULT_MODEL_NAMES.get(backend, backend)
    return (f"On a machine with network run `partslip models download {name}` (or `huggingface-cli download "
            f"{DEFAULT_HUB_IDS.get(backend, '<hub id>')} --local-dir models/{name}`), copy the folder to this machine "
            f"and set detector.weights to it (or put it under $PARTSLIP_MODELS_DIR, default ./models). "
            f"See models/README.md.")


def check_local_model_dir(path: Path, backend: str) -> None:
    """A save_pretrained folder needs config, weights, processor and tokenizer files; say which are missing."""
    if not path.is_dir():
        raise DetectorError(f"{backend}: {path} is a file, not a model folder (expected a save_pretrained "
                            f"directory with config.json and model.safetensors)")
    present = {p.name for p in path.iterdir()}
    wanted = {"config": ("config.json",), "weights": _WEIGHT_FILES, "processor config": _PROCESSOR_FILES,
              "tokenizer": _TOKENIZER_FILES}
    missing = [f"{what} ({' or '.join(names)})" for what, names in wanted.items() if not present.intersection(names)]
    if missing:
        raise DetectorError(f"{backend}: model folder {path} is incomplete, missing: {'; '.join(missing)}. "
                            + _download_hint(backend))


def _load_config(source: str, backend: str, expected_type: str, local_only: bool = False) -> Any:
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except Exception as error:  # OSError (offline / not cached / no such repo), ValueError (bad id), ...
        offline = " (HF_HUB_OFFLINE is set, so only the local cache was searched)" if _offline() else (
            " (only the local cache was searched: set PARTSLIP_ALLOW_DOWNLOAD=1 to let it download)" if local_only
            else "")
        raise DetectorError(f"{backend}: could not load {source!r}: it is not a local folder and the "
                            f"HuggingFace hub or its cache did not provide it{offline}: {type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}. " + _download_hint(backend)) from error
    if config.model_type != expected_type:
        raise DetectorError(f"{backend}: {source!r} holds a {config.model_type!r} model, but this backend needs "
                            f"{expected_type!r}: pick the matching detector.backend or weights")
    return config


def load_pretrained(model_class: str, processor_class: str, source: str, backend: str, expected_type: str) -> tuple:
    """(model in eval mode on CPU, processor) from a local folder or hub id; every failure is a DetectorError."""
    import transformers
    local = Path(source).expanduser()
    if local.exists():
        check_local_model_dir(local, backend)
        source = str(local)
    elif looks_like_path(source):
        raise DetectorError(f"{backend}: model folder {source!r} does not exist. " + _download_hint(backend))
    local_only = local.exists() or not hub_downloads_allowed()  # local files / the cache first: fail fast
    config = _load_config(source, backend, expected_type, local_only)
    try:
        model, info = getattr(transformers, model_class).from_pretrained(source, config=config, output_loading_info=True,
                                                                         local_files_only=local_only)
    except Exception as error:
        text = str(error)
        if "mismatch" in text or ("size" in text and "shape" in text):
            raise DetectorError(f"{backend}: the weights in {source!r} do not match the architecture in its "
                                f"config.json ({type(error).__name__}: {text[:300]}): wrong or mixed-up files") from error
        raise DetectorError(f"{backend}: the weights in {source!r} could not be read ({type(error).__name__}: "
                            f"{text[:300]}); the file is probably truncated or corrupt: download it again. "
                            + _download_hint(backend)) from error
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise DetectorError(f"{backend}: the checkpoint in {source!r} does not match the {model_class} architecture: "
                            f"{len(missing)} weight(s) missing or of the wrong shape (e.g. {missing[:3]}); "
                            "it is the wrong file or a partial download")
    try:
        processor = getattr(transformers, processor_class).from_pretrained(source, local_files_only=local_only)
    except Exception as error:
        raise DetectorError(f"{backend}: the processor/tokenizer files in {source!r} could not be loaded "
                            f"({type(error).__name__}: {str(error)[:300]})") from error
    return model.eval(), processor


def _device(device: str) -> torch.device:
    try:
        return resolve_device(device)
    except RuntimeError as error:
        raise DetectorError(str(error)) from error


def settings_from_config(config: DetectorConfig) -> PostprocessSettings:
    return PostprocessSettings(score_threshold=config.score_threshold, nms_iou=config.nms_iou,
                               max_detections=config.max_detections_per_view)


# ----------------------------------------------------------------------------------------------- detectors

class _HFDetector:
    """Shared batching / autocast / post-processing; subclasses turn a batch into per-query candidates."""

    name = "hf"
    model_class = ""
    processor_class = ""
    model_type = ""
    # Set when the folder was made by `partslip finetune`: {category: part names}; detect() accepts only these.
    tuned_parts: dict[str, tuple[str, ...]] | None = None
    source = "the given model"

    def __init__(self, model: Any, processor: Any, settings: PostprocessSettings, device: torch.device | str = "cpu",
                 batch_size: int = 10, half_precision: bool = False) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.settings = settings
        self.batch_size = int(batch_size)
        self.half = bool(half_precision) and self.device.type == "cuda"

    @classmethod
    def from_config(cls, config: DetectorConfig, device: str = "cpu", **kwargs: Any) -> "_HFDetector":
        target = _device(device)
        source = resolve_source(config.weights, cls.name)
        model, processor = load_pretrained(cls.model_class, cls.processor_class, source, cls.name, cls.model_type)
        log.info("%s: loaded %s on %s%s", cls.name, source, target, " (fp16 autocast)" if config.half_precision
                 and target.type == "cuda" else "")
        detector = cls(model, processor, settings_from_config(config), target, config.batch_size,
                       config.half_precision, **kwargs)
        from partslip_core.finetune.metadata import tuned_part_lists  # light: json + prompts only
        detector.source = source
        detector.tuned_parts = tuned_part_lists(source) if Path(source).expanduser().is_dir() else None
        return detector

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if self.half else contextlib.nullcontext()

    def detect(self, views: RenderedViews, part_names: Sequence[str],
               point_fields: Optional[Mapping[str, np.ndarray]] = None) -> list[ViewDetections]:
        """Exactly K ViewDetections; labels index the (normalized) ``part_names`` order (reads the images only:
        ``point_fields`` is ignored)."""
        names = normalize_part_names(part_names)
        if self.tuned_parts is not None:
            from partslip_core.finetune.metadata import check_tuned_parts
            check_tuned_parts(self.tuned_parts, names, self.source)
        images = check_views(views)
        height, width = images.shape[1:3]
        text = self._prepare_text(names)
        results: list[ViewDetections] = []
        for start in range(0, len(images), self.batch_size):
            batch = [image for image in images[start:start + self.batch_size]]
            with torch.inference_mode(), self._autocast():
                boxes, scores, labels = self._infer(batch, text, (height, width))
            results.extend(postprocess_view(boxes[i], scores[i], labels[i], (height, width), self.settings, len(names))
                           for i in range(len(batch)))
        return results

    def _to_device(self, inputs: Any) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def _prepare_text(self, names: list[str]) -> Any:
        raise NotImplementedError

    def _infer(self, batch: list[np.ndarray], text: Any, image_hw: tuple[int, int]) -> tuple:
        raise NotImplementedError


@dataclass(frozen=True)
class _GroundingText:
    prompt: GroundingPrompt
    positive: torch.Tensor | None  # (P, max_text_len) token -> part averaging; None = phrase mapping
    input_ids: tuple[int, ...] = ()  # the caption's token ids the positive map was built from


class GroundingDinoDetector(_HFDetector):
    """Grounding DINO: one caption "arm . back . leg ." for all parts; a query's score for part p is the mean
    sigmoid over p's tokens (as the official span grounding and GLIP do), its label the best part.

    ``span_mapping=False`` instead maps the processor's decoded phrases back to parts (for tokenizers
    that cannot return character offsets).
    """

    name = "grounding_dino"
    model_class = "GroundingDinoForObjectDetection"
    processor_class = "GroundingDinoProcessor"
    model_type = "grounding-dino"

    def __init__(self, *args: Any, span_mapping: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.span_mapping = span_mapping

    def _prepare_text(self, names: list[str]) -> _GroundingText:
        prompt = build_grounding_prompt(names)
        max_len = int(self.model.config.max_text_len)
        if not self.span_mapping:
            return _GroundingText(prompt, None)
        try:
            encoded = self.processor.tokenizer(prompt.text, return_offsets_mapping=True)
        except NotImplementedError:  # slow tokenizer: no offsets
            log.warning("grounding_dino: tokenizer cannot return offsets; mapping decoded phrases to parts instead")
            self.span_mapping = False
            return _GroundingText(prompt, None)
        if len(encoded["input_ids"]) > max_len:
            raise InputError(f"the prompt {prompt.text!r} has {len(encoded['input_ids'])} tokens; Grounding DINO "
                             f"reads at most {max_len}: use fewer or shorter part names")
        token_part = token_part_index(np.asarray(encoded["offset_mapping"]), prompt.spans)
        return _GroundingText(prompt, torch.from_numpy(positive_map(token_part, prompt.num_parts, max_len)),
                              tuple(int(i) for i in encoded["input_ids"]))

    def _infer(self, batch: list[np.ndarray], text: _GroundingText, image_hw: tuple[int, int]) -> tuple:
        inputs = self.processor(images=batch, text=[text.prompt.text] * len(batch), return_tensors="pt")
        if text.positive is not None and tuple(inputs["input_ids"][0, :len(text.input_ids)].tolist()) != text.input_ids:
            raise DetectorError("grounding_dino: the processor tokenized the caption differently from its tokenizer; "
                                "token-to-part spans would be misaligned")
        outputs = self.model(**self._to_device(inputs))
        if text.positive is None:
            return self._phrase_candidates(outputs, inputs["input_ids"], text.prompt, image_hw)
        probs = outputs.logits.float().sigmoid()  # (B, Q, max_text_len), 0 beyond the caption
        part_scores = probs @ text.positive.to(probs.device).T  # (B, Q, P)
        scores, labels = part_scores.max(dim=-1)
        height, width = image_hw
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=probs.device)
        return cxcywh_to_xyxy(outputs.pred_boxes.float()) * scale, scores, labels

    def _phrase_candidates(self, outputs: Any, input_ids: torch.Tensor, prompt: GroundingPrompt,
                           image_hw: tuple[int, int]) -> tuple:
        """Fallback: the processor's post-processing (text labels) + phrase -> part index mapping."""
        sizes = [image_hw] * int(input_ids.shape[0])
        # Positional arguments: the threshold is named box_threshold in transformers 4.x, threshold in 5.x.
        results = self.processor.post_process_grounded_object_detection(
            outputs, input_ids.to(outputs.logits.device), self.settings.score_threshold, 0.25, sizes)
        boxes, scores, labels = [], [], []
        for result in results:
            phrases = result["text_labels"] if "text_labels" in result else result["labels"]
            labels.append(torch.from_numpy(phrases_to_part_indices(list(phrases), prompt.part_names)))
            boxes.append(result["boxes"].float().cpu())
            scores.append(result["scores"].float().cpu())
        return boxes, scores, labels


class Owlv2Detector(_HFDetector):
    """OWLv2: one text query per part (``query_template``); a patch's label is its best-scoring query."""

    name = "owlv2"
    model_class = "Owlv2ForObjectDetection"
    processor_class = "Owlv2Processor"
    model_type = "owlv2"

    def __init__(self, *args: Any, query_template: str = DEFAULT_OWL_TEMPLATE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.query_template = query_template

    def _prepare_text(self, names: list[str]) -> list[str]:
        return build_owl_queries(names, self.query_template)

    def _infer(self, batch: list[np.ndarray], queries: list[str], image_hw: tuple[int, int]) -> tuple:
        inputs = self.processor(text=[queries] * len(batch), images=batch, return_tensors="pt", truncation=True)
        outputs = self.model(**self._to_device(inputs))
        scores, labels = outputs.logits.float().sigmoid().max(dim=-1)  # (B, patches)
        # OWLv2 pads each image to a square (bottom/right) before resizing: boxes are relative to that square.
        side = float(max(image_hw))
        return cxcywh_to_xyxy(outputs.pred_boxes.float()) * side, scores, labels
