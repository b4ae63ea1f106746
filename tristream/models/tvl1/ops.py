"""The torch building blocks of the TV-L1 solver: OpenCV's operations on [B, H, W] tensors.

Resizing (INTER_LINEAR geometry), finite differences, the bicubic warp (``remap``
INTER_CUBIC, zero border), the exact median filter (evaluating :mod:`.networks` on
tensors) and one primal-dual iteration, batched over pairs on any device. The eager and
compiled kernel paths are these functions; the Triton kernels follow them operation by
operation. Units: grey levels on the 0..255 scale, flow in pixels.

The functions are pure: they compute. What is worth remembering between calls (the
resize taps per size and device, the median networks per size) is kept by an
:class:`OpsCache`, which each torch kernel path object owns (``paths.EagerPath``: the
solver owns the paths, and a worker's models own the solver) and passes in; called
without one, a function computes the same values afresh. Nothing here is kept per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tristream.models.tvl1.networks import (
    Program,
    median5_plan,
    median_plan,
    next_pow2,
    used_ranks,
)

FLT_EPSILON = float(torch.finfo(torch.float32).eps)

# --------------------------------------------------------------------------------------
# Resizing (OpenCV INTER_LINEAR geometry: pixel centres aligned, edges replicated)


Taps = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def linear_taps(n_in: int, n_out: int, scale: float, device: torch.device | str) -> Taps:
    """Source indices and weights of a 1-D bilinear resize; ``scale`` = source px per output px.

    Returns (left index, right index, left weight, right weight), each [n_out], on
    ``device``. Computed on the CPU and copied: :meth:`OpsCache.taps` remembers them (a
    copy to a GPU would otherwise wait for its queue at every resize).
    """
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
    x: torch.Tensor,
    out_h: int,
    out_w: int,
    scale_y: float,
    scale_x: float,
    cache: OpsCache | None,
) -> torch.Tensor:
    """Bilinear resize of ``x`` [B, H, W] to [B, out_h, out_w]; scales are input/output px."""
    _, h, w = x.shape
    taps = linear_taps if cache is None else cache.taps
    i0, i1, w0, w1 = taps(w, out_w, scale_x, x.device)
    x = x.index_select(2, i0) * w0 + x.index_select(2, i1) * w1
    i0, i1, w0, w1 = taps(h, out_h, scale_y, x.device)
    return x.index_select(1, i0) * w0[:, None] + x.index_select(1, i1) * w1[:, None]


def downscale(x: torch.Tensor, factor: float, cache: OpsCache | None = None) -> torch.Tensor:
    """Resize by ``factor`` with OpenCV's ``resize(src, dst, Size(), f, f)`` size and geometry.

    ``cache``: the caller's :class:`OpsCache` (the taps are computed afresh without one)."""
    _, h, w = x.shape
    return _resize_linear(
        x, round(h * factor), round(w * factor), 1.0 / factor, 1.0 / factor, cache
    )


def resize_to(
    x: torch.Tensor, out_h: int, out_w: int, cache: OpsCache | None = None
) -> torch.Tensor:
    """Resize to an explicit size with OpenCV's ``resize(src, dst, dsize)`` geometry.

    ``cache``: the caller's :class:`OpsCache` (the taps are computed afresh without one)."""
    _, h, w = x.shape
    return _resize_linear(x, out_h, out_w, 1.0 / (out_h / h), 1.0 / (out_w / w), cache)


# --------------------------------------------------------------------------------------
# Finite differences


def _pad_replicate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad [B, H, W] by ``r`` replicated rows and columns on every side."""
    if r == 0:
        return x
    h, w = x.shape[1:]
    x = torch.cat([x[:, :1].expand(-1, r, w), x, x[:, -1:].expand(-1, r, w)], dim=1)
    return torch.cat([x[:, :, :1].expand(-1, h + 2 * r, r), x, x[:, :, -1:].expand(-1, -1, r)], 2)


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred differences of [B, H, W]; at the borders half the one-sided difference."""
    p = _pad_replicate(img, 1)
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of [B, H, W]; zero in the last column (x) / last row (y)."""
    dx = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 1))
    dy = F.pad(u[:, 1:, :] - u[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence of the field (v1, v2) [B, H, W], zero beyond the start."""
    return (v1 - F.pad(v1[:, :, :-1], (1, 0))) + (v2 - F.pad(v2[:, :-1, :], (0, 0, 1, 0)))


# --------------------------------------------------------------------------------------
# Bicubic warping (OpenCV remap INTER_CUBIC, BORDER_CONSTANT 0, float maps)


def warp_bicubic(src: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Sample ``src`` [B, C, H, W] at (x + u1, y + u2); taps outside the image read 0.

    ``grid_sample``'s bicubic mode uses the same Keys kernel (a = -0.75) and zero padding
    as OpenCV's ``remap(..., INTER_CUBIC, BORDER_CONSTANT)``. To keep its normalised
    coordinates exact, the image is zero-padded at the end to 2^k + 1 rows / columns, so
    that normalising and un-normalising only scale by powers of two: integer positions
    are hit exactly and others to within a few float32 ulps. Returns [B, C, H, W] float32.
    """
    _, _, h, w = src.shape
    hp = next_pow2(max(h - 1, 1)) + 1
    wp = next_pow2(max(w - 1, 1)) + 1
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

#: The 5 x 5 median's three networks: a constant of this module (built once at import, in
#: ~0.1 ms, and never changed), not a cache.
_MEDIAN5_PLAN = median5_plan()


def _run(program: Program, inputs: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    return program.run(inputs, torch.minimum, torch.maximum)


def median5(u: torch.Tensor) -> torch.Tensor:
    """Exact 5 x 5 median of [B, H, W] with replicated edges, about 90 min/max per pixel."""
    _, h, w = u.shape
    col, pair, quad = _MEDIAN5_PLAN
    padded = _pad_replicate(u, 2)
    # Sorted columns of 5 rows: cols[r][:, y, c] is the rank r value of padded column c.
    cols = dict(zip(used_ranks(pair, 5), _run(col, {i: padded[:, i : i + h] for i in range(5)})))
    # pairs[r][:, y, c]: rank r of padded columns c and c + 1.
    pairs_in = {r: c[:, :, : w + 2] for r, c in cols.items()}
    pairs_in.update({5 + r: c[:, :, 1 : w + 3] for r, c in cols.items()})
    pairs = dict(zip(used_ranks(quad, 10), _run(pair, pairs_in)))
    # quads[j][:, y, x]: rank 7 + j of padded columns x .. x + 3.
    quad_in = {r: m[:, :, :w] for r, m in pairs.items()}
    quad_in.update({10 + r: m[:, :, 2 : w + 2] for r, m in pairs.items()})
    quads = _run(quad, quad_in)
    last = [cols[r][:, :, 4 : w + 4] for r in range(5)]
    # Rank 12 (the 13th value) of the union of a sorted 20-list A and a sorted 5-list B:
    # min over j of max(A[12 - j], B[j - 1]), with A[12] alone for j = 0.
    med = quads[5]
    for j in range(1, 6):
        med = torch.minimum(med, torch.maximum(quads[5 - j], last[j - 1]))
    return med


def median_filter(
    u: torch.Tensor, k: int, plan: tuple[Program, Program] | None = None
) -> torch.Tensor:
    """Exact k x k median of [B, H, W] with replicated edges (OpenCV medianBlur on float).

    ``plan``: the networks of a k x k median, k != 5 (``OpsCache.median_plan(k)``, or
    ``networks.median_plan(k)``; built here when ``None``). Code that ``torch.compile``
    traces passes it in, built outside the traced code."""
    if k == 5:
        return median5(u)
    _, h, w = u.shape
    r = k // 2
    col_sort, select = median_plan(k) if plan is None else plan
    padded = _pad_replicate(u, r)
    ranks = used_ranks(select, k)
    sorted_cols = dict(zip(ranks, _run(col_sort, {i: padded[:, i : i + h] for i in range(k)})))
    inputs = {i: sorted_cols[i % k][:, :, i // k : i // k + w] for i in select.used_inputs}
    return _run(select, inputs)[0]


# --------------------------------------------------------------------------------------
# What a kernel path remembers between calls


class OpsCache:
    """The ops' derived constants, remembered by the object that owns this cache.

    Each torch kernel path object makes one (``paths.EagerPath.ops_cache``) and passes it
    to :func:`downscale`, :func:`resize_to` and :func:`median_filter`; the solver owns the
    path objects, and a worker's models own the solver, so what is remembered lives and
    dies with them. Values are exactly what the pure functions compute.

    * :meth:`taps`: the resize taps per (input size, output size, scale, device); at most
      ``max_taps`` of them, the least recently used forgotten first (a pyramid of one
      frame size needs about 4 per level);
    * :meth:`median_plan`: the median networks per window size.

    Safe to share between threads.
    """

    def __init__(self, max_taps: int = 256) -> None:
        if max_taps < 1:
            raise ValueError(f"max_taps must be >= 1, got {max_taps}")
        self.max_taps = max_taps
        self._taps: OrderedDict[tuple[int, int, float, str], Taps] = OrderedDict()
        self._plans: dict[int, tuple[Program, Program]] = {}
        self._lock = threading.Lock()

    def taps(self, n_in: int, n_out: int, scale: float, device: torch.device | str) -> Taps:
        """:func:`linear_taps` of these arguments, computed once per key."""
        key = (n_in, n_out, scale, str(device))
        with self._lock:
            found = self._taps.get(key)
            if found is not None:
                self._taps.move_to_end(key)
                return found
        taps = linear_taps(n_in, n_out, scale, key[3])
        with self._lock:
            self._taps[key] = taps
            self._taps.move_to_end(key)
            while len(self._taps) > self.max_taps:
                self._taps.popitem(last=False)
        return taps

    def median_plan(self, k: int) -> tuple[Program, Program]:
        """``networks.median_plan(k)``, built once per ``k`` (k != 5)."""
        with self._lock:
            found = self._plans.get(k)
        if found is None:
            found = median_plan(k)
            with self._lock:
                found = self._plans.setdefault(k, found)
        return found

    def __len__(self) -> int:
        """Entries held (taps and plans)."""
        with self._lock:
            return len(self._taps) + len(self._plans)


# --------------------------------------------------------------------------------------
# One primal-dual iteration


def dual_step(
    p1: torch.Tensor, p2: torch.Tensor, u: torch.Tensor, taut: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual update: p <- (p + taut * grad u) / (1 + taut * |grad u|)."""
    ux, uy = forward_gradient(u)
    norm = 1.0 + taut * torch.hypot(ux, uy)
    return (p1 + taut * ux) / norm, (p2 + taut * uy) / norm


def iteration(
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
    n1 = u1 + step * i1wx + theta * divergence(p11, p12)
    n2 = u2 + step * i1wy + theta * divergence(p21, p22)
    d1 = n1 - u1
    d2 = n2 - u2
    error = (d1 * d1 + d2 * d2).sum(dim=(1, 2))
    p11, p12 = dual_step(p11, p12, n1, taut)
    p21, p22 = dual_step(p21, p22, n2, taut)
    return n1, n2, p11, p12, p21, p22, error


def iteration_gamma(
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
    """As ``iteration`` with the illumination variable u3 and its duals (p31, p32)."""
    rho = rho_c + (i1wx * u1 + i1wy * u2) + gamma * u3
    step = torch.clamp(rho * neg_inv_grad, -l_t, l_t)
    n1 = u1 + step * i1wx + theta * divergence(p11, p12)
    n2 = u2 + step * i1wy + theta * divergence(p21, p22)
    n3 = u3 + step * gamma + theta * divergence(p31, p32)
    d1 = n1 - u1
    d2 = n2 - u2
    d3 = n3 - u3
    error = (d1 * d1 + d2 * d2 + d3 * d3).sum(dim=(1, 2))
    p11, p12 = dual_step(p11, p12, n1, taut)
    p21, p22 = dual_step(p21, p22, n2, taut)
    p31, p32 = dual_step(p31, p32, n3, taut)
    return n1, n2, n3, p11, p12, p21, p22, p31, p32, error


def keep_live(
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


def masked_iteration(
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
    """``iteration`` for the pairs marked in ``live`` (bool [B]); the others keep their state.

    Returns (u1, u2, p11, p12, p21, p22, live) with live[b] cleared once the sum of squared
    updates of pair b is at most ``eps`` (0-d float32 tensor): OpenCV's stopping rule, kept
    on the device.
    """
    old = (u1, u2, p11, p12, p21, p22)
    *new, error = iteration(*old, i1wx, i1wy, neg_inv_grad, rho_c, l_t, theta, taut)
    return keep_live(new, old, live, error, eps)


def masked_iteration_gamma(
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
    """As ``masked_iteration`` with the illumination variable u3 and its duals (p31, p32)."""
    old = (u1, u2, u3, p11, p12, p21, p22, p31, p32)
    *new, error = iteration_gamma(*old, i1wx, i1wy, neg_inv_grad, rho_c, l_t, theta, taut, gamma)
    return keep_live(new, old, live, error, eps)
