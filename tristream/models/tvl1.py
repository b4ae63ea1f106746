"""Batched TV-L1 optical flow in PyTorch, numerically following OpenCV contrib's DualTVL1.

The solver is the duality-based TV-L1 scheme of Zach, Pock and Bischof (2007) in the form
described by Sanchez, Meinhardt-Llopis and Facciolo (IPOL 2013), with the choices that
``cv::optflow::DualTVL1OpticalFlow`` (modules/optflow/src/tvl1flow.cpp) makes:

* pyramid: level ``s`` is the bilinear resize (pixel-centre aligned, edge replicated, no
  Gaussian pre-filter) of level ``s - 1`` by ``scale_step``; sizes are rounded to the
  nearest integer; construction stops early once a level would be narrower or shorter than
  16 pixels;
* per level: ``warps`` warpings; each warps I1 and its centred-difference gradient with
  bicubic interpolation (Keys kernel, a = -0.75, zero outside the image) at ``x + u``;
* per warping: up to ``outer_iterations`` x ``inner_iterations`` primal-dual iterations
  (thresholding step, primal update, forward-difference gradient, dual update), with a
  ``median_filtering`` x ``median_filtering`` median filter (edge replicated) of the flow
  before each run of inner iterations; a pair stops iterating within the current warping
  once the sum over pixels of the squared flow update is at most
  ``epsilon**2 * height * width`` of the level;
* the flow is bilinearly upsampled to the next finer level and multiplied by
  ``1 / scale_step``; dual variables restart from zero at each level;
* optional ``gamma`` term (third primal variable for illumination change) and
  ``use_initial_flow``.

Everything runs as batched tensor operations on the input's device (CPU or CUDA); the
stopping rule is applied per pair and kept on the device: a mask of the pairs still
iterating, under which a converged pair stops changing while the others continue. The host
reads the mask at most once per run of inner iterations on a GPU (every iteration on CPU,
where a read is free) and compacts finished pairs out of the batch there; when it reads
does not change the flow, and a pair gives the same flow alone or in a batch. The kernel
path (eager, ``torch.compile``, fused Triton kernels) is chosen by name (:data:`KERNELS`);
one that cannot run is replaced by eager with a warning and reported in
:class:`TVL1Stats`. Only ``torch`` is needed (no OpenCV, no Apache Beam; Triton for the
``triton`` path).

Agreement with OpenCV is to float rounding in each step. The stopping rule and the
median filter can amplify rounding differences, so the flows differ by a mean end-point
error of about 0.01 px on real frames, and by ~0.4 px where the motion is beyond TV-L1's
capture range; OpenCV differs from itself by as much between CPUs with and without AVX2,
or builds with and without Intel IPP (see ``benchmarks/RESULTS.md``). On CPU, eager mode
is fastest at small batches, so a large batch is solved ``CPU_MAX_BATCH`` pairs at a
time there; on GPUs the whole batch is solved together.

Units: images are grayscale intensities on the 0..255 scale (OpenCV's 8-bit input
converted to float); flow is in pixels of the input, channel 0 = x (right), channel 1 =
y (down), from ``i0`` to ``i1``: ``i0[y, x] ~ i1[y + flow[..., 1], x + flow[..., 0]]``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "AUTO_KERNELS",
    "CPU_MAX_BATCH",
    "KERNELS",
    "KERNEL_CHOICES",
    "TVL1",
    "TVL1Params",
    "TVL1Stats",
    "cuda_batch_size",
    "pair_bytes",
    "resolve_kernel",
    "tvl1_flow",
]

_FLT_EPSILON = float(torch.finfo(torch.float32).eps)
_CUBIC_A = -0.75  # OpenCV's bicubic kernel parameter
_MIN_LEVEL_SIZE = 16  # OpenCV stops building the pyramid below 16 x 16

#: Pairs solved together on CPU when ``max_batch`` is not given. Each eager op streams
#: whole [B, H, W] tensors; at 2 pairs of 256x340 one tensor is 0.7 MiB and stays in the
#: caches, while at 64 pairs (22 MiB) the solver becomes memory-bound (measured:
#: ``benchmarks/RESULTS.md``).
CPU_MAX_BATCH = 2


@dataclass(frozen=True)
class TVL1Params:
    """TV-L1 parameters; defaults are OpenCV's ``DualTVL1OpticalFlow`` defaults.

    Attributes:
        tau: time step of the dual update.
        lambda_: weight of the data term (smaller = smoother flow).
        theta: coupling between the primal flow and its auxiliary variable.
        nscales: number of pyramid levels (fewer if a level gets below 16 px).
        warps: warpings of I1 per pyramid level.
        epsilon: stopping threshold; a pair stops iterating within a warping when the
            mean squared flow update per pixel is at most ``epsilon**2`` (px^2).
        inner_iterations: primal-dual iterations between two median filterings.
        outer_iterations: median filterings (runs of inner iterations) per warping.
        scale_step: size ratio between two consecutive pyramid levels (0 < s < 1).
        gamma: weight of the illumination term; 0 disables it (OpenCV's default).
        median_filtering: odd side length of the median filter applied to the flow
            before each run of inner iterations; 0 or 1 disables it.
        use_initial_flow: start from ``initial_flow`` instead of zero flow.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    use_initial_flow: bool = False

    def __post_init__(self) -> None:
        if self.nscales < 1:
            raise ValueError(f"nscales must be >= 1, got {self.nscales}")
        if not 0.0 < self.scale_step < 1.0:
            raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step}")
        if self.theta <= 0.0:
            raise ValueError(f"theta must be > 0, got {self.theta}")
        if self.median_filtering > 1 and self.median_filtering % 2 == 0:
            raise ValueError(f"median_filtering must be odd, got {self.median_filtering}")
        for name in ("warps", "inner_iterations", "outer_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    p = 1
    while p < n:
        p *= 2
    return p


# --------------------------------------------------------------------------------------
# Resizing (OpenCV INTER_LINEAR geometry: pixel centres aligned, edges replicated)


def _linear_taps(
    n_in: int, n_out: int, scale: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of a 1-D bilinear resize; ``scale`` = source px per output px.

    Cached per size and device: a copy to a GPU would otherwise wait for its queue.
    """
    return _linear_taps_cached(n_in, n_out, scale, str(device))


@functools.lru_cache(maxsize=256)
def _linear_taps_cached(
    n_in: int, n_out: int, scale: float, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    left = torch.floor(pos)
    frac = pos - left
    left = left.to(torch.int64)
    below = left < 0
    left = torch.where(below, 0, left)
    frac = torch.where(below, 0.0, frac)
    above = left >= n_in - 1
    left = torch.where(above, n_in - 1, left)
    frac = torch.where(above, 0.0, frac)
    right = torch.clamp(left + 1, max=n_in - 1)
    return (
        left.to(device),
        right.to(device),
        (1.0 - frac).to(device),
        frac.to(device),
    )


def _resize_linear(
    x: torch.Tensor, out_h: int, out_w: int, scale_y: float, scale_x: float
) -> torch.Tensor:
    """Bilinear resize of ``x`` [B, H, W] to [B, out_h, out_w]; scales are input/output px."""
    _, h, w = x.shape
    i0, i1, w0, w1 = _linear_taps(w, out_w, scale_x, x.device)
    x = x.index_select(2, i0) * w0 + x.index_select(2, i1) * w1
    i0, i1, w0, w1 = _linear_taps(h, out_h, scale_y, x.device)
    return x.index_select(1, i0) * w0[:, None] + x.index_select(1, i1) * w1[:, None]


def _downscale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize by ``factor`` with OpenCV's ``resize(src, dst, Size(), f, f)`` size and geometry."""
    _, h, w = x.shape
    return _resize_linear(x, round(h * factor), round(w * factor), 1.0 / factor, 1.0 / factor)


def _resize_to(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Resize to an explicit size with OpenCV's ``resize(src, dst, dsize)`` geometry."""
    _, h, w = x.shape
    return _resize_linear(x, out_h, out_w, 1.0 / (out_h / h), 1.0 / (out_w / w))


# --------------------------------------------------------------------------------------
# Finite differences


def _pad_replicate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad [B, H, W] by ``r`` replicated rows and columns on every side."""
    if r == 0:
        return x
    h, w = x.shape[1:]
    x = torch.cat([x[:, :1].expand(-1, r, w), x, x[:, -1:].expand(-1, r, w)], dim=1)
    return torch.cat([x[:, :, :1].expand(-1, h + 2 * r, r), x, x[:, :, -1:].expand(-1, -1, r)], 2)


def _centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred differences of [B, H, W]; at the borders half the one-sided difference."""
    p = _pad_replicate(img, 1)
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def _forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of [B, H, W]; zero in the last column (x) / last row (y)."""
    dx = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 1))
    dy = F.pad(u[:, 1:, :] - u[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def _divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence of the field (v1, v2) [B, H, W], zero beyond the start."""
    return (v1 - F.pad(v1[:, :, :-1], (1, 0))) + (v2 - F.pad(v2[:, :-1, :], (0, 0, 1, 0)))


# --------------------------------------------------------------------------------------
# Bicubic warping (OpenCV remap INTER_CUBIC, BORDER_CONSTANT 0, float maps)


def _warp_bicubic(src: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Sample ``src`` [B, C, H, W] at (x + u1, y + u2); taps outside the image read 0.

    ``grid_sample``'s bicubic mode uses the same Keys kernel (a = -0.75) and zero padding
    as OpenCV's ``remap(..., INTER_CUBIC, BORDER_CONSTANT)``. To keep its normalised
    coordinates exact, the image is zero-padded at the end to 2^k + 1 rows / columns, so
    that normalising and un-normalising only scale by powers of two: integer positions
    are hit exactly and others to within a few float32 ulps. Returns [B, C, H, W] float32.
    """
    _, _, h, w = src.shape
    hp = _next_pow2(max(h - 1, 1)) + 1
    wp = _next_pow2(max(w - 1, 1)) + 1
    padded = F.pad(src, (0, wp - w, 0, hp - h))
    xs = torch.arange(w, device=src.device, dtype=src.dtype)
    ys = torch.arange(h, device=src.device, dtype=src.dtype)[:, None]
    # The map is x + u in float32, as OpenCV builds it; far outside, every tap reads 0.
    gx = torch.clamp(xs + u1, -4.0, wp + 3.0) * (2.0 / (wp - 1)) - 1.0
    gy = torch.clamp(ys + u2, -4.0, hp + 3.0) * (2.0 / (hp - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(padded, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


# --------------------------------------------------------------------------------------
# Median filter: a pruned min/max selection network, exact, edge replicated


def _oddeven_merge(lo: int, n: int, r: int, out: list[tuple[int, int]]) -> None:
    """Comparators of Batcher's odd-even merge of the two sorted halves of [lo, lo + n)."""
    step = 2 * r
    if step < n:
        _oddeven_merge(lo, n, step, out)
        _oddeven_merge(lo + r, n, step, out)
        out.extend((i, i + r) for i in range(lo + r, lo + n - r, step))
    else:
        out.append((lo, lo + r))


def _merge_network(n_wires: int, block: int) -> list[tuple[int, int]]:
    """Sort ``n_wires`` (power of two) whose blocks of ``block`` wires are already sorted."""
    out: list[tuple[int, int]] = []
    size = block
    while size < n_wires:
        for lo in range(0, n_wires, 2 * size):
            _oddeven_merge(lo, 2 * size, 1, out)
        size *= 2
    return out


Op = tuple[int, bool, int, int]  # (result id, is_max, operand id, operand id)


@dataclass(frozen=True)
class _Program:
    """Min/max operations of a pruned comparator network.

    Values are numbered: the inputs 0..n_inputs-1, then one id per operation result.
    """

    ops: tuple[Op, ...]
    outputs: tuple[int, ...]  # value ids of the requested output wires, in order
    used_inputs: tuple[int, ...]  # the inputs that the outputs depend on

    def run(self, inputs: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """Evaluate on tensors; intermediates are dropped after their last use."""
        values = dict(inputs)
        keep = set(self.outputs)
        last_use: dict[int, int] = {}
        for n, (_, _, a, b) in enumerate(self.ops):
            last_use[a] = n
            last_use[b] = n
        for n, (dst, is_max, a, b) in enumerate(self.ops):
            va, vb = values[a], values[b]
            values[dst] = torch.maximum(va, vb) if is_max else torch.minimum(va, vb)
            for v in (a, b):
                if last_use[v] == n and v not in keep:
                    values.pop(v, None)
        return [values[o] for o in self.outputs]


def _prune_network(
    comparators: Sequence[tuple[int, int]],
    n_wires: int,
    input_wires: Sequence[int],
    output_wires: Sequence[int],
) -> _Program:
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
    return _Program(tuple(ops), tuple(o for o in outputs if o is not None), used)


def _merge_program(n_a: int, n_b: int, ranks: Sequence[int]) -> _Program:
    """Given sorted lists a (inputs 0..n_a-1) and b (n_a..n_a+n_b-1): the ``ranks`` of a + b."""
    block = _next_pow2(max(n_a, n_b))
    comparators: list[tuple[int, int]] = []
    _oddeven_merge(0, 2 * block, 1, comparators)
    wires = list(range(n_a)) + [block + i for i in range(n_b)]
    return _prune_network(comparators, 2 * block, wires, ranks)


def _sort_program(n: int, ranks: Sequence[int]) -> _Program:
    """The ``ranks`` (0 = smallest) of n unsorted inputs."""
    return _prune_network(_merge_network(_next_pow2(n), 1), _next_pow2(n), range(n), ranks)


def _median_plan(k: int) -> tuple[_Program, _Program]:
    """Generic k x k median: sort each column (shared by k windows), then one merge network."""
    block = _next_pow2(k)
    merge = _merge_network(block * block, block)
    inputs = [c * block + r for c in range(k) for r in range(k)]  # value id c * k + r
    select = _prune_network(merge, block * block, inputs, [(k * k) // 2])
    ranks = sorted({i % k for i in select.used_inputs})
    return _sort_program(k, ranks), select


def _median5_plan() -> tuple[_Program, _Program, _Program]:
    """5 x 5 median in stages that share work between neighbouring windows.

    column sort (5 rows) -> merge of columns (m, m+1) -> merge of pairs (m, m+2), keeping
    the ranks 7..12 of the 20 values; the window's median then comes from these and its
    fifth column in closed form (see ``_median5``).
    """
    quad = _merge_program(10, 10, range(7, 13))
    pair = _merge_program(5, 5, sorted({i % 10 for i in quad.used_inputs}))
    col = _sort_program(5, sorted({i % 5 for i in pair.used_inputs}))
    return col, pair, quad


# Built here, outside any torch.compile region (generating them takes well under 1 ms).
_MEDIAN5_PLAN = _median5_plan()
_MEDIAN_PLANS: dict[int, tuple[_Program, _Program]] = {}


def _prepare_median(k: int) -> None:
    """Build the network for a k x k median (k != 5) before it is used."""
    if k > 1 and k != 5 and k not in _MEDIAN_PLANS:
        _MEDIAN_PLANS[k] = _median_plan(k)


def _median5(u: torch.Tensor) -> torch.Tensor:
    """Exact 5 x 5 median of [B, H, W] with replicated edges, about 90 min/max per pixel."""
    _, h, w = u.shape
    col, pair, quad = _MEDIAN5_PLAN
    padded = _pad_replicate(u, 2)
    # Sorted columns of 5 rows: cols[r][:, y, c] is the rank r value of padded column c.
    cols = dict(zip(_used_ranks(pair, 5), col.run({i: padded[:, i : i + h] for i in range(5)})))
    # pairs[r][:, y, c]: rank r of padded columns c and c + 1.
    pairs_in = {r: c[:, :, : w + 2] for r, c in cols.items()}
    pairs_in.update({5 + r: c[:, :, 1 : w + 3] for r, c in cols.items()})
    pairs = dict(zip(_used_ranks(quad, 10), pair.run(pairs_in)))
    # quads[j][:, y, x]: rank 7 + j of padded columns x .. x + 3.
    quad_in = {r: m[:, :, :w] for r, m in pairs.items()}
    quad_in.update({10 + r: m[:, :, 2 : w + 2] for r, m in pairs.items()})
    quads = quad.run(quad_in)
    last = [cols[r][:, :, 4 : w + 4] for r in range(5)]
    # Rank 12 (the 13th value) of the union of a sorted 20-list A and a sorted 5-list B:
    # min over j of max(A[12 - j], B[j - 1]), with A[12] alone for j = 0.
    med = quads[5]
    for j in range(1, 6):
        med = torch.minimum(med, torch.maximum(quads[5 - j], last[j - 1]))
    return med


def _used_ranks(program: _Program, n: int) -> list[int]:
    """Ranks (input id mod n) that ``program`` reads from each of its sorted input lists."""
    return sorted({i % n for i in program.used_inputs})


def _median_filter(u: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k x k median of [B, H, W] with replicated edges (OpenCV medianBlur on float)."""
    if k == 5:
        return _median5(u)
    _, h, w = u.shape
    r = k // 2
    _prepare_median(k)
    col_sort, select = _MEDIAN_PLANS[k]
    padded = _pad_replicate(u, r)
    ranks = _used_ranks(select, k)
    sorted_cols = dict(zip(ranks, col_sort.run({i: padded[:, i : i + h] for i in range(k)})))
    inputs = {i: sorted_cols[i % k][:, :, i // k : i // k + w] for i in select.used_inputs}
    return select.run(inputs)[0]


# --------------------------------------------------------------------------------------
# One primal-dual iteration


def _dual_step(
    p1: torch.Tensor, p2: torch.Tensor, u: torch.Tensor, taut: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual update: p <- (p + taut * grad u) / (1 + taut * |grad u|)."""
    ux, uy = _forward_gradient(u)
    norm = 1.0 + taut * torch.hypot(ux, uy)
    return (p1 + taut * ux) / norm, (p2 + taut * uy) / norm


def _iteration(
    u1: torch.Tensor,
    u2: torch.Tensor,
    p11: torch.Tensor,
    p12: torch.Tensor,
    p21: torch.Tensor,
    p22: torch.Tensor,
    i1wx: torch.Tensor,
    i1wy: torch.Tensor,
    neg_inv_grad: torch.Tensor,
    rho_c: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, ...]:
    """One primal-dual iteration on [B, H, W] tensors.

    Thresholding step ``v = u + clip(-rho / |grad I1w|^2, -l_t, l_t) * grad I1w`` (where the
    gradient vanishes, ``neg_inv_grad`` is -1e30 so the step is +-l_t by the sign of rho, as
    OpenCV's three cases give), primal step ``u = v + theta * div p``, dual step.
    Returns (u1, u2, p11, p12, p21, p22, error) with error[B] the sum of squared updates.
    """
    rho = rho_c + (i1wx * u1 + i1wy * u2)
    step = torch.clamp(rho * neg_inv_grad, -l_t, l_t)
    n1 = u1 + step * i1wx + theta * _divergence(p11, p12)
    n2 = u2 + step * i1wy + theta * _divergence(p21, p22)
    d1 = n1 - u1
    d2 = n2 - u2
    error = (d1 * d1 + d2 * d2).sum(dim=(1, 2))
    p11, p12 = _dual_step(p11, p12, n1, taut)
    p21, p22 = _dual_step(p21, p22, n2, taut)
    return n1, n2, p11, p12, p21, p22, error


def _iteration_gamma(
    u1: torch.Tensor,
    u2: torch.Tensor,
    u3: torch.Tensor,
    p11: torch.Tensor,
    p12: torch.Tensor,
    p21: torch.Tensor,
    p22: torch.Tensor,
    p31: torch.Tensor,
    p32: torch.Tensor,
    i1wx: torch.Tensor,
    i1wy: torch.Tensor,
    neg_inv_grad: torch.Tensor,
    rho_c: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
    gamma: float,
) -> tuple[torch.Tensor, ...]:
    """As ``_iteration`` with the illumination variable u3 and its duals (p31, p32)."""
    rho = rho_c + (i1wx * u1 + i1wy * u2) + gamma * u3
    step = torch.clamp(rho * neg_inv_grad, -l_t, l_t)
    n1 = u1 + step * i1wx + theta * _divergence(p11, p12)
    n2 = u2 + step * i1wy + theta * _divergence(p21, p22)
    n3 = u3 + step * gamma + theta * _divergence(p31, p32)
    d1 = n1 - u1
    d2 = n2 - u2
    d3 = n3 - u3
    error = (d1 * d1 + d2 * d2 + d3 * d3).sum(dim=(1, 2))
    p11, p12 = _dual_step(p11, p12, n1, taut)
    p21, p22 = _dual_step(p21, p22, n2, taut)
    p31, p32 = _dual_step(p31, p32, n3, taut)
    return n1, n2, n3, p11, p12, p21, p22, p31, p32, error


def _keep_live(
    new: Sequence[torch.Tensor],
    old: Sequence[torch.Tensor],
    live: torch.Tensor,
    error: torch.Tensor,
    eps: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """OpenCV's stopping rule on the device: pairs not ``live`` (bool [B]) keep ``old``.

    Returns the state (``new`` where live, else ``old``; each [B, H, W]) and then the live
    mask with every pair whose sum of squared updates ``error`` [B] is at most ``eps``
    (0-d float32 tensor) cleared.
    """
    keep = live[:, None, None]
    out = tuple(torch.where(keep, n, o) for n, o in zip(new, old))
    return (*out, live & (error > eps))


def _masked_iteration(
    u1: torch.Tensor,
    u2: torch.Tensor,
    p11: torch.Tensor,
    p12: torch.Tensor,
    p21: torch.Tensor,
    p22: torch.Tensor,
    i1wx: torch.Tensor,
    i1wy: torch.Tensor,
    neg_inv_grad: torch.Tensor,
    rho_c: torch.Tensor,
    live: torch.Tensor,
    eps: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, ...]:
    """``_iteration`` for the pairs marked in ``live`` (bool [B]); the others keep their state.

    Returns (u1, u2, p11, p12, p21, p22, live) with live[b] cleared once the sum of squared
    updates of pair b is at most ``eps`` (0-d float32 tensor): OpenCV's stopping rule, kept
    on the device.
    """
    old = (u1, u2, p11, p12, p21, p22)
    *new, error = _iteration(*old, i1wx, i1wy, neg_inv_grad, rho_c, l_t, theta, taut)
    return _keep_live(new, old, live, error, eps)


def _masked_iteration_gamma(
    u1: torch.Tensor,
    u2: torch.Tensor,
    u3: torch.Tensor,
    p11: torch.Tensor,
    p12: torch.Tensor,
    p21: torch.Tensor,
    p22: torch.Tensor,
    p31: torch.Tensor,
    p32: torch.Tensor,
    i1wx: torch.Tensor,
    i1wy: torch.Tensor,
    neg_inv_grad: torch.Tensor,
    rho_c: torch.Tensor,
    live: torch.Tensor,
    eps: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
    gamma: float,
) -> tuple[torch.Tensor, ...]:
    """As ``_masked_iteration`` with the illumination variable u3 and its duals (p31, p32)."""
    old = (u1, u2, u3, p11, p12, p21, p22, p31, p32)
    *new, error = _iteration_gamma(*old, i1wx, i1wy, neg_inv_grad, rho_c, l_t, theta, taut, gamma)
    return _keep_live(new, old, live, error, eps)


# --------------------------------------------------------------------------------------
# Kernel paths, registered by name here and nowhere else

#: The kernel paths of the solver. ``eager``: plain torch ops, the reference (and the CPU
#: default); ``compiled``: the iteration, median filter and warp through ``torch.compile``
#: (``fullgraph=True``; a C++ compiler on CPU, Triton on CUDA); ``triton``: hand-written
#: fused Triton kernels for one inner iteration and the median filter
#: (``tristream.models.tvl1_triton``; CUDA, or the CPU under ``TRITON_INTERPRET=1``).
KERNELS: tuple[str, ...] = ("eager", "compiled", "triton")

#: Accepted ``kernel`` arguments: a path of :data:`KERNELS`, or ``auto``.
KERNEL_CHOICES: tuple[str, ...] = ("auto", *KERNELS)

#: What ``auto`` tries, in order, per device type (the first that can run is used; the
#: last entry always can). On CPU eager is the default: no compiler needed, no warm-up.
AUTO_KERNELS: dict[str, tuple[str, ...]] = {"cuda": ("triton", "eager")}
_AUTO_DEFAULT: tuple[str, ...] = ("eager",)

_log = logging.getLogger(__name__)

# Paths found unusable in this process (name -> reason), e.g. a failed compilation.
_UNAVAILABLE: dict[str, str] = {}
_WARNED: set[tuple[str, str]] = set()


class KernelUnavailable(RuntimeError):
    """A kernel path cannot run here (compilation failed, Triton missing, ...)."""


@dataclass
class TVL1Stats:
    """What :func:`tvl1_flow` did; pass one in to read it back (counters add up over calls).

    Attributes:
        kernel_requested: the ``kernel`` argument (``auto`` or a name in :data:`KERNELS`).
        kernel: the path that actually ran (a name in :data:`KERNELS`).
        fallback_reason: why ``kernel`` is not the requested path, or ``None``.
        pairs: frame pairs solved.
        batches: batches solved (chunks of at most ``max_batch`` pairs, OOM halves included).
        outer_runs: runs of inner iterations (each after a median filtering) over all
            levels and warpings, counted once per batch.
        inner_iterations: batched inner iterations (one call of the fused iteration each).
        host_syncs: times the host read the device-side convergence mask: at most one per
            outer run with ``sync_every >= inner_iterations`` (the default off the CPU).
        oom_splits: batches split in halves after running out of device memory.
    """

    kernel_requested: str = ""
    kernel: str = ""
    fallback_reason: str | None = None
    pairs: int = 0
    batches: int = 0
    outer_runs: int = 0
    inner_iterations: int = 0
    host_syncs: int = 0
    oom_splits: int = 0


def _compile_unavailable() -> str | None:
    return None  # found out at the first compiled call (the compiler runs lazily)


def _triton_unavailable(device: torch.device, params: TVL1Params) -> str | None:
    from tristream.models import tvl1_triton

    return tvl1_triton.unavailable(device, params)


def kernel_unavailable(name: str, device: torch.device, params: TVL1Params) -> str | None:
    """Why kernel path ``name`` cannot run on ``device`` with ``params``, or ``None``."""
    if name not in KERNELS:
        raise ValueError(f"unknown TV-L1 kernel {name!r}; choose one of {KERNEL_CHOICES}")
    if name in _UNAVAILABLE:
        return _UNAVAILABLE[name]
    if name == "compiled":
        return _compile_unavailable()
    if name == "triton":
        return _triton_unavailable(device, params)
    return None


def resolve_kernel(
    kernel: str, device: torch.device | str, params: TVL1Params | None = None
) -> tuple[str, str | None]:
    """The kernel path that runs for ``kernel`` on ``device``, and why it differs, if it does.

    ``auto`` takes the first path of :data:`AUTO_KERNELS` for the device type that can run
    (eager on CPU); a named path that cannot run gives ``("eager", reason)``. Raises
    ValueError for a name not in :data:`KERNEL_CHOICES`.
    """
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"unknown TV-L1 kernel {kernel!r}; choose one of {KERNEL_CHOICES}")
    device = torch.device(device)
    params = TVL1Params() if params is None else params
    if kernel == "auto":
        for name in AUTO_KERNELS.get(device.type, _AUTO_DEFAULT):
            if kernel_unavailable(name, device, params) is None:
                return name, None
        return "eager", None
    reason = kernel_unavailable(kernel, device, params)
    return ("eager", reason) if reason is not None else (kernel, None)


def _warn_fallback(requested: str, reason: str) -> None:
    """Say once per process and reason that ``requested`` runs as eager instead."""
    if (requested, reason) in _WARNED:
        return
    _WARNED.add((requested, reason))
    _log.warning("TV-L1 kernel %r cannot run (%s); using the eager kernel", requested, reason)


class _EagerPath:
    """The reference: plain torch ops. Skips the mask when every row is known to be live."""

    name = "eager"

    def warp(self, images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return _warp_bicubic(images, u1, u2)

    def median(self, u: torch.Tensor, k: int) -> torch.Tensor:
        return _median_filter(u, k)

    def iterate(
        self,
        state: list[torch.Tensor],
        consts: list[torch.Tensor],
        live: torch.Tensor,
        all_live: bool,
        eps: torch.Tensor,
        coefs: tuple[float, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One iteration of the ``live`` pairs; returns the new state and live mask."""
        fn: Callable[..., tuple[torch.Tensor, ...]] = (
            _iteration_gamma if len(state) == 9 else _iteration
        )
        *new, error = fn(*state, *consts, *coefs)
        if all_live:
            return list(new), error > eps
        *out, live = _keep_live(new, state, live, error, eps)
        return out, live


class _CompiledPath(_EagerPath):
    """``torch.compile`` (fullgraph, dynamic shapes) of the warp, median and masked iteration.

    A compilation failure at a function's first call raises :class:`KernelUnavailable`
    (the caller solves the batch again with the eager path and reports it).
    """

    name = "compiled"

    def __init__(self) -> None:
        self._fns: dict[str, Callable[..., object]] = {}
        self._checked: set[str] = set()

    def _call(self, name: str, fn: Callable[..., object], *args: object) -> object:
        if name not in self._fns:
            self._fns[name] = torch.compile(fn, dynamic=True, fullgraph=True)
        if name in self._checked:
            return self._fns[name](*args)
        try:
            out = self._fns[name](*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # compiler missing or failing
            raise KernelUnavailable(
                f"torch.compile failed for {name}: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
        self._checked.add(name)
        return out

    def warp(self, images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return self._call("warp", _warp_bicubic, images, u1, u2)  # type: ignore[return-value]

    def median(self, u: torch.Tensor, k: int) -> torch.Tensor:
        return self._call(f"median{k}", _median_filter, u, k)  # type: ignore[return-value]

    def iterate(
        self,
        state: list[torch.Tensor],
        consts: list[torch.Tensor],
        live: torch.Tensor,
        all_live: bool,
        eps: torch.Tensor,
        coefs: tuple[float, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if len(state) == 9:
            out = self._call(
                "iter_gamma", _masked_iteration_gamma, *state, *consts, live, eps, *coefs
            )
        else:
            out = self._call("iter", _masked_iteration, *state, *consts, live, eps, *coefs)
        *new, live = out  # type: ignore[misc]
        return list(new), live


def _triton_path() -> _EagerPath:
    from tristream.models import tvl1_triton

    return tvl1_triton.TritonPath()


_PATHS: dict[str, Callable[[], _EagerPath]] = {
    "eager": _EagerPath,
    "compiled": _CompiledPath,
    "triton": _triton_path,
}
_PATH_CACHE: dict[str, _EagerPath] = {}


def _path(name: str) -> _EagerPath:
    """The (cached) kernel path object of ``name``."""
    if name not in _PATH_CACHE:
        _PATH_CACHE[name] = _PATHS[name]()
    return _PATH_CACHE[name]


# --------------------------------------------------------------------------------------
# Solver


def _solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    flow: list[torch.Tensor],
    params: TVL1Params,
    path: _EagerPath,
    stats: TVL1Stats,
    sync_every: int,
) -> list[torch.Tensor]:
    """Refine ``flow`` ([u1, u2] or [u1, u2, u3], each [B, H, W]) on one pyramid level."""
    _, h, w = i0.shape
    n_primal = len(flow)
    # OpenCV compares against this value rounded to float32. A fill, not a copy from the
    # host: on CUDA a copy from pageable memory would wait for the queue.
    eps = torch.full((), params.epsilon**2 * h * w, dtype=torch.float32, device=i0.device)
    f32 = [
        float(torch.tensor(v, dtype=torch.float32))
        for v in (
            params.lambda_ * params.theta,
            params.theta,
            params.tau / params.theta,
            params.gamma,
        )
    ]
    coefs = tuple(f32) if n_primal == 3 else tuple(f32[:3])  # l_t, theta, taut, (gamma)

    i1x, i1y = _centered_gradient(i1)
    images = torch.stack([i1, i1x, i1y], dim=1)
    duals = [torch.zeros_like(i0) for _ in range(2 * n_primal)]
    state = list(flow) + duals  # u1, u2, (u3), p11, p12, p21, p22, (p31, p32): [B, H, W]
    _prepare_median(params.median_filtering)
    for _ in range(params.warps):
        warped = path.warp(images, state[0], state[1])
        i1w, i1wx, i1wy = warped.unbind(1)
        grad = i1wx * i1wx + i1wy * i1wy
        neg_inv_grad = torch.where(grad > _FLT_EPSILON, -1.0 / grad, -1e30)
        rho_c = i1w - i1wx * state[0] - i1wy * state[1] - i0
        consts = [i1wx.contiguous(), i1wy.contiguous(), neg_inv_grad, rho_c]
        state = _solve_warping(state, consts, eps, coefs, params, path, stats, sync_every)
    return state[:n_primal]


def _solve_warping(
    state: list[torch.Tensor],
    consts: list[torch.Tensor],
    eps: torch.Tensor,
    coefs: tuple[float, ...],
    params: TVL1Params,
    path: _EagerPath,
    stats: TVL1Stats,
    sync_every: int,
) -> list[torch.Tensor]:
    """Up to ``outer_iterations`` x (median filter + ``inner_iterations`` iterations).

    Convergence stays on the device: ``live`` (bool [B]) marks the pairs whose last update
    was above the threshold, and the iteration leaves the others unchanged. The host reads
    the mask every ``sync_every`` inner iterations and at the end of each run of inner
    iterations (the next median filter must skip finished pairs); at a read, finished pairs
    are written to the result and compacted out of the working sub-batch. When the reads
    happen does not change the flow, only how much work finished pairs still cost.
    Returns the updated state of all B pairs.
    """
    b = state[0].shape[0]
    device = state[0].device
    k = params.median_filtering
    inner = params.inner_iterations
    sub, sub_consts = list(state), list(consts)
    full: list[torch.Tensor] | None = None  # all B pairs, once the sub-batch was compacted
    rows = list(range(b))  # pair index of each sub-batch row
    live = torch.ones(b, dtype=torch.bool, device=device)
    all_live = True  # the host knows that every row of ``sub`` is live
    for _ in range(params.outer_iterations):
        if k > 1:
            sub[0] = path.median(sub[0], k)
            sub[1] = path.median(sub[1], k)
        stats.outer_runs += 1
        for n in range(inner):
            sub, live = path.iterate(sub, sub_consts, live, all_live, eps, coefs)
            stats.inner_iterations += 1
            all_live = False
            if (n + 1) % sync_every and n + 1 < inner:
                continue
            mask = live.tolist()  # the one host-device synchronisation
            stats.host_syncs += 1
            all_live = True
            if all(mask):
                continue
            if full is None:
                full = sub  # rows already finished are final here; the others come later
            else:
                done = [r for r, m in enumerate(mask) if not m]
                pairs = torch.tensor([rows[r] for r in done], device=device)
                local = torch.tensor(done, device=device)
                for whole, part in zip(full, sub):
                    whole.index_copy_(0, pairs, part.index_select(0, local))
            kept = [r for r, m in enumerate(mask) if m]
            if not kept:
                return full
            local = torch.tensor(kept, device=device)
            sub = [t.index_select(0, local) for t in sub]
            sub_consts = [t.index_select(0, local) for t in sub_consts]
            live = torch.ones(len(kept), dtype=torch.bool, device=device)
            rows = [rows[r] for r in kept]
    if full is None:
        return sub
    pairs = torch.tensor(rows, device=device)
    for whole, part in zip(full, sub):
        whole.index_copy_(0, pairs, part)
    return full


# --------------------------------------------------------------------------------------
# Batch sizes and out-of-memory handling

#: Device memory of one 256x340 pair: ~17.5 MiB (issue 11's estimate). Per pixel of the
#: finest level that is ~53 float32 planes: the pyramids of both frames (2 x 1 / (1 -
#: 0.8^2) = 5.6), the state (6) and its masked copy (6), the warp's padded input and
#: output (3 x 1.5 + 3), the constants (4 + 3 gradients), the iteration's temporaries
#: (~16) and the output (2). ``benchmarks/gpu_check.py`` prints the measured peak.
PLANES_PER_PAIR = 53

#: Fraction of the free device memory a default CUDA batch may fill.
CUDA_MEMORY_FRACTION = 0.8

#: Largest default CUDA batch (more pairs add little once the GPU is full).
CUDA_MAX_BATCH = 256


def pair_bytes(height: int, width: int) -> int:
    """Estimated peak device memory (bytes) of one ``height`` x ``width`` pair."""
    return PLANES_PER_PAIR * 4 * height * width


def cuda_batch_size(height: int, width: int, device: torch.device | str = "cuda") -> int:
    """Pairs per CUDA batch: what fits in :data:`CUDA_MEMORY_FRACTION` of the free memory.

    Between 1 and :data:`CUDA_MAX_BATCH`; ~17.5 MiB per 256x340 pair (:func:`pair_bytes`),
    so 140 GiB free gives 256, 1 GiB free gives 46.
    """
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    fit = int(free * CUDA_MEMORY_FRACTION) // pair_bytes(height, width)
    return max(1, min(CUDA_MAX_BATCH, fit))


#: Test hook: called with the batch size before each batch is solved. Tests set it to a
#: function that raises ``torch.OutOfMemoryError`` to check the split-and-retry logic on
#: the CPU; ``None`` (the default) does nothing.
before_batch: Callable[[int], None] | None = None


def _solve_batch(
    i0: torch.Tensor,
    i1: torch.Tensor,
    initial_flow: torch.Tensor | None,
    params: TVL1Params,
    path: _EagerPath,
    stats: TVL1Stats,
    sync_every: int | None,
) -> torch.Tensor:
    """Solve one batch; out of device memory, solve its halves instead (down to one pair)."""
    b = i0.shape[0]
    try:
        if before_batch is not None:
            before_batch(b)
        return _solve(i0, i1, initial_flow, params, path, stats, sync_every)
    except torch.OutOfMemoryError:
        if b == 1:
            raise
        # Leave the except block first: its traceback holds the failed batch's tensors.
    stats.oom_splits += 1
    _log.warning("TV-L1: out of memory on a batch of %d pairs; solving it in halves", b)
    if i0.device.type == "cuda":
        torch.cuda.empty_cache()
    half = (b + 1) // 2
    parts = [
        _solve_batch(
            i0[s:e],
            i1[s:e],
            None if initial_flow is None else initial_flow[s:e],
            params,
            path,
            stats,
            sync_every,
        )
        for s, e in ((0, half), (half, b))
    ]
    return torch.cat(parts)


def _solve(
    i0: torch.Tensor,
    i1: torch.Tensor,
    initial_flow: torch.Tensor | None,
    params: TVL1Params,
    path: _EagerPath,
    stats: TVL1Stats,
    sync_every: int | None,
) -> torch.Tensor:
    """The whole pyramid for one batch [B, H, W] -> flow [B, H, W, 2]."""
    stats.batches += 1
    if sync_every is None:
        sync_every = 1 if i0.device.type == "cpu" else max(params.inner_iterations, 1)
    levels0 = [i0.to(torch.float32)]
    levels1 = [i1.to(torch.float32)]
    flows: list[torch.Tensor] = []
    if params.use_initial_flow:
        assert initial_flow is not None
        init = initial_flow.to(device=i0.device, dtype=torch.float32)
        flows = [init[..., 0].contiguous(), init[..., 1].contiguous()]
    for _ in range(1, params.nscales):
        nxt0 = _downscale(levels0[-1], params.scale_step)
        if nxt0.shape[1] < _MIN_LEVEL_SIZE or nxt0.shape[2] < _MIN_LEVEL_SIZE:
            break
        levels0.append(nxt0)
        levels1.append(_downscale(levels1[-1], params.scale_step))
        if params.use_initial_flow:
            flows = [_downscale(f, params.scale_step) * params.scale_step for f in flows]
    coarse = levels0[-1]
    if not params.use_initial_flow:
        flows = [torch.zeros_like(coarse), torch.zeros_like(coarse)]
    if params.gamma != 0.0:
        flows.append(torch.zeros_like(coarse))

    for s in range(len(levels0) - 1, -1, -1):
        flows = _solve_level(levels0[s], levels1[s], flows, params, path, stats, sync_every)
        if s == 0:
            break
        _, fh, fw = levels0[s - 1].shape
        up = [_resize_to(f, fh, fw) for f in flows]
        for c in range(2):  # the illumination variable u3 is not rescaled
            up[c] = up[c] * (1.0 / params.scale_step)
        flows = up
    return torch.stack(flows[:2], dim=-1).contiguous()


def tvl1_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: TVL1Params | None = None,
    initial_flow: torch.Tensor | None = None,
    *,
    kernel: str = "auto",
    max_batch: int | None = None,
    sync_every: int | None = None,
    stats: TVL1Stats | None = None,
) -> torch.Tensor:
    """Dense TV-L1 optical flow from each ``i0[b]`` to ``i1[b]``, as OpenCV's DualTVL1.

    Args:
        i0: first frames, float tensor [B, H, W], grayscale on the 0..255 scale (uint8 is
            accepted and converted); any device.
        i1: second frames, same shape, dtype and device as ``i0``.
        params: solver parameters; ``None`` means OpenCV's defaults (``TVL1Params()``).
        initial_flow: [B, H, W, 2] flow in pixels to start from; required when
            ``params.use_initial_flow`` is true and rejected otherwise.
        kernel: the kernel path, a name in :data:`KERNEL_CHOICES` (see :data:`KERNELS`,
            :func:`resolve_kernel`). A path that cannot run here (Triton missing,
            compilation failing) is replaced by ``eager`` with a logged warning, and
            ``stats.kernel`` / ``stats.fallback_reason`` say so. Paths differ only by
            float32 rounding (which the median filter can amplify, as it does between
            OpenCV runs on inputs that differ by rounding).
        max_batch: most pairs solved together; a larger batch is solved in consecutive
            chunks of this size (pairs are independent, so the flow is the same). ``None``
            picks :data:`CPU_MAX_BATCH` on CPU, where a few pairs' working set stays in
            the caches and eager mode is fastest (``benchmarks/RESULTS.md``), and
            :func:`cuda_batch_size` (what fits in the free memory) on CUDA. A batch that
            runs out of device memory is solved in halves (``stats.oom_splits``).
        sync_every: inner iterations between two host reads of the device-side
            convergence mask (a read also ends every run of inner iterations). ``None``:
            1 on CPU, where a read is free and finished pairs then leave at once, else
            ``inner_iterations`` (one read per outer run). The flow does not depend on it.
        stats: a :class:`TVL1Stats` to fill in (kernel used, batches, host syncs, ...).

    Returns:
        float32 tensor [B, H, W, 2] on the input's device: per pixel (dx, dy) in pixels,
        x to the right and y down, such that ``i0[y, x]`` matches ``i1[y + dy, x + dx]``.
    """
    params = TVL1Params() if params is None else params
    stats = TVL1Stats() if stats is None else stats
    if i0.dim() != 3 or i0.shape != i1.shape:
        raise ValueError(
            f"i0 and i1 must both be [B, H, W] with equal shapes, got {tuple(i0.shape)} "
            f"and {tuple(i1.shape)}"
        )
    if i0.device != i1.device:
        raise ValueError(f"i0 is on {i0.device} but i1 is on {i1.device}")
    b, h, w = i0.shape
    if params.use_initial_flow:
        if initial_flow is None:
            raise ValueError("params.use_initial_flow is set but no initial_flow was given")
        if tuple(initial_flow.shape) != (b, h, w, 2):
            raise ValueError(
                f"initial_flow must be [B, H, W, 2] = {(b, h, w, 2)}, "
                f"got {tuple(initial_flow.shape)}"
            )
    elif initial_flow is not None:
        raise ValueError("initial_flow was given but params.use_initial_flow is False")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if sync_every is not None and sync_every < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    name, reason = resolve_kernel(kernel, i0.device, params)
    stats.kernel_requested, stats.kernel, stats.fallback_reason = kernel, name, reason
    if reason is not None:
        _warn_fallback(kernel, reason)
    if b == 0 or h == 0 or w == 0:
        return torch.zeros((b, h, w, 2), dtype=torch.float32, device=i0.device)
    if max_batch is None:
        if i0.device.type == "cpu":
            max_batch = CPU_MAX_BATCH
        elif i0.device.type == "cuda":
            max_batch = cuda_batch_size(h, w, i0.device)
        else:
            max_batch = b
    stats.pairs += b
    out = []
    with torch.no_grad():
        for s in range(0, b, max_batch):
            e = min(s + max_batch, b)
            init = None if initial_flow is None else initial_flow[s:e]
            try:
                flow = _solve_batch(i0[s:e], i1[s:e], init, params, _path(name), stats, sync_every)
            except KernelUnavailable as exc:
                _UNAVAILABLE[name] = str(exc)
                stats.fallback_reason = str(exc)
                _warn_fallback(kernel, str(exc))
                name = stats.kernel = "eager"
                flow = _solve_batch(i0[s:e], i1[s:e], init, params, _path(name), stats, sync_every)
            out.append(flow)
    return out[0] if len(out) == 1 else torch.cat(out)


class TVL1(torch.nn.Module):
    """``torch.nn.Module`` around :func:`tvl1_flow` (no learnable parameters).

    Args:
        params: solver parameters (OpenCV defaults when ``None``).
        kernel: kernel path, a name in :data:`KERNEL_CHOICES` (see :func:`tvl1_flow`).
        max_batch: most pairs solved together (see :func:`tvl1_flow`).

    After each call, ``last_stats`` is the :class:`TVL1Stats` of that call (which kernel
    path actually ran, batches, host syncs).
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        kernel: str = "auto",
        max_batch: int | None = None,
    ) -> None:
        super().__init__()
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"unknown TV-L1 kernel {kernel!r}; choose one of {KERNEL_CHOICES}")
        self.params = TVL1Params() if params is None else params
        self.kernel = kernel
        self.max_batch = max_batch
        self.last_stats: TVL1Stats | None = None

    def forward(
        self, i0: torch.Tensor, i1: torch.Tensor, initial_flow: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow [B, H, W, 2] float32 in pixels from ``i0`` to ``i1`` (both [B, H, W], 0..255)."""
        stats = TVL1Stats()
        out = tvl1_flow(
            i0,
            i1,
            self.params,
            initial_flow,
            kernel=self.kernel,
            max_batch=self.max_batch,
            stats=stats,
        )
        self.last_stats = stats
        return out
