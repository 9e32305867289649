"""Our vectorized outputs against the loop reference's: labels and scores exactly, instance partitions up to
renumbering."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from test.reference_impl.lift import ReferenceLift


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    """True when two (N,) id arrays group the points identically (ids may differ; -1 must match -1)."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or not np.array_equal(first < 0, second < 0):
        return False
    pairs = np.unique(np.stack([first, second], axis=1), axis=0)
    return len(pairs) == len(np.unique(first)) == len(np.unique(second))


@dataclass
class Equivalence:
    """Result of comparing our outputs with the reference's; ``problems`` says what differs."""

    semantic_equal: bool
    label_mismatches: int
    scores_equal: bool
    partition_equal: bool
    instance_labels_equal: bool
    instance_scores_equal: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def compare(ours_point_label: np.ndarray, ours_scores: np.ndarray, ours_point_instance: np.ndarray,
            ours_instance_label: np.ndarray, ours_instance_score: np.ndarray, ref: ReferenceLift) -> Equivalence:
    """Semantic labels per point exactly; instance partitions up to renumbering, with equal labels and scores."""
    problems = []
    mismatches = int((np.asarray(ours_point_label) != ref.votes.point_label).sum())
    if mismatches:
        problems.append(f"{mismatches} point label(s) differ")
    scores_equal = np.array_equal(np.asarray(ours_scores, np.float32), ref.votes.superpoint_scores)
    if not scores_equal:
        problems.append("superpoint score matrices differ")
    partition = same_partition(ours_point_instance, ref.instances.point_instance)
    if not partition:
        problems.append(f"instance partitions differ ({len(ours_instance_label)} vs "
                        f"{len(ref.instances.instance_label)} instances)")
    labels_equal = scores_equal_inst = partition
    if partition and len(ours_instance_label):
        ours_ids = np.asarray(ours_point_instance)
        firsts = np.unique(ours_ids[ours_ids >= 0], return_index=True)[1]
        points = np.nonzero(ours_ids >= 0)[0][firsts]
        mapped = ref.instances.point_instance[points]
        labels_equal = np.array_equal(np.asarray(ours_instance_label)[ours_ids[points]], ref.instances.instance_label[mapped])
        scores_equal_inst = np.allclose(np.asarray(ours_instance_score)[ours_ids[points]],
                                        ref.instances.instance_score[mapped], atol=1e-6)
        if not labels_equal:
            problems.append("instance labels differ")
        if not scores_equal_inst:
            problems.append("instance scores differ")
    return Equivalence(mismatches == 0, mismatches, bool(scores_equal), bool(partition), bool(labels_equal),
                       bool(scores_equal_inst), problems)
