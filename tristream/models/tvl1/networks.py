"""Comparator networks for the exact median filter (pure Python, no torch).

Batcher's odd-even merge networks, pruned to the min/max operations that the requested
ranks depend on. Every kernel path uses these: the eager path evaluates them on tensors
(:mod:`.ops`), the Triton and fused CPU kernels contain code generated from them (and
tests check that the generated code is current).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Program", "median5_plan", "median_plan", "merge_program", "sort_program", "used_ranks"]


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    p = 1
    while p < n:
        p *= 2
    return p


def oddeven_merge(lo: int, n: int, r: int, out: list[tuple[int, int]]) -> None:
    """Comparators of Batcher's odd-even merge of the two sorted halves of [lo, lo + n)."""
    step = 2 * r
    if step < n:
        oddeven_merge(lo, n, step, out)
        oddeven_merge(lo + r, n, step, out)
        out.extend((i, i + r) for i in range(lo + r, lo + n - r, step))
    else:
        out.append((lo, lo + r))


def merge_network(n_wires: int, block: int) -> list[tuple[int, int]]:
    """Sort ``n_wires`` (power of two) whose blocks of ``block`` wires are already sorted."""
    out: list[tuple[int, int]] = []
    size = block
    while size < n_wires:
        for lo in range(0, n_wires, 2 * size):
            oddeven_merge(lo, 2 * size, 1, out)
        size *= 2
    return out


Op = tuple[int, bool, int, int]  # (result id, is_max, operand id, operand id)


@dataclass(frozen=True)
class Program:
    """Min/max operations of a pruned comparator network.

    Values are numbered: the inputs 0..n_inputs-1, then one id per operation result.
    """

    ops: tuple[Op, ...]
    outputs: tuple[int, ...]  # value ids of the requested output wires, in order
    used_inputs: tuple[int, ...]  # the inputs that the outputs depend on

    def run(
        self,
        inputs: dict[int, Any],
        minimum: Callable[[Any, Any], Any],
        maximum: Callable[[Any, Any], Any],
    ) -> list[Any]:
        """Evaluate on values (arrays, tensors) with the given element-wise ``minimum`` and
        ``maximum``; intermediates are dropped after their last use."""
        values = dict(inputs)
        keep = set(self.outputs)
        last_use: dict[int, int] = {}
        for n, (_, _, a, b) in enumerate(self.ops):
            last_use[a] = n
            last_use[b] = n
        for n, (dst, is_max, a, b) in enumerate(self.ops):
            va, vb = values[a], values[b]
            values[dst] = maximum(va, vb) if is_max else minimum(va, vb)
            for v in (a, b):
                if last_use[v] == n and v not in keep:
                    values.pop(v, None)
        return [values[o] for o in self.outputs]


def prune_network(
    comparators: Sequence[tuple[int, int]],
    n_wires: int,
    input_wires: Sequence[int],
    output_wires: Sequence[int],
) -> Program:
    """The min/max operations of a comparator network that ``output_wires`` depend on.

    Comparators put the minimum on their first wire. Wires not in ``input_wires`` hold
    +inf, so comparators touching them are resolved symbolically; input ``k`` is the value
    on ``input_wires[k]``.
    """
    symbol: list[int | None] = [None] * n_wires
    for k, wire in enumerate(input_wires):
        symbol[wire] = k
    next_id = len(input_wires)
    pairs: list[tuple[int, int, int, int]] = []
    for lo, hi in comparators:
        a, b = symbol[lo], symbol[hi]
        if b is None:
            continue
        if a is None:
            symbol[lo], symbol[hi] = b, None
            continue
        pairs.append((next_id, next_id + 1, a, b))
        symbol[lo], symbol[hi] = next_id, next_id + 1
        next_id += 2
    outputs = [symbol[w] for w in output_wires]
    if any(o is None for o in outputs):
        raise AssertionError("network output is +inf")
    needed: set[int] = {o for o in outputs if o is not None}
    ops: list[Op] = []
    for mn, mx, a, b in reversed(pairs):
        if mx in needed:
            ops.append((mx, True, a, b))
        if mn in needed:
            ops.append((mn, False, a, b))
        if mn in needed or mx in needed:
            needed.update((a, b))
    ops.reverse()
    used = tuple(sorted(i for i in needed if i < len(input_wires)))
    return Program(tuple(ops), tuple(o for o in outputs if o is not None), used)


def merge_program(n_a: int, n_b: int, ranks: Sequence[int]) -> Program:
    """Given sorted lists a (inputs 0..n_a-1) and b (n_a..n_a+n_b-1): the ``ranks`` of a + b."""
    block = next_pow2(max(n_a, n_b))
    comparators: list[tuple[int, int]] = []
    oddeven_merge(0, 2 * block, 1, comparators)
    wires = list(range(n_a)) + [block + i for i in range(n_b)]
    return prune_network(comparators, 2 * block, wires, ranks)


def sort_program(n: int, ranks: Sequence[int]) -> Program:
    """The ``ranks`` (0 = smallest) of n unsorted inputs."""
    return prune_network(merge_network(next_pow2(n), 1), next_pow2(n), range(n), ranks)


def median_plan(k: int) -> tuple[Program, Program]:
    """Generic k x k median: sort each column (shared by k windows), then one merge network."""
    block = next_pow2(k)
    merge = merge_network(block * block, block)
    inputs = [c * block + r for c in range(k) for r in range(k)]  # value id c * k + r
    select = prune_network(merge, block * block, inputs, [(k * k) // 2])
    ranks = sorted({i % k for i in select.used_inputs})
    return sort_program(k, ranks), select


def median5_plan() -> tuple[Program, Program, Program]:
    """5 x 5 median in stages that share work between neighbouring windows.

    column sort (5 rows) -> merge of columns (m, m+1) -> merge of pairs (m, m+2), keeping
    the ranks 7..12 of the 20 values; the window's median then comes from these and its
    fifth column in closed form (see ``_median5``).
    """
    quad = merge_program(10, 10, range(7, 13))
    pair = merge_program(5, 5, sorted({i % 10 for i in quad.used_inputs}))
    col = sort_program(5, sorted({i % 5 for i in pair.used_inputs}))
    return col, pair, quad


def used_ranks(program: Program, n: int) -> list[int]:
    """Ranks (input id mod n) that ``program`` reads from each of its sorted input lists."""
    return sorted({i % n for i in program.used_inputs})


def median_network_lines(
    k: int, load: Callable[[int, int, int], str], lo: str, hi: str
) -> list[str]:
    """Source lines of a k x k median as straight-line code, for kernels generated from
    the networks: ``v<i> = load(i, dy, dx)`` for the window's k * k values (offsets from
    the window's top-left), the min/max operations of the pruned sorting network
    (:func:`sort_program`, middle rank only) as ``v<d> = lo(v<a>, v<b>)`` /
    ``hi(...)``, and ``med = v<m>``."""
    n = k * k
    program = sort_program(n, [n // 2])
    lines = [f"v{i} = {load(i, i // k, i % k)}" for i in range(n)]
    for dst, is_max, a, b in program.ops:
        lines.append(f"v{dst} = {hi if is_max else lo}(v{a}, v{b})")
    lines.append(f"med = v{program.outputs[0]}")
    return lines
