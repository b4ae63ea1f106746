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
stopping rule is applied per pair, so a pair that has converged inside a batch stops
changing while the others continue, and a pair gives the same flow (to float rounding)
alone or in a batch. Only ``torch`` is needed (no OpenCV, no Apache Beam).

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

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CPU_MAX_BATCH", "TVL1Params", "tvl1_flow", "TVL1"]

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
    """Source indices and weights of a 1-D bilinear resize; ``scale`` = source px per output px."""
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


# --------------------------------------------------------------------------------------
# Kernels: eager, or torch.compile'd with a fallback to eager


class _Kernels:
    """The hot functions, optionally wrapped by ``torch.compile`` (falls back to eager)."""

    def __init__(self, compiled: bool) -> None:
        self.compiled = compiled
        self._fns: dict[str, Callable[..., object]] = {}
        self._checked: set[str] = set()

    def _get(self, name: str, fn: Callable[..., object]) -> Callable[..., object]:
        if not self.compiled:
            return fn
        if name not in self._fns:
            self._fns[name] = torch.compile(fn, dynamic=True)
        return self._fns[name]

    def call(self, name: str, fn: Callable[..., object], *args: object) -> object:
        impl = self._get(name, fn)
        if impl is fn or name in self._checked:
            return impl(*args)
        try:
            result = impl(*args)
        except Exception as exc:  # compiler missing or failing: stay correct, run eager
            warnings.warn(
                f"torch.compile failed for TV-L1 ({type(exc).__name__}: {exc}); "
                "falling back to eager mode",
                RuntimeWarning,
                stacklevel=3,
            )
            self._fns[name] = fn
            return fn(*args)
        self._checked.add(name)
        return result


_KERNELS = {False: _Kernels(False), True: _Kernels(True)}


# --------------------------------------------------------------------------------------
# Solver


def _solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    flow: list[torch.Tensor],
    params: TVL1Params,
    kernels: _Kernels,
) -> list[torch.Tensor]:
    """Refine ``flow`` ([u1, u2] or [u1, u2, u3], each [B, H, W]) on one pyramid level."""
    b, h, w = i0.shape
    use_gamma = len(flow) == 3
    n_primal = len(flow)
    # OpenCV compares against this value rounded to float32.
    scaled_eps = float(torch.tensor(params.epsilon**2 * h * w, dtype=torch.float32))
    l_t = float(torch.tensor(params.lambda_ * params.theta, dtype=torch.float32))
    taut = float(torch.tensor(params.tau / params.theta, dtype=torch.float32))
    theta = float(torch.tensor(params.theta, dtype=torch.float32))
    gamma = float(torch.tensor(params.gamma, dtype=torch.float32))
    if use_gamma:

        def iterate(state: list[torch.Tensor], consts: list[torch.Tensor]) -> tuple:
            return kernels.call(  # type: ignore[return-value]
                "iter_gamma", _iteration_gamma, *state, *consts, l_t, theta, taut, gamma
            )
    else:

        def iterate(state: list[torch.Tensor], consts: list[torch.Tensor]) -> tuple:
            return kernels.call(  # type: ignore[return-value]
                "iter", _iteration, *state, *consts, l_t, theta, taut
            )

    i1x, i1y = _centered_gradient(i1)
    images = torch.stack([i1, i1x, i1y], dim=1)
    duals = [torch.zeros_like(i0) for _ in range(2 * n_primal)]
    state = list(flow) + duals  # u1, u2, (u3), p11, p12, p21, p22, (p31, p32): [B, H, W]
    k = params.median_filtering
    _prepare_median(k)
    for _ in range(params.warps):
        warped = kernels.call("warp", _warp_bicubic, images, state[0], state[1])
        i1w, i1wx, i1wy = warped.unbind(1)  # type: ignore[union-attr]
        grad = i1wx * i1wx + i1wy * i1wy
        neg_inv_grad = torch.where(grad > _FLT_EPSILON, -1.0 / grad, -1e30)
        rho_c = i1w - i1wx * state[0] - i1wy * state[1] - i0
        consts = [i1wx, i1wy, neg_inv_grad, rho_c]
        # Pairs whose last update was above the threshold; the others are done with
        # this warping (OpenCV's stopping rule, per pair).
        active = list(range(b))
        for _ in range(params.outer_iterations):
            if not active:
                break
            state = _outer_iteration(state, consts, active, k, scaled_eps, iterate, kernels, params)
    return state[:n_primal]


def _outer_iteration(
    state: list[torch.Tensor],
    consts: list[torch.Tensor],
    active: list[int],
    k: int,
    scaled_eps: float,
    iterate: Callable[[list[torch.Tensor], list[torch.Tensor]], tuple],
    kernels: _Kernels,
    params: TVL1Params,
) -> list[torch.Tensor]:
    """Median filter + up to ``inner_iterations`` iterations for the ``active`` pairs.

    Works on a sub-batch of the active pairs. A pair that converges has its state written
    back at once and is dropped from ``active`` (in place); it stays in the sub-batch,
    frozen in the result, until at most half of the sub-batch is still active, when the
    sub-batch is compacted. Returns the updated full state.
    """
    b = state[0].shape[0]
    device = state[0].device
    rows = list(active)  # pair index of each sub-batch row
    if len(rows) == b:
        sub, sub_consts = list(state), list(consts)
    else:
        idx = torch.tensor(rows, device=device)
        sub = [t.index_select(0, idx) for t in state]
        sub_consts = [t.index_select(0, idx) for t in consts]
    live = [True] * len(rows)
    if k > 1:
        for c in range(2):
            sub[c] = kernels.call(f"median{k}", _median_filter, sub[c], k)
    written = False  # whether ``state`` may now be modified in place
    for _ in range(params.inner_iterations):
        *new, error = iterate(sub, sub_consts)
        sub = list(new)
        keep = (error > scaled_eps).tolist()
        done = [r for r, (lv, kp) in enumerate(zip(live, keep)) if lv and not kp]
        if not done:
            continue
        if not written:
            state = [t.clone() for t in state]
            written = True
        local = torch.tensor(done, device=device)
        pairs = torch.tensor([rows[r] for r in done], device=device)
        for full, part in zip(state, sub):
            full.index_copy_(0, pairs, part.index_select(0, local))
        for r in done:
            live[r] = False
            active.remove(rows[r])
        n_live = sum(live)
        if n_live == 0:
            return state
        if 2 * n_live <= len(rows):
            keep_rows = [r for r, lv in enumerate(live) if lv]
            local = torch.tensor(keep_rows, device=device)
            sub = [t.index_select(0, local) for t in sub]
            sub_consts = [t.index_select(0, local) for t in sub_consts]
            rows = [rows[r] for r in keep_rows]
            live = [True] * len(rows)
    if all(live) and len(rows) == b:
        return sub
    if not written:
        state = [t.clone() for t in state]
    keep_rows = [r for r, lv in enumerate(live) if lv]
    local = torch.tensor(keep_rows, device=device)
    pairs = torch.tensor([rows[r] for r in keep_rows], device=device)
    for full, part in zip(state, sub):
        full.index_copy_(0, pairs, part.index_select(0, local))
    return state


def tvl1_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: TVL1Params | None = None,
    initial_flow: torch.Tensor | None = None,
    *,
    compile: bool = False,
    max_batch: int | None = None,
) -> torch.Tensor:
    """Dense TV-L1 optical flow from each ``i0[b]`` to ``i1[b]``, as OpenCV's DualTVL1.

    Args:
        i0: first frames, float tensor [B, H, W], grayscale on the 0..255 scale (uint8 is
            accepted and converted); any device.
        i1: second frames, same shape, dtype and device as ``i0``.
        params: solver parameters; ``None`` means OpenCV's defaults (``TVL1Params()``).
        initial_flow: [B, H, W, 2] flow in pixels to start from; required when
            ``params.use_initial_flow`` is true and rejected otherwise.
        compile: run the inner kernels through ``torch.compile`` (needs a C++ compiler on
            CPU, Triton on CUDA; the first calls pay the compilation). Falls back to eager
            mode with a ``RuntimeWarning`` if compilation fails. Results differ from eager
            mode only by float32 rounding (which the median filter can amplify, as it does
            between OpenCV runs on inputs that differ by rounding).
        max_batch: most pairs solved together; a larger batch is solved in consecutive
            chunks of this size (pairs are independent, so the flow is the same). ``None``
            picks :data:`CPU_MAX_BATCH` on CPU, where a few pairs' working set stays in
            the caches and eager mode is fastest (``benchmarks/RESULTS.md``), and the whole
            batch on other devices.

    Returns:
        float32 tensor [B, H, W, 2] on the input's device: per pixel (dx, dy) in pixels,
        x to the right and y down, such that ``i0[y, x]`` matches ``i1[y + dy, x + dx]``.
    """
    params = TVL1Params() if params is None else params
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
    if b == 0 or h == 0 or w == 0:
        return torch.zeros((b, h, w, 2), dtype=torch.float32, device=i0.device)
    if max_batch is None:
        max_batch = CPU_MAX_BATCH if i0.device.type == "cpu" else b
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if b > max_batch:
        return torch.cat(
            [
                tvl1_flow(
                    i0[k : k + max_batch],
                    i1[k : k + max_batch],
                    params,
                    None if initial_flow is None else initial_flow[k : k + max_batch],
                    compile=compile,
                    max_batch=max_batch,
                )
                for k in range(0, b, max_batch)
            ]
        )

    kernels = _KERNELS[bool(compile)]
    with torch.no_grad():
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
            flows = _solve_level(levels0[s], levels1[s], flows, params, kernels)
            if s == 0:
                break
            _, fh, fw = levels0[s - 1].shape
            up = [_resize_to(f, fh, fw) for f in flows]
            for c in range(2):  # the illumination variable u3 is not rescaled
                up[c] = up[c] * (1.0 / params.scale_step)
            flows = up
        return torch.stack(flows[:2], dim=-1).contiguous()


class TVL1(torch.nn.Module):
    """``torch.nn.Module`` around :func:`tvl1_flow` (no learnable parameters).

    Args:
        params: solver parameters (OpenCV defaults when ``None``).
        compile: use ``torch.compile`` for the inner kernels (see :func:`tvl1_flow`).
        max_batch: most pairs solved together (see :func:`tvl1_flow`).
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        compile: bool = False,
        max_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.params = TVL1Params() if params is None else params
        self.use_compile = compile
        self.max_batch = max_batch

    def forward(
        self, i0: torch.Tensor, i1: torch.Tensor, initial_flow: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow [B, H, W, 2] float32 in pixels from ``i0`` to ``i1`` (both [B, H, W], 0..255)."""
        return tvl1_flow(
            i0, i1, self.params, initial_flow, compile=self.use_compile, max_batch=self.max_batch
        )
