"""benchmarks/allocator_model.py: the caching allocator's reserve, on sequences worked by hand."""

from __future__ import annotations

import itertools

import pytest
from benchmark_scripts import load_benchmark

MIB = 2**20


@pytest.fixture(scope="module")
def model():
    return load_benchmark("allocator_model", "allocator_model")


def test_requests_are_rounded_and_segments_sized_as_the_allocator_does(model):
    assert [model.round_size(n) for n in (1, 512, 513, 3000)] == [512, 512, 1024, 3072]
    assert model.segment_size(MIB) == 2 * MIB  # small pool
    assert model.segment_size(MIB + 512) == 20 * MIB
    assert model.segment_size(10 * MIB - 512) == 20 * MIB
    assert model.segment_size(10 * MIB) == 10 * MIB
    assert model.segment_size(10 * MIB + 512) == 12 * MIB


def test_fixed_segments_split_and_merge_their_blocks(model):
    allocator = model.CachingAllocator("fixed")
    small = allocator.malloc(1000)
    assert (allocator.allocated, allocator.reserved) == (1024, 2 * MIB)
    a = allocator.malloc(5 * MIB)  # a 20 MiB segment, 15 MiB left cached
    b = allocator.malloc(5 * MIB)  # from the rest
    assert allocator.reserved == 22 * MIB
    allocator.malloc(14 * MIB)  # 10 MiB cached: too small, a segment of its own
    assert allocator.reserved == 36 * MIB
    allocator.free(a)
    allocator.free(b)  # a, b and the rest merge into the whole 20 MiB segment again
    allocator.malloc(18 * MIB)
    assert allocator.reserved == 36 * MIB
    assert allocator.allocated == 1024 + 14 * MIB + 18 * MIB
    allocator.free(small)
    assert allocator.peak_allocated == 1024 + 14 * MIB + 18 * MIB
    with pytest.raises(ValueError, match="already free"):
        allocator.free(small)


def test_growing_requests_reserve_anew_in_fixed_segments_and_extend_an_expandable_one(model):
    """The pattern of a step whose samples change in number: each request a little larger than
    the last, freed before the next."""
    figures = {}
    for layout in model.LAYOUTS:
        allocator = model.CachingAllocator(layout)
        for mib in (100, 102, 104):
            allocator.free(allocator.malloc(mib * MIB))
        figures[layout] = (allocator.peak_allocated, allocator.peak_reserved)
    assert figures["fixed"] == (104 * MIB, (100 + 102 + 104) * MIB)
    assert figures["expandable"] == (104 * MIB, 120 * MIB)  # six 20 MiB pages


def test_under_a_limit_the_cache_is_emptied_and_the_request_tried_again(model):
    """40 MiB cached, 40 in use, 50 asked for under a 100 MiB limit: the fixed allocator gives
    the free 40 MiB segment back; the expandable one unmaps the free pages (two of 20 MiB) and
    maps three at its end."""
    reserved = {}
    for layout in model.LAYOUTS:
        allocator = model.CachingAllocator(layout, limit=100 * MIB)
        a = allocator.malloc(40 * MIB)
        allocator.malloc(40 * MIB)
        allocator.free(a)
        allocator.malloc(50 * MIB)
        assert allocator.releases == 1
        reserved[layout] = allocator.reserved
    assert reserved == {"fixed": 90 * MIB, "expandable": 100 * MIB}


def test_holes_in_fixed_segments_run_out_where_expandable_pages_fit(model):
    """Four 6 MiB blocks take two 20 MiB segments; freeing the first and third leaves holes of
    6, 8 and 14 MiB, none of them whole segments. Two 15 MiB requests under a 60 MiB limit:
    fixed, each needs a 16 MiB segment of its own, and the second one runs out; expandable, the
    four blocks and the two requests lie end to end in three 20 MiB pages."""
    events = [(k, 6 * MIB) for k in (1, 2, 3, 4)] + [(1, -6 * MIB), (3, -6 * MIB)]
    events += [(5, 15 * MIB), (6, 15 * MIB)]
    figures = {layout: model.replay(events, layout, limit=60 * MIB) for layout in model.LAYOUTS}
    assert figures == {
        "fixed": dict(allocated=28 * MIB, reserved=56 * MIB, releases=1, out_of_memory=True),
        "expandable": dict(allocated=42 * MIB, reserved=60 * MIB, releases=0, out_of_memory=False),
    }


def test_a_replay_skips_frees_of_what_it_never_saw_allocated(model):
    events = [(7, -4 * MIB), (1, 3 * MIB), (1, -3 * MIB), (2, 3 * MIB)]
    assert model.replay(events, "fixed") == {
        "allocated": 3 * MIB,
        "reserved": 20 * MIB,
        "releases": 0,
        "out_of_memory": False,
    }


def test_an_unknown_layout_is_refused(model):
    with pytest.raises(ValueError, match="layout"):
        model.CachingAllocator("buddy")


def assert_consistent(model, allocator):
    """Blocks tile their segments; the cache holds exactly the free blocks, merged; the counts
    agree with the blocks."""
    blocks = sorted(allocator._by_start.values(), key=lambda b: b.addr)
    assert {b.addr + b.size: b for b in blocks} == allocator._by_end
    for segment, (start, end) in allocator._segments.items():
        mine = [b for b in blocks if b.segment == segment]
        ends = [start] + [b.addr + b.size for b in mine]
        assert [b.addr for b in mine] == ends[:-1]
        assert ends[-1] == end
        assert not any(a.free and b.free for a, b in itertools.pairwise(mine))
    cached = sorted((b.size, b.addr) for b in blocks if b.free)
    assert sorted(allocator._free[True] + allocator._free[False]) == cached
    assert allocator.allocated == sum(b.size for b in blocks if not b.free)
    if allocator.layout == "fixed":
        assert allocator.reserved == sum(end - start for start, end in allocator._segments.values())
    else:
        assert allocator.reserved == sum(model.PAGE[small] for small, _ in allocator._mapped)
        assert set(allocator._covers) <= allocator._mapped
    if allocator.limit is not None:
        assert allocator.reserved <= allocator.limit


@pytest.mark.parametrize("layout", ["fixed", "expandable"])
@pytest.mark.parametrize("limit", [None, 64 * MIB])
def test_random_requests_keep_the_blocks_consistent(model, layout, limit):
    import random

    rng = random.Random(0)
    allocator = model.CachingAllocator(layout, limit)
    live = []
    for _ in range(3000):
        if live and rng.random() < 0.45:
            allocator.free(live.pop(rng.randrange(len(live))))
        else:
            nbytes = rng.choice([rng.randrange(1, 4096), rng.randrange(1, 3 * MIB)])
            nbytes = rng.choice([nbytes, rng.randrange(1, 24 * MIB)])
            try:
                live.append(allocator.malloc(nbytes))
            except model.OutOfMemory:
                assert limit is not None
        assert_consistent(model, allocator)
    assert allocator.peak_reserved >= allocator.peak_allocated
