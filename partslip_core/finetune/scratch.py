"""Small Grounding DINO / OWLv2 models built from a config with random weights, for training from scratch.

Pretrained weights are what users normally start from (``--init models/grounding_dino_tiny``); machines
without them (ours) can still train a small detector on their own renders. A scratch model has no
pretrained text encoder, so its tokenizer is built here from the training part names: every word of
every part name (and of the OWLv2 query template) is one token, and single letters cover any other
word (a word the model never saw in training carries no meaning for it).

Grounding DINO hard-codes bert-base-uncased's ids of [CLS] (101), [SEP] (102), "." (1012) and "?"
(1029) to delimit phrases, so the vocabulary keeps those ids.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any, Sequence

import torch

from partslip_core.detect.base import DetectorError

# name -> sizes. "tiny" is for tests (seconds), "small" for a CPU training run (minutes). Grounding DINO
# needs image_size >= 96: at 64 its last feature level is 1 x 1, which GroupNorm refuses for a single image.
SCRATCH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=96, embed_dim=8, depths=(1, 1, 1, 1), d_model=32, encoder_layers=1, decoder_layers=2,
                 ffn_dim=32, heads=2, num_queries=30, text_hidden=32, text_layers=1, patch_size=16),
    "small": dict(image_size=128, embed_dim=24, depths=(1, 1, 2, 1), d_model=64, encoder_layers=2, decoder_layers=3,
                  ffn_dim=128, heads=4, num_queries=40, text_hidden=64, text_layers=1, patch_size=8),
}
_WORD = re.compile(r"[a-z0-9]+")
_CHARS = string.ascii_lowercase + string.digits


def vocabulary_words(texts: Sequence[str]) -> list[str]:
    """Lowercase alphanumeric words of ``texts``, first-seen order, no duplicates."""
    return list(dict.fromkeys(word for text in texts for word in _WORD.findall(text.lower())))


def bert_vocab(words: Sequence[str]) -> list[str]:
    """A WordPiece vocabulary with Grounding DINO's delimiter ids at bert-base-uncased positions."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"[unused{i}]" for i in range(100, 100 + 1012 - len(tokens))] + ["."]
    tokens += [f"[unusedb{i}]" for i in range(1029 - len(tokens))] + ["?"]
    pieces = list(_CHARS) + [f"##{c}" for c in _CHARS]
    return tokens + [w for w in dict.fromkeys(list(words) + pieces) if w not in tokens]


def _transformers_major() -> int:
    import transformers
    return int(transformers.__version__.split(".")[0])


def build_bert_tokenizer(words: Sequence[str], scratch_dir: Path) -> Any:
    from transformers import BertTokenizerFast
    scratch_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = scratch_dir / "vocab.txt"
    vocab_file.write_text("\n".join(bert_vocab(words)) + "\n")
    if _transformers_major() >= 5:
        return BertTokenizerFast(vocab=str(vocab_file))
    return BertTokenizerFast(vocab_file=str(vocab_file))


def build_clip_tokenizer(words: Sequence[str], scratch_dir: Path, max_length: int = 16) -> Any:
    """A tiny BPE: single letters plus merges that make each known word one token."""
    from transformers import CLIPTokenizerFast
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for suffix in ("", "</w>"):
        for char in _CHARS:
            vocab[char + suffix] = len(vocab)
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{current} {piece}")
            current += piece
            vocab.setdefault(current, len(vocab))
    scratch_dir.mkdir(parents=True, exist_ok=True)
    (scratch_dir / "vocab.json").write_text(json.dumps(vocab))
    (scratch_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    files = (str(scratch_dir / "vocab.json"), str(scratch_dir / "merges.txt"))
    if _transformers_major() >= 5:
        return CLIPTokenizerFast(vocab=files[0], merges=files[1], model_max_length=max_length)
    return CLIPTokenizerFast(vocab_file=files[0], merges_file=files[1], model_max_length=max_length)


def preset(name: str | dict[str, Any]) -> dict[str, Any]:
    """A preset by name, or a JSON file / dict of overrides on top of "small"."""
    if isinstance(name, dict):
        overrides = name
    elif name in SCRATCH_PRESETS:
        return dict(SCRATCH_PRESETS[name])
    elif Path(name).is_file():
        overrides = json.loads(Path(name).read_text())
    else:
        raise DetectorError(f"scratch model config {name!r} is neither a preset ({', '.join(SCRATCH_PRESETS)}) "
                            "nor a JSON file")
    unknown = sorted(set(overrides) - set(SCRATCH_PRESETS["small"]))
    if unknown:
        raise DetectorError(f"unknown scratch model setting(s) {unknown}; known: {sorted(SCRATCH_PRESETS['small'])}")
    return {**SCRATCH_PRESETS["small"], **overrides}


def build_scratch_grounding_dino(words: Sequence[str], sizes: dict[str, Any], scratch_dir: Path, seed: int = 0
                                 ) -> tuple[Any, Any]:
    """(GroundingDinoForObjectDetection with random weights, its processor) for the given vocabulary."""
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)
    torch.manual_seed(seed)
    tokenizer = build_bert_tokenizer(words, scratch_dir / "bert")
    size, heads = int(sizes["image_size"]), int(sizes["heads"])
    backbone = SwinConfig(image_size=size, patch_size=4, embed_dim=int(sizes["embed_dim"]), depths=list(sizes["depths"]),
                          num_heads=[1, 2, 2, 4][:len(sizes["depths"])], window_size=4,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=int(sizes["text_hidden"]),
                      num_hidden_layers=int(sizes["text_layers"]), num_attention_heads=2,
                      intermediate_size=int(sizes["text_hidden"]), max_position_embeddings=128)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=int(sizes["d_model"]),
                                 encoder_layers=int(sizes["encoder_layers"]), decoder_layers=int(sizes["decoder_layers"]),
                                 encoder_ffn_dim=int(sizes["ffn_dim"]), decoder_ffn_dim=int(sizes["ffn_dim"]),
                                 encoder_attention_heads=heads, decoder_attention_heads=heads,
                                 num_queries=int(sizes["num_queries"]), encoder_n_points=2, decoder_n_points=2,
                                 max_text_len=64, auxiliary_loss=True)
    model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(
        size={"shortest_edge": size, "longest_edge": size}), tokenizer=tokenizer)
    return model, processor


def build_scratch_owlv2(words: Sequence[str], sizes: dict[str, Any], scratch_dir: Path, seed: int = 0) -> tuple[Any, Any]:
    """(Owlv2ForObjectDetection with random weights, its processor) for the given vocabulary."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(words, scratch_dir / "clip")
    hidden, size = int(sizes["d_model"]), int(sizes["image_size"])
    config = Owlv2Config(
        text_config=dict(vocab_size=len(tokenizer.get_vocab()), hidden_size=int(sizes["text_hidden"]),
                         intermediate_size=int(sizes["text_hidden"]) * 2, num_hidden_layers=int(sizes["text_layers"]),
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2),
        vision_config=dict(image_size=size, patch_size=int(sizes["patch_size"]), hidden_size=hidden,
                           intermediate_size=int(sizes["ffn_dim"]),
                           num_hidden_layers=int(sizes["encoder_layers"]) + int(sizes["decoder_layers"]),
                           num_attention_heads=int(sizes["heads"])),
        projection_dim=hidden)
    model = Owlv2ForObjectDetection(config)
    with torch.no_grad():  # start every patch's box at its own cell (the box bias), as DETR-style heads do:
        model.box_head.dense2.weight.zero_()  # random init saturates the sigmoid (zero-size boxes, no gradient)
        model.box_head.dense2.bias.zero_()
        # Class logits = (cosine + shift) * scale: start at shift -1.5, scale 2.5 (prior ~2 % per patch, as
        # RetinaNet-style focal-loss training starts); a random scale can start at 0 (elu floor), where it stays.
        for head, bias in ((model.class_head.logit_shift, -1.5), (model.class_head.logit_scale, 1.5)):
            head.weight.zero_()
            head.bias.fill_(bias)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": size, "width": size}),
                               tokenizer=tokenizer)
    return model, processor
