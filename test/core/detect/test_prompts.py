"""Prompt building and the mapping from tokens / phrases back to part indices."""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core.detect.prompts import (build_grounding_prompt, build_owl_queries, normalize_part_names,
                                          phrase_to_part_index, phrases_to_part_indices, positive_map,
                                          token_part_index)
from partslip_core.types import InputError


def test_normalize_lowercases_strips_and_collapses_whitespace():
    assert normalize_part_names(["  Arm", "Leg   Rest ", "DRAWER\tfront"]) == ["arm", "leg rest", "drawer front"]


@pytest.mark.parametrize("names, reason", [
    ([], "empty"), (["arm", "  "], "empty"), (["Leg", "leg "], "repeat"), (["arm", "arm"], "repeat"),
    (["a.b"], "must not contain"), (["arm", 3], "strings"), ("arm,leg", "list"),
])
def test_normalize_rejects_bad_lists(names, reason):
    with pytest.raises(InputError, match=reason):
        normalize_part_names(names)


def test_grounding_prompt_format_and_spans():
    prompt = build_grounding_prompt(["Arm", "back", "leg rest", "seat"])
    assert prompt.text == "arm . back . leg rest . seat ."
    assert [prompt.text[a:b] for a, b in prompt.spans] == ["arm", "back", "leg rest", "seat"]
    glip = build_grounding_prompt(["arm", "back"], trailing_space=True)
    assert glip.text == "arm . back . " and glip.spans == prompt.spans[:2]


def test_token_part_index_keeps_substring_parts_apart(bert_tokenizer):
    prompt = build_grounding_prompt(["leg", "leg rest", "drawer front", "legs"])
    encoded = bert_tokenizer(prompt.text, return_offsets_mapping=True)
    tokens = bert_tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["[CLS]", "leg", ".", "leg", "rest", ".", "drawer", "front", ".", "leg", "##s", ".", "[SEP]"]
    parts = token_part_index(np.asarray(encoded["offset_mapping"]), prompt.spans)
    assert parts.tolist() == [-1, 0, -1, 1, 1, -1, 2, 2, -1, 3, 3, -1, -1]


def test_positive_map_averages_each_parts_tokens():
    token_part = np.array([-1, 0, -1, 1, 1, -1, 2, -1])
    pos = positive_map(token_part, num_parts=3, length=10)
    assert pos.shape == (3, 10) and np.allclose(pos.sum(axis=1), 1.0)
    assert pos[1, 3] == pytest.approx(0.5) and pos[1, 4] == pytest.approx(0.5) and pos[1, 1] == 0
    with pytest.raises(InputError, match="no token"):
        positive_map(token_part, num_parts=3, length=5)  # part 2's only token is cut off


@pytest.mark.parametrize("phrase, parts, expected", [
    ("leg rest", ["leg", "leg rest"], 1),
    ("leg", ["leg", "leg rest"], 0),
    ("chair leg rest", ["leg", "leg rest"], 1),
    ("legs", ["leg", "seat"], 0),
    ("batteries", ["battery", "lid"], 0),
    ("drawer", ["drawer front", "door"], 0),
    ("drawer", ["drawer front", "drawer back"], -1),
    ("draw ##er front", ["door", "drawer front"], 1),
    ("seat.", ["arm", "seat"], 1),
    ("Seat", ["arm", "seat"], 1),
    ("wheel", ["arm", "seat"], -1),
    ("", ["arm"], -1),
    ("arm seat", ["arm", "seat"], -1),  # two parts fused in one phrase: ambiguous
])
def test_phrase_to_part_index(phrase, parts, expected):
    assert phrase_to_part_index(phrase, parts) == expected


def test_phrases_to_part_indices_vectorizes_and_types():
    out = phrases_to_part_indices(["seat", "nothing", "arm"], ["arm", "seat"])
    assert out.dtype == np.int64 and out.tolist() == [1, -1, 0]


def test_owl_queries_use_template():
    assert build_owl_queries(["Arm", "leg rest"]) == ["a photo of a arm", "a photo of a leg rest"]
    assert build_owl_queries(["arm"], "{part} of a chair") == ["arm of a chair"]
    for bad in ("a photo", "{part} {part}", "{part} {other}"):
        with pytest.raises(InputError):
            build_owl_queries(["arm"], bad)
