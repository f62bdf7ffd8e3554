"""The one line rank 0 logs about where a run's workers are."""

from __future__ import annotations

from mmray.distributed import describe_placement, gather_objects


def test_ranks_are_grouped_by_node() -> None:
    assert describe_placement(["a52bbe6b", "a52bbe6b"], "cpu") == "2 workers (cpu) on 1 node: a52bbe6b ranks 0, 1"
    assert describe_placement(["n1", "n2", "n1", "n2"], "cuda") == (
        "4 workers (cuda) on 2 nodes: n1 ranks 0, 2, n2 ranks 1, 3"
    )
    assert (
        describe_placement(["n1"] * 4 + ["n2"] * 4, "cuda") == "8 workers (cuda) on 2 nodes: n1 ranks 0-3, n2 ranks 4-7"
    )
    assert describe_placement(["n1"], "cpu") == "1 worker (cpu) on 1 node: n1 rank 0"


def test_without_a_process_group_a_rank_gathers_only_itself() -> None:
    assert gather_objects("n1") == ["n1"]
