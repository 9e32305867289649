"""What differs between detectors when training: inputs, targets, loss, frozen parts, and the runtime detector.

Grounding DINO: one caption per image ("arm . back . leg ."); targets are phrase indices (= part indices)
and transformers' ``GroundingDinoForObjectDetection`` computes the matching loss itself (focal class
loss over the phrase tokens + L1 + GIoU, two-stage and auxiliary decoder losses included).
OWLv2: one query per part ("a photo of a {part}"); the loss is ``losses.matched_detection_loss``.
Both start from a save_pretrained folder / known model / hub id (``load_start``) or from a scratch config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from partslip_core.config import DetectorConfig
from partslip_core.detect.base import DetectorError
from partslip_core.detect.hf import GroundingDinoDetector, Owlv2Detector, load_pretrained, resolve_source, \
    settings_from_config
from partslip_core.detect.prompts import build_grounding_prompt, build_owl_queries
from partslip_core.finetune import scratch
from partslip_core.finetune.losses import matched_detection_loss, xyxy_to_cxcywh
from partslip_core.finetune.views import TrainingImage

_DELIMITERS = (0, 101, 102, 1012, 1029)  # [PAD] [CLS] [SEP] "." "?": Grounding DINO's phrase delimiters


class TrainingBackend:
    """A model + processor being trained; subclasses implement the detector-specific parts."""

    name = ""
    detector_class: type = object

    def __init__(self, model: Any, processor: Any, query_template: str = "a photo of a {part}") -> None:
        self.model = model
        self.processor = processor
        self.query_template = query_template
        self._pixels: dict[int, torch.Tensor] = {}
        self.cache_bytes = 2 << 30  # preprocessed images kept in memory up to this size (then per batch)

    # --- starting weights
    @classmethod
    def load_start(cls, init: str, scratch_config: str | dict, words: Sequence[str], scratch_dir: Path,
                   seed: int, query_template: str) -> "TrainingBackend":
        if scratch_config:
            builder = scratch.build_scratch_grounding_dino if cls.name == "grounding_dino" else scratch.build_scratch_owlv2
            model, processor = builder(words, scratch.preset(scratch_config), scratch_dir, seed)
        else:
            detector = cls.detector_class
            source = resolve_source(init, cls.name)
            model, processor = load_pretrained(detector.model_class, detector.processor_class, source, cls.name,
                                               detector.model_type)
        return cls(model, processor, query_template)

    def freeze_backbones(self) -> int:
        """Freeze the image and text encoders (train the fusion / heads / projections); returns frozen tensors."""
        frozen = 0
        for module in self._backbones():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                frozen += 1
        return frozen

    def _backbones(self) -> list[torch.nn.Module]:
        raise NotImplementedError

    # --- images
    def pixel_values(self, images: Sequence[TrainingImage], indices: Sequence[int]) -> torch.Tensor:
        """(B, 3, h, w) model inputs; each image is preprocessed once and cached (renders are fixed)."""
        missing = [i for i in indices if i not in self._pixels]
        fresh = {}
        if missing:
            processed = self.processor.image_processor(images=[images[i].image for i in missing], return_tensors="pt")
            fresh = dict(zip(missing, processed["pixel_values"]))
            if sum(t.numel() * t.element_size() for t in self._pixels.values()) < self.cache_bytes:
                self._pixels.update(fresh)
        return torch.stack([self._pixels[i] if i in self._pixels else fresh[i] for i in indices])

    # --- training step
    def loss(self, images: Sequence[TrainingImage], indices: Sequence[int], device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def detector(self, config: DetectorConfig, device: torch.device) -> Any:
        """The runtime detector around the model being trained (for the held-out evaluation)."""
        kwargs = {"query_template": self.query_template} if self.name == "owlv2" else {}
        return self.detector_class(self.model, self.processor, settings_from_config(config), device,
                                   config.batch_size, config.half_precision, **kwargs)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)


def _normalized_targets(image: TrainingImage) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (T,), boxes (T, 4) cxcywh) normalized by the longer side (square renders: by the size)."""
    height, width = image.image.shape[:2]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return torch.from_numpy(image.labels), xyxy_to_cxcywh(torch.from_numpy(image.boxes) / scale).clamp(0.0, 1.0)


class GroundingDinoTraining(TrainingBackend):
    name = "grounding_dino"
    detector_class = GroundingDinoDetector

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._captions: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}

    def _backbones(self) -> list[torch.nn.Module]:
        return [self.model.model.backbone, self.model.model.text_backbone]

    def _caption(self, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if names not in self._captions:
            text = build_grounding_prompt(names).text
            encoded = self.processor.tokenizer(text, return_tensors="pt")
            ids = encoded["input_ids"][0]
            if len(ids) > int(self.model.config.max_text_len):
                raise DetectorError(f"grounding_dino: the caption {text!r} has {len(ids)} tokens, more than the model's "
                                    f"max_text_len {self.model.config.max_text_len}")
            delimiter = torch.isin(ids, torch.tensor(_DELIMITERS))
            groups = int(torch.unique(torch.cumsum(delimiter, 0)[~delimiter]).numel())
            if groups != len(names):  # transformers' label maps count phrases between delimiter tokens
                raise DetectorError(f"grounding_dino: the caption {text!r} splits into {groups} phrases for "
                                    f"{len(names)} parts: this tokenizer does not give '.' the id 1012 (bert-base-uncased)")
            self._captions[names] = {k: v[0] for k, v in encoded.items()}
        return self._captions[names]

    def loss(self, images, indices, device):
        captions = [self._caption(images[i].part_names) for i in indices]
        length = max(len(c["input_ids"]) for c in captions)
        text = {key: torch.stack([torch.nn.functional.pad(c[key], (0, length - len(c[key]))) for c in captions])
                for key in captions[0]}
        pixels = self.pixel_values(images, indices)
        labels = []
        for i in indices:
            class_labels, boxes = _normalized_targets(images[i])
            labels.append({"class_labels": class_labels.to(device), "boxes": boxes.to(device)})
        inputs = {k: v.to(device) for k, v in text.items()}
        outputs = self.model(pixel_values=pixels.to(device), pixel_mask=torch.ones(pixels.shape[0], *pixels.shape[2:],
                             dtype=torch.long, device=device), labels=labels, **inputs)
        parts = {k: float(v.detach()) for k, v in (outputs.loss_dict or {}).items() if k in ("loss_ce", "loss_bbox", "loss_giou")}
        return outputs.loss, parts


class Owlv2Training(TrainingBackend):
    name = "owlv2"
    detector_class = Owlv2Detector

    def _backbones(self) -> list[torch.nn.Module]:
        return [self.model.owlv2.vision_model, self.model.owlv2.text_model]

    def loss(self, images, indices, device):
        queries = [build_owl_queries(images[i].part_names, self.query_template) for i in indices]
        max_queries = max(len(q) for q in queries)
        flat = [q for qs in queries for q in qs + [""] * (max_queries - len(qs))]
        max_length = int(self.model.config.text_config.max_position_embeddings)
        encoded = self.processor.tokenizer(flat, padding="max_length", max_length=max_length, truncation=True,
                                           return_tensors="pt")
        padded = torch.tensor([j >= len(qs) for qs in queries for j in range(max_queries)])
        encoded["input_ids"][padded] = 0  # OWLv2 treats a query whose first token is 0 as padding
        pixels = self.pixel_values(images, indices)
        outputs = self.model(input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device),
                             pixel_values=pixels.to(device))
        targets = []
        for i in indices:
            class_labels, boxes = _normalized_targets(images[i])
            targets.append({"class_labels": class_labels.to(device), "boxes": boxes.to(device)})
        return matched_detection_loss(outputs.logits, outputs.pred_boxes, targets, [len(q) for q in queries])


BACKENDS: dict[str, type[TrainingBackend]] = {"grounding_dino": GroundingDinoTraining, "owlv2": Owlv2Training}


def training_backend(name: str) -> type[TrainingBackend]:
    if name not in BACKENDS:
        raise DetectorError(f"partslip finetune trains {' or '.join(BACKENDS)}; got {name!r}"
                            + (" (GLIP prompt tuning needs the GLIP build of the Docker image and is not "
                               "implemented here: see models/README.md)" if name == "glip" else ""))
    return BACKENDS[name]


def words_for(part_lists: Sequence[Sequence[str]], query_template: str) -> list[str]:
    """The vocabulary a scratch tokenizer needs: part-name words plus the OWL query template's words."""
    return scratch.vocabulary_words([n for names in part_lists for n in names] + [query_template.replace("{part}", "")])


def image_array_bytes(images: Sequence[TrainingImage]) -> int:
    return int(sum(np.asarray(i.image).nbytes for i in images))
