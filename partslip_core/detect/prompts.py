"""Text prompts from part names, and the way back from prompt tokens / phrases to part indices.

Grounding detectors (GLIP, Grounding DINO) read one caption holding every part, in the reference
format ``"arm . back . leg . seat ."``; each part owns a character span of that caption, and a
prediction is tied to a part through the tokens inside that span. OWLv2 instead scores one text
query per part (``"a photo of a {part}"``). Part labels everywhere are indices into the normalized
part list, so the order of ``part_names`` is the label order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from partslip_core.types import InputError

SEPARATOR = " . "  # what GLIP's demo and PartSLIP put between (and after) part names
DEFAULT_OWL_TEMPLATE = "a photo of a {part}"
_WHITESPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_part_names(part_names: Sequence[str]) -> list[str]:
    """Lowercased, stripped, whitespace-collapsed names; rejects empty, duplicate or '.'-containing names.

    A '.' inside a name would split it into two phrases of the caption, so it is refused rather than
    silently producing an extra entity.
    """
    if isinstance(part_names, str) or not isinstance(part_names, Sequence):
        raise InputError(f"part_names must be a list of strings; got {type(part_names).__name__}")
    bad_types = [repr(n) for n in part_names if not isinstance(n, str)]
    if bad_types:
        raise InputError(f"part names must be strings; got {', '.join(bad_types)}")
    names = [_WHITESPACE.sub(" ", n).strip().lower() for n in part_names]
    if not names:
        raise InputError("part_names is empty: name at least one part to detect")
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise InputError(f"part name(s) at position {empty} are empty: {list(part_names)!r}")
    dotted = [n for n in names if "." in n]
    if dotted:
        raise InputError(f"part names must not contain '.', the prompt separator: {dotted}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"part names repeat after lowercasing/stripping: {duplicates} (in {list(part_names)!r})")
    return names


@dataclass(frozen=True)
class GroundingPrompt:
    """One caption for all parts. spans[p] = (start, end) character range of part p in ``text``."""

    text: str
    part_names: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]

    @property
    def num_parts(self) -> int:
        return len(self.part_names)


def build_grounding_prompt(part_names: Sequence[str], trailing_space: bool = False) -> GroundingPrompt:
    """``"arm . back . leg ."`` with each part's span. ``trailing_space`` keeps GLIP's exact ``"... leg . "``.

    Both forms tokenize identically with BERT (trailing whitespace yields no token).
    """
    names = normalize_part_names(part_names)
    text, spans = "", []
    for name in names:
        spans.append((len(text), len(text) + len(name)))
        text += name + SEPARATOR
    if not trailing_space:
        text = text.rstrip()
    return GroundingPrompt(text=text, part_names=tuple(names), spans=tuple(spans))


def token_part_index(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(T,) int64 part index of each token, -1 for special tokens, separators and padding.

    offsets: (T, 2) character [start, end) per token as returned by a fast tokenizer's
    ``return_offsets_mapping`` (special tokens have start == end). A token belongs to part p when
    its characters lie inside p's span; spans never overlap, so "leg" and "leg rest" stay distinct.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    span = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    inside = ((offsets[:, None, 0] >= span[None, :, 0]) & (offsets[:, None, 1] <= span[None, :, 1])
              & (offsets[:, None, 1] > offsets[:, None, 0]))  # (T, P)
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1).astype(np.int64)


def positive_map(token_part: np.ndarray, num_parts: int, length: int) -> np.ndarray:
    """(P, length) float32: row p averages the token columns of part p (GLIP's and Grounding DINO's
    span-score aggregation). Raises InputError when a part has no token within ``length``
    (prompt truncated by the model's text length)."""
    token_part = np.asarray(token_part, dtype=np.int64)[:length]
    onehot = np.zeros((num_parts, length), np.float32)
    valid = np.nonzero(token_part >= 0)[0]
    onehot[token_part[valid], valid] = 1.0
    counts = onehot.sum(axis=1, keepdims=True)
    if (counts == 0).any():
        missing = np.nonzero(counts[:, 0] == 0)[0].tolist()
        raise InputError(f"part(s) {missing} have no token within the model's {length}-token text window: "
                         "shorten or remove part names")
    return onehot / counts


def _words(text: str) -> list[str]:
    text = text.replace(" ##", "").replace("##", "")
    return _PUNCT.sub(" ", text.lower()).split()


def _singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[: -len(suffix)] + repl
    return word


def _contains(words: list[str], sub: list[str]) -> bool:
    n = len(sub)
    return any(words[i:i + n] == sub for i in range(len(words) - n + 1))


def phrase_to_part_index(phrase: str, part_names: Sequence[str]) -> int:
    """Part index for a predicted phrase (e.g. Grounding DINO's decoded text label), -1 if none fits.

    Order of preference: exact match; the longest part whose words occur contiguously in the phrase
    ("leg rest" beats "leg" in "leg rest"); the same after singularizing ("legs" -> "leg"); a phrase
    that is a contiguous piece of exactly one part ("drawer" -> "drawer front"). Ambiguity -> -1.
    """
    names = [_words(n) for n in part_names]
    words = _words(phrase)
    if not words:
        return -1
    for transform in (lambda ws: ws, lambda ws: [_singular(w) for w in ws]):
        phrase_words = transform(words)
        part_words = [transform(n) for n in names]
        exact = [i for i, n in enumerate(part_words) if n == phrase_words]
        if exact:
            return exact[0]
        inside = [i for i, n in enumerate(part_words) if n and _contains(phrase_words, n)]
        if inside:
            longest = max(len(part_words[i]) for i in inside)
            best = [i for i in inside if len(part_words[i]) == longest]
            return best[0] if len(best) == 1 else -1
        covering = [i for i, n in enumerate(part_words) if _contains(n, phrase_words)]
        if len(covering) == 1:
            return covering[0]
    return -1


def phrases_to_part_indices(phrases: Sequence[str], part_names: Sequence[str]) -> np.ndarray:
    """(M,) int64 part index per phrase (-1 = unmatched)."""
    return np.asarray([phrase_to_part_index(p, part_names) for p in phrases], dtype=np.int64).reshape(-1)


def build_owl_queries(part_names: Sequence[str], template: str = DEFAULT_OWL_TEMPLATE) -> list[str]:
    """One text query per part for OWLv2-style detectors; ``template`` must contain ``{part}`` once."""
    if template.count("{part}") != 1:
        raise InputError(f"query template must contain '{{part}}' exactly once; got {template!r}")
    try:
        return [template.format(part=name) for name in normalize_part_names(part_names)]
    except (IndexError, KeyError) as error:
        raise InputError(f"query template {template!r} has fields other than {{part}}: {error}") from error
