"""The one line rank 0 logs about where a run's workers are."""

from __future__ import annotations

from mmray.distributed import describe_placement, gather_objects


def test_ranks_and_their_pids_are_grouped_by_node() -> None:
    cpu, gpu = "cpu, fp32 auto-chosen", "cuda, bf16 auto-chosen"
    two = describe_placement([("a52bbe6b", 811, cpu), ("a52bbe6b", 812, cpu)])
    assert two == "2 workers (cpu, fp32 auto-chosen) on 1 node: a52bbe6b ranks 0, 1 (pids 811, 812)"
    spread = describe_placement([("n1", 5, gpu), ("n2", 6, gpu), ("n1", 7, gpu), ("n2", 8, gpu)])
    assert spread == (
        "4 workers (cuda, bf16 auto-chosen) on 2 nodes: n1 ranks 0, 2 (pids 5, 7); n2 ranks 1, 3 (pids 6, 8)"
    )
    eight = describe_placement([("n1", 10 + r, gpu) for r in range(4)] + [("n2", 20 + r, gpu) for r in range(4)])
    assert eight.endswith("on 2 nodes: n1 ranks 0-3 (pids 10, 11, 12, 13); n2 ranks 4-7 (pids 20, 21, 22, 23)")
    assert describe_placement([("n1", 9, "cpu, bf16")]) == "1 worker (cpu, bf16) on 1 node: n1 rank 0 (pid 9)"


def test_nodes_that_compute_differently_say_so() -> None:
    mixed = describe_placement([("a100", 5, "cuda, bf16 auto-chosen"), ("v100", 6, "cuda, fp16 auto-chosen")])
    assert mixed == (
        "2 workers on 2 nodes: a100 rank 0 (cuda, bf16 auto-chosen; pid 5); v100 rank 1 (cuda, fp16 auto-chosen; pid 6)"
    )


def test_without_a_process_group_a_rank_gathers_only_itself() -> None:
    assert gather_objects(("n1", 9)) == [("n1", 9)]
