"""A model of torch's CUDA caching allocator, to turn a run's allocations into reserved memory.

``benchmarks/memory_model.py`` counts the bytes a ``--fp16`` run allocates; the GPU targets are
about the memory it *reserves*: what the caching allocator has taken from the GPU, allocated or
cached. Replaying the same allocations and frees (in order, with their sizes) through a model of
the allocator gives the reserve, for its two layouts:

* ``fixed`` (torch's default): segments of fixed size, taken with ``cudaMalloc``: 2 MiB for
  requests of at most 1 MiB (the small pool), 20 MiB for requests under 10 MiB, the request
  rounded up to 2 MiB above that. A request takes the smallest cached block of its pool that
  fits (best fit), split when the rest is worth keeping (≥ 512 B in the small pool, > 1 MiB in
  the large one); a freed block merges with free neighbours of its own segment. A segment goes
  back to the GPU only when wholly free, and only when a request does not fit under the limit.
* ``expandable`` (``expandable_segments:True``): one segment per pool whose address range is
  mapped in pages as needed (2 MiB in the small pool, 20 MiB in the large one); a request no
  cached block fits maps pages at the segment's end (extending a free block there). Under the
  limit, the pages no block in use covers are unmapped and the request is tried again.

Sizes are rounded up to 512 bytes, as the allocator does. One stream, default settings
(no ``max_split_size_mb``, no garbage-collection threshold). Once pages have been unmapped, the
expandable model takes the best-fitting free block whether or not its pages are mapped, where
torch prefers mapped ones: only the figures under a limit can feel it. A model of the algorithm in
``c10/cuda/CUDACachingAllocator.cpp`` as documented and read, not its code: the rows built on it
are predictions, to be checked on a GPU.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIB = 2**20
MIN_BLOCK = 512  # every request is rounded up to a multiple of this
SMALL_SIZE = MIB  # requests up to this size use the small pool
SMALL_BUFFER = 2 * MIB  # a small-pool segment
LARGE_BUFFER = 20 * MIB  # a large-pool segment for requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 * MIB
ROUND_LARGE = 2 * MIB  # larger requests get a segment of their size rounded up to this
# Expandable segments map memory in pages of a pool's segment size: 2 MiB small, 20 MiB large.
PAGE = {True: SMALL_BUFFER, False: LARGE_BUFFER}
LAYOUTS = ("fixed", "expandable")


class OutOfMemory(Exception):
    """A request that the model cannot serve under its limit."""


def round_size(nbytes: int) -> int:
    """A request's size as the allocator serves it: at least 512 bytes, a multiple of 512."""
    return max(MIN_BLOCK, -(-nbytes // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    """The ``cudaMalloc`` a fixed-segment allocator makes for a (rounded) request no cached
    block fits."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


def should_split(small: bool, remaining: int) -> bool:
    return remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE


@dataclass(eq=False)
class _Block:
    addr: int
    size: int
    segment: int
    small: bool
    free: bool = True


@dataclass
class CachingAllocator:
    """Replays ``malloc``/``free`` and keeps the figures: ``allocated`` (bytes of the blocks in
    use, rounded sizes) and ``reserved`` (bytes taken from the GPU), each with its peak;
    ``releases`` counts the times the cache was emptied to serve a request under ``limit``
    (bytes; ``None``: no limit), each a pause of the GPU on a real run.

    Blocks live in address ranges (segments) far apart, so blocks of two segments are never
    neighbours. With expandable segments each pool has one range, grown at its end as needed,
    and what is reserved is the pages mapped in it: a page is mapped when a block
    in use first covers it and unmapped only when the cache is emptied while no block in use
    covers it.
    """

    layout: str = "fixed"
    limit: int | None = None
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    releases: int = 0
    _free: dict[bool, list[tuple[int, int]]] = field(default_factory=lambda: {True: [], False: []})
    _by_start: dict[int, _Block] = field(default_factory=dict)
    _by_end: dict[int, _Block] = field(default_factory=dict)
    _segments: dict[int, list[int]] = field(default_factory=dict)  # id → [start, end]
    # Expandable: the mapped pages, as (small pool?, page number), and the blocks in use on each.
    _mapped: set[tuple[bool, int]] = field(default_factory=set)
    _covers: dict[tuple[bool, int], int] = field(default_factory=dict)
    _next_segment: int = 0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.layout == "expandable":  # one address range per pool: 0 small, 1 large
            for segment in (0, 1):
                self._segments[segment] = [segment << 48, segment << 48]

    def malloc(self, nbytes: int) -> int:
        """Serve a request of ``nbytes``; returns the block's address (the key for :meth:`free`)."""
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        for retry in (False, True):
            block = self._take_cached(small, size) or self._grow(small, size)
            if block is not None:
                split = should_split(small, block.size - size)
                if self._map(block.addr, size if split else block.size):
                    break
            if block is not None:  # expandable: no pages for it under the limit
                self._insert_free(block)
            if retry:
                raise OutOfMemory(f"{nbytes} bytes with {self.reserved} reserved of {self.limit}")
            self._release()
        block.free = False
        if split:
            rest = _Block(block.addr + size, block.size - size, block.segment, small)
            self._unlink(block)
            block.size = size
            self._link(block)
            self._insert_free(rest)
        for page in self._pages(block):
            self._covers[page] = self._covers.get(page, 0) + 1
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block.addr

    def free(self, address: int) -> None:
        block = self._by_start[address]
        if block.free:
            raise ValueError(f"block at {address} is already free")
        self.allocated -= block.size
        for page in self._pages(block):
            self._covers[page] -= 1
            if not self._covers[page]:
                del self._covers[page]
        self._insert_free(block)

    # ------------------------------------------------------------------------------------------

    def _pages(self, block: _Block) -> list[tuple[bool, int]]:
        if self.layout == "fixed":
            return []
        return self._pages_of(block.small, block.addr, block.size)

    def _pages_of(self, small: bool, address: int, size: int) -> list[tuple[bool, int]]:
        """The pages of the range ``[address, address + size)`` of a pool's segment."""
        start, page = self._segments[0 if small else 1][0], PAGE[small]
        first, end = (address - start) // page, -(-(address + size - start) // page)
        return [(small, number) for number in range(first, end)]

    def _link(self, block: _Block) -> None:
        self._by_start[block.addr] = block
        self._by_end[block.addr + block.size] = block

    def _unlink(self, block: _Block) -> None:
        del self._by_start[block.addr]
        del self._by_end[block.addr + block.size]

    def _remove_free(self, block: _Block) -> None:
        pool = self._free[block.small]
        del pool[bisect.bisect_left(pool, (block.size, block.addr))]

    def _insert_free(self, block: _Block) -> None:
        """Mark ``block`` free and cache it, merged with the free neighbours of its segment."""
        if self._by_start.get(block.addr) is block:
            self._unlink(block)
        block.free = True
        before = self._by_end.get(block.addr)
        if before is not None and before.free and before.segment == block.segment:
            self._remove_free(before)
            self._unlink(before)
            block.addr, block.size = before.addr, before.size + block.size
        after = self._by_start.get(block.addr + block.size)
        if after is not None and after.free and after.segment == block.segment:
            self._remove_free(after)
            self._unlink(after)
            block.size += after.size
        self._link(block)
        bisect.insort(self._free[block.small], (block.size, block.addr))

    def _take_cached(self, small: bool, size: int) -> _Block | None:
        """The smallest cached block of the pool that holds ``size`` (lowest address first)."""
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        _, address = pool.pop(i)
        return self._by_start[address]

    def _take_from_gpu(self, nbytes: int) -> bool:
        if self.limit is not None and self.reserved + nbytes > self.limit:
            return False
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return True

    def _grow(self, small: bool, size: int) -> _Block | None:
        """A block for a request no cached block fits: a new segment (fixed; ``None`` over the
        limit), or the pool's range extended at its end, with the free block there (expandable;
        its pages are mapped by :meth:`_map`)."""
        if self.layout == "fixed":
            need = segment_size(size)
            if not self._take_from_gpu(need):
                return None
            segment = self._next_segment
            self._next_segment += 1
            start = segment << 48
            self._segments[segment] = [start, start + need]
            block = _Block(start, need, segment, small)
            self._link(block)
            return block
        segment = 0 if small else 1
        end = self._segments[segment][1]
        block = self._by_end.get(end)
        if block is not None and block.free:
            self._remove_free(block)
            self._unlink(block)
            block.size = size  # it is smaller, or the cache would have served the request
        else:
            block = _Block(end, size, segment, small)
        self._segments[segment][1] = block.addr + block.size
        self._link(block)
        return block

    def _map(self, address: int, size: int) -> bool:
        """Expandable: map the pages of ``[address, address + size)`` not mapped yet; ``False``
        if that goes over the limit (nothing mapped then)."""
        if self.layout == "fixed":
            return True
        small = self._by_start[address].small
        new = [page for page in self._pages_of(small, address, size) if page not in self._mapped]
        if not self._take_from_gpu(len(new) * PAGE[small]):
            return False
        self._mapped.update(new)
        return True

    def _release(self) -> None:
        """What the allocator does before it gives up on a request: return cached memory
        (fixed: the wholly free segments; expandable: every page no block in use covers)."""
        self.releases += 1
        if self.layout == "expandable":
            self._mapped = {page for page in self._mapped if page in self._covers}
            self.reserved = sum(PAGE[small] for small, _ in self._mapped)
            return
        for segment, (start, end) in list(self._segments.items()):
            block = self._by_start.get(start)
            if block is not None and block.free and block.size == end - start:
                self._remove_free(block)
                self._unlink(block)
                del self._segments[segment]
                self.reserved -= end - start


def replay(events: list[tuple[int, int]], layout: str, limit: int | None = None) -> dict:
    """Run ``events`` — ``(key, nbytes)`` in time order, ``nbytes > 0`` an allocation of the
    tensor storage ``key``, ``< 0`` its free — through a :class:`CachingAllocator`. Frees of
    keys never allocated in ``events`` (allocated before them) are skipped. Returns its figures
    in bytes: ``allocated``, ``reserved`` (peaks), ``releases`` and ``out_of_memory`` (whether a
    request failed under ``limit``; the replay stops there)."""
    allocator = CachingAllocator(layout, limit)
    addresses: dict[int, int] = {}
    out_of_memory = False
    for key, nbytes in events:
        if nbytes > 0:
            try:
                addresses[key] = allocator.malloc(nbytes)
            except OutOfMemory:
                out_of_memory = True
                break
        elif key in addresses:
            allocator.free(addresses.pop(key))
    return {
        "allocated": allocator.peak_allocated,
        "reserved": allocator.peak_reserved,
        "releases": allocator.releases,
        "out_of_memory": out_of_memory,
    }
