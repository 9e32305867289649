"""Tiny random-weight Grounding DINO and OWLv2 models, built from configs and saved with save_pretrained.

Tokenizers are built offline from vocabularies written here. The BERT vocab puts [CLS], [SEP], "." and
"?" at bert-base-uncased's ids (101, 102, 1012, 1029) because Grounding DINO hard-codes those ids to
delimit phrases in its text attention masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

PART_WORDS = ["arm", "back", "leg", "seat", "rest", "drawer", "front", "wheel", "handle", "door", "lid", "a",
              "photo", "of", "body", "spout", "knob", "shade", "base", "bulb", "mug", "tabletop", "chair", "table"]
GD_NUM_QUERIES = 30
OWL_IMAGE_SIZE, OWL_PATCH = 64, 16


def bert_vocab() -> list[str]:
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"[unused{i}]" for i in range(100, 100 + 1012 - len(tokens))] + ["."]
    tokens += [f"[unusedb{i}]" for i in range(1029 - len(tokens))] + ["?"]
    return tokens + PART_WORDS + ["##s", "##er"]


def make_bert_tokenizer(directory: Path):
    import transformers
    from transformers import BertTokenizerFast
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(bert_vocab()) + "\n")
    if int(transformers.__version__.split(".")[0]) >= 5:
        return BertTokenizerFast(vocab=str(vocab_file))
    return BertTokenizerFast(vocab_file=str(vocab_file))


def make_clip_tokenizer(directory: Path):
    """Byte-level-free tiny BPE: single letters plus merges that make each PART_WORD one token."""
    import transformers
    from transformers import CLIPTokenizerFast
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    letters = "abcdefghijklmnopqrstuvwxyz"
    for suffix in ("", "</w>"):
        for c in letters:
            vocab[c + suffix] = len(vocab)
    merges = []
    for word in PART_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for piece in parts[1:]:
            merges.append(f"{current} {piece}")
            current += piece
            vocab.setdefault(current, len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    kwargs = dict(model_max_length=16)
    if int(transformers.__version__.split(".")[0]) >= 5:
        return CLIPTokenizerFast(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"), **kwargs)
    return CLIPTokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"), **kwargs)


def build_tiny_grounding_dino(out: Path, scratch: Path) -> Path:
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)
    torch.manual_seed(0)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(bert_vocab()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=256)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                 decoder_attention_heads=2, num_queries=GD_NUM_QUERIES, encoder_n_points=2,
                                 decoder_n_points=2, max_text_len=256)
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=make_bert_tokenizer(scratch / "bert"))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_owlv2(out: Path, scratch: Path) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
    torch.manual_seed(0)
    tokenizer = make_clip_tokenizer(scratch / "clip")
    config = Owlv2Config(
        text_config=dict(vocab_size=len(tokenizer.get_vocab()), hidden_size=32, intermediate_size=37,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2),
        vision_config=dict(image_size=OWL_IMAGE_SIZE, patch_size=OWL_PATCH, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=32)
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(
        size={"height": OWL_IMAGE_SIZE, "width": OWL_IMAGE_SIZE}), tokenizer=tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_gd")
    return build_tiny_grounding_dino(root / "model", root / "scratch")


@pytest.fixture(scope="session")
def tiny_owl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_owl")
    return build_tiny_owlv2(root / "model", root / "scratch")


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_bert_tokenizer(tmp_path_factory.mktemp("bert_tok"))


def random_views(num_views: int = 3, height: int = 80, width: int = 96, seed: int = 0):
    """RenderedViews with random images (only .images is read by real detectors)."""
    from partslip_core.types import RenderedViews
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_views, height, width, 3), dtype=np.uint8)
    return RenderedViews(images=images, pixel_point_index=np.full((num_views, height, width), -1, np.int64),
                         point_screen_xy=np.zeros((num_views, 1, 2), np.float32),
                         point_visible=np.zeros((num_views, 1), bool),
                         view_angles=np.zeros((num_views, 2), np.float32))
