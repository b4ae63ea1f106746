"""The ``fused`` kernel path: the whole TV-L1 solver as fused CPU kernels (numba).

OpenCV's DualTVL1 step by step (see :mod:`tristream.models.tvl1`), compiled with numba
into a few loops per pyramid level instead of ~60 array operations per inner iteration:

* one inner iteration is ONE pass over the rows: on row ``y`` the thresholding step, the
  divergence of the dual variables and the primal update, then on row ``y - 1`` (whose
  flow and the flow below it are now new) the forward gradient and the dual update. Each
  row is read and written once per iteration while the pair's planes stay in the caches;
* the warp of I1 and its two gradients is one pass that computes the bicubic taps once
  for the three images, followed by the thresholding constants;
* the 5 x 5 median is a pruned sorting network (202 min/max per pixel, generated from the
  eager path's network; :mod:`.cpu_median`) that vectorises across a row;
* a batch is solved in parallel over pairs (numba ``prange``, one pair per thread at a
  time, the pair's working set in that core's caches). A single pair is solved with its
  row loops split over the threads instead (two passes per inner iteration then).

Arithmetic: float32 throughout, in OpenCV's order of operations (``tvl1flow.cpp``),
IEEE division and square root (no fast-math), no fused multiply-add. The stopping rule
compares OpenCV's float32 sum of squared updates, accumulated pixel by pixel in row-major
order, with ``epsilon**2 * area``: a vectorised float64 sum decides unless it lies within
its rounding bound of the threshold, and then the sequential float32 sum is taken, so the
decision is OpenCV's. What is not bit-exact: the bicubic weights (OpenCV's SIMD remap
rounds its own way; the difference is ~1e-6 relative, as between OpenCV builds with and
without AVX2) and the upscaling between levels where OpenCV uses Intel IPP.

Not supported here (the solver falls back to the eager path with a warning): ``gamma``
!= 0 (OpenCV's illumination variable). Compiled code is cached on disk
(:func:`cache_dir`): the first call in a fresh environment compiles for ~20-60 s, later
processes load it in well under a second.
"""

from __future__ import annotations

import threading

import numpy as np

from tristream.models.tvl1.cpu_median import median as _median
from tristream.models.tvl1.cpu_numba import JIT as _JIT
from tristream.models.tvl1.cpu_numba import cache_dir, njit, numba, prange
from tristream.models.tvl1.params import TVL1Params, level_sizes

__all__ = ["cache_dir", "solve", "unavailable"]


_F = np.float32
_FLT_EPSILON = _F(np.finfo(np.float32).eps)
_A = _F(-0.75)  # OpenCV's bicubic kernel parameter
#: Floats between two planes of a pair's buffer (576 bytes), so that planes never start at
#: addresses equal modulo 4 KiB (256x340 floats are exactly 85 pages).
_PLANE_PAD = 144
#: Planes of one level's work: I1x, I1y, I1wx, I1wy, rho_c, p11, p12, p21, p22, err.
_WORK_PLANES = 10


def unavailable(params: TVL1Params) -> str | None:
    """Why the fused path cannot solve with ``params``, or ``None``."""
    if params.gamma != 0.0:
        return "the fused CPU kernels do not implement gamma != 0"
    return None


# --------------------------------------------------------------------------------------
# Resizing, gradients


@njit(**_JIT)
def _taps(n_in, n_out, scale):
    """1-D bilinear taps (OpenCV INTER_LINEAR geometry): left, right index, weights."""
    left = np.empty(n_out, np.int64)
    right = np.empty(n_out, np.int64)
    w0 = np.empty(n_out, np.float32)
    w1 = np.empty(n_out, np.float32)
    for i in range(n_out):
        pos = np.float32((i + 0.5) * scale - 0.5)
        fl = np.floor(pos)
        frac = np.float32(pos - fl)
        li = int(fl)
        if li < 0:
            li = 0
            frac = _F(0.0)
        if li >= n_in - 1:
            li = n_in - 1
            frac = _F(0.0)
        left[i] = li
        right[i] = min(li + 1, n_in - 1)
        w0[i] = _F(1.0) - frac
        w1[i] = frac
    return left, right, w0, w1


@njit(**_JIT)
def _resize(src, dst, tmp, scale_y, scale_x):
    """Bilinear resize of ``src`` into ``dst`` (OpenCV geometry, x pass then y pass);
    ``tmp`` is [src rows, dst cols] scratch; scales are source px per output px."""
    h, w = src.shape
    oh, ow = dst.shape
    xl, xr, xw0, xw1 = _taps(w, ow, scale_x)
    for y in range(h):
        s = src[y]
        t = tmp[y]
        for x in range(ow):
            t[x] = s[xl[x]] * xw0[x] + s[xr[x]] * xw1[x]
    yl, yr, yw0, yw1 = _taps(h, oh, scale_y)
    for y in range(oh):
        a = tmp[yl[y]]
        b = tmp[yr[y]]
        c0 = yw0[y]
        c1 = yw1[y]
        d = dst[y]
        for x in range(ow):
            d[x] = a[x] * c0 + b[x] * c1


@njit(**_JIT)
def _centered_gradient(src, dx, dy):
    """OpenCV's ``centeredGradient``: centred differences, one-sided halves at borders."""
    h, w = src.shape
    half = _F(0.5)
    for y in range(h):
        up = src[max(y - 1, 0)]
        cur = src[y]
        down = src[min(y + 1, h - 1)]
        for x in range(1, w - 1):
            dx[y, x] = half * (cur[x + 1] - cur[x - 1])
            dy[y, x] = half * (down[x] - up[x])
        dx[y, 0] = half * (cur[1] - cur[0])
        dy[y, 0] = half * (down[0] - up[0])
        dx[y, w - 1] = half * (cur[w - 1] - cur[w - 2])
        dy[y, w - 1] = half * (down[w - 1] - up[w - 1])


# --------------------------------------------------------------------------------------
# Bicubic warp of I1 and its gradients, then the thresholding constants


@njit(**_JIT)
def _cubic(t):
    """OpenCV's bicubic weights (Keys, a = -0.75) for fractional position ``t``."""
    x1 = t + _F(1.0)
    w0 = ((_A * x1 - _F(5.0) * _A) * x1 + _F(8.0) * _A) * x1 - _F(4.0) * _A
    w1 = ((_A + _F(2.0)) * t - (_A + _F(3.0))) * t * t + _F(1.0)
    u = _F(1.0) - t
    w2 = ((_A + _F(2.0)) * u - (_A + _F(3.0))) * u * u + _F(1.0)
    w3 = _F(1.0) - w0 - w1 - w2
    return w0, w1, w2, w3


@njit(**_JIT)
def _warp_row(y, i0, i1, i1x, i1y, u1, u2, wx_row, wy_row, rho_row):
    """Row ``y``: I1, I1x, I1y sampled bicubically at (x + u1, y + u2), zero outside (OpenCV
    ``remap(INTER_CUBIC, BORDER_CONSTANT)``), then ``rho_c = I1w - I1wx * u1 - I1wy * u2 -
    I0`` (OpenCV's ``calcGradRho``; its ``grad`` is recomputed where it is used)."""
    h, w = i1.shape
    fy = _F(y)
    for x in range(w):
        a1 = u1[y, x]
        a2 = u2[y, x]
        mx = _F(x) + a1
        my = fy + a2
        s0 = _F(0.0)
        s1 = _F(0.0)
        s2 = _F(0.0)
        if mx > _F(-4.0) and mx < _F(w + 3) and my > _F(-4.0) and my < _F(h + 3):
            fx = np.floor(mx)
            fyy = np.floor(my)
            ix = int(fx)
            iy = int(fyy)
            cx0, cx1, cx2, cx3 = _cubic(_F(mx - fx))
            cy0, cy1, cy2, cy3 = _cubic(_F(my - fyy))
            if ix >= 1 and ix + 2 < w and iy >= 1 and iy + 2 < h:
                for k in range(4):
                    r = iy - 1 + k
                    cy = cy0 if k == 0 else (cy1 if k == 1 else (cy2 if k == 2 else cy3))
                    p = i1[r]
                    q = i1x[r]
                    g = i1y[r]
                    t0 = p[ix - 1] * cx0 + p[ix] * cx1 + p[ix + 1] * cx2 + p[ix + 2] * cx3
                    t1 = q[ix - 1] * cx0 + q[ix] * cx1 + q[ix + 1] * cx2 + q[ix + 2] * cx3
                    t2 = g[ix - 1] * cx0 + g[ix] * cx1 + g[ix + 1] * cx2 + g[ix + 2] * cx3
                    s0 += t0 * cy
                    s1 += t1 * cy
                    s2 += t2 * cy
            else:
                for k in range(4):
                    r = iy - 1 + k
                    cy = cy0 if k == 0 else (cy1 if k == 1 else (cy2 if k == 2 else cy3))
                    t0 = _F(0.0)
                    t1 = _F(0.0)
                    t2 = _F(0.0)
                    if r >= 0 and r < h:
                        for j in range(4):
                            c = ix - 1 + j
                            cx = cx0 if j == 0 else (cx1 if j == 1 else (cx2 if j == 2 else cx3))
                            if c >= 0 and c < w:
                                t0 += i1[r, c] * cx
                                t1 += i1x[r, c] * cx
                                t2 += i1y[r, c] * cx
                            else:
                                t0 += _F(0.0) * cx
                                t1 += _F(0.0) * cx
                                t2 += _F(0.0) * cx
                    s0 += t0 * cy
                    s1 += t1 * cy
                    s2 += t2 * cy
        wx_row[x] = s1
        wy_row[x] = s2
        rho_row[x] = s0 - s1 * a1 - s2 * a2 - i0[y, x]


# --------------------------------------------------------------------------------------
# One inner iteration


@njit(inline="always")
def _primal_px(x, b1, b2, cx, cy, rc, e, div1, div2, l_t, nl, theta):
    """Thresholding step and primal update of pixel ``x`` given the divergence of p."""
    o1 = b1[x]
    o2 = b2[x]
    ix = cx[x]
    iy = cy[x]
    gr = ix * ix + iy * iy  # |grad I1w|^2, as calcGradRho stores it (recomputed: one load less)
    rho = rc[x] + (ix * o1 + iy * o2)
    fi = -rho / gr
    d1 = fi * ix
    d2 = fi * iy
    if not gr > _FLT_EPSILON:
        d1 = _F(0.0)
        d2 = _F(0.0)
    if rho > l_t * gr:
        d1 = nl * ix
        d2 = nl * iy
    if rho < nl * gr:
        d1 = l_t * ix
        d2 = l_t * iy
    n1 = (o1 + d1) + theta * div1
    n2 = (o2 + d2) + theta * div2
    b1[x] = n1
    b2[x] = n2
    e1 = n1 - o1
    e2 = n2 - o2
    e[x] = e1 * e1 + e2 * e2


@njit(**_JIT)
def _primal_row(y, u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta):
    """Thresholding step, divergence of p (old values) and primal update of row ``y``
    (OpenCV's ``estimateV``, ``divergence``, ``estimateU``); writes the new flow in place
    and each pixel's squared update to ``err``. The first row and column are peeled off
    so that the loop over the others vectorises."""
    w = u1.shape[1]
    a11 = p11[y]
    a12 = p12[y]
    a21 = p21[y]
    a22 = p22[y]
    b1 = u1[y]
    b2 = u2[y]
    cx = wx[y]
    cy = wy[y]
    rc = rho_c[y]
    e = err[y]
    nl = -l_t
    if y > 0:
        up12 = p12[y - 1]
        up22 = p22[y - 1]
        div1 = (a11[0] + a12[0]) - up12[0]
        div2 = (a21[0] + a22[0]) - up22[0]
        _primal_px(0, b1, b2, cx, cy, rc, e, div1, div2, l_t, nl, theta)
        for x in range(1, w):
            div1 = (a11[x] - a11[x - 1]) + (a12[x] - up12[x])
            div2 = (a21[x] - a21[x - 1]) + (a22[x] - up22[x])
            _primal_px(x, b1, b2, cx, cy, rc, e, div1, div2, l_t, nl, theta)
    else:
        div1 = a11[0] + a12[0]
        div2 = a21[0] + a22[0]
        _primal_px(0, b1, b2, cx, cy, rc, e, div1, div2, l_t, nl, theta)
        for x in range(1, w):
            div1 = (a11[x] - a11[x - 1]) + a12[x]
            div2 = (a21[x] - a21[x - 1]) + a22[x]
            _primal_px(x, b1, b2, cx, cy, rc, e, div1, div2, l_t, nl, theta)


@njit(inline="always")
def _hypot(a, b):
    """|(a, b)| in float32: sqrt of the float32 sum of squares. OpenCV calls ``hypotf``
    (correctly rounded); this is within 1 ulp of it (equal for ~83% of values) and 40% faster
    per dual update than a double-precision square root (``benchmarks/RESULTS.md``)."""
    return np.sqrt(a * a + b * b)


@njit(inline="always")
def _dual_px(x, q11, q12, q21, q22, g1x, g1y, g2x, g2y, taut):
    ng1 = _F(1.0) + taut * _hypot(g1x, g1y)
    ng2 = _F(1.0) + taut * _hypot(g2x, g2y)
    q11[x] = (q11[x] + taut * g1x) / ng1
    q12[x] = (q12[x] + taut * g1y) / ng1
    q21[x] = (q21[x] + taut * g2x) / ng2
    q22[x] = (q22[x] + taut * g2y) / ng2


@njit(**_JIT)
def _dual_row(y, u1, u2, p11, p12, p21, p22, taut):
    """Forward gradient of the new flow and dual update of row ``y`` (OpenCV's
    ``forwardGradient`` + ``estimateDualVariables``; zero gradient across the last
    column and row)."""
    h, w = u1.shape
    c1 = u1[y]
    c2 = u2[y]
    q11 = p11[y]
    q12 = p12[y]
    q21 = p21[y]
    q22 = p22[y]
    zero = _F(0.0)
    if y < h - 1:
        n1 = u1[y + 1]
        n2 = u2[y + 1]
        for x in range(w - 1):
            g1x = c1[x + 1] - c1[x]
            g2x = c2[x + 1] - c2[x]
            g1y = n1[x] - c1[x]
            g2y = n2[x] - c2[x]
            _dual_px(x, q11, q12, q21, q22, g1x, g1y, g2x, g2y, taut)
        x = w - 1
        _dual_px(x, q11, q12, q21, q22, zero, n1[x] - c1[x], zero, n2[x] - c2[x], taut)
    else:
        for x in range(w - 1):
            g1x = c1[x + 1] - c1[x]
            g2x = c2[x + 1] - c2[x]
            _dual_px(x, q11, q12, q21, q22, g1x, zero, g2x, zero, taut)
        _dual_px(w - 1, q11, q12, q21, q22, zero, zero, zero, zero, taut)


@njit(**_JIT)
def _iterate(u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta, taut):
    """One inner iteration in one pass over the rows (primal on y, dual on y - 1)."""
    h = u1.shape[0]
    for y in range(h):
        _primal_row(y, u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta)
        if y > 0:
            _dual_row(y - 1, u1, u2, p11, p12, p21, p22, taut)
    _dual_row(h - 1, u1, u2, p11, p12, p21, p22, taut)


@njit(parallel=True, **_JIT)
def _iterate_rows(u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta, taut):
    """One inner iteration as two row-parallel passes (primal, then dual): for one pair."""
    h = u1.shape[0]
    for y in prange(h):
        _primal_row(y, u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta)
    for y in prange(h):
        _dual_row(y, u1, u2, p11, p12, p21, p22, taut)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"})
def _sum_fast(err):
    """Sum of ``err`` in float64, any order (vectorised)."""
    s = 0.0
    flat = err.reshape(-1)
    for i in range(flat.size):
        s += np.float64(flat[i])
    return s


@njit(**_JIT)
def _sum_opencv(err):
    """OpenCV's error: a float32 accumulator, pixel by pixel in row-major order."""
    s = _F(0.0)
    flat = err.reshape(-1)
    for i in range(flat.size):
        s += flat[i]
    return s


@njit(**_JIT)
def _above(err, eps):
    """Whether OpenCV's float32 sum of ``err`` is > ``eps`` (float32)."""
    s = _sum_fast(err)
    # A float32 running sum of n non-negative terms is within (n - 1) * 2^-24 * sum of the
    # exact sum; the float64 sum is far closer. Outside that band the decision is certain.
    bound = s * (err.size * 6.0e-8 + 1e-12) + 1e-30
    if s - bound > eps:
        return True
    if s + bound <= eps:
        return False
    return _sum_opencv(err) > eps


# --------------------------------------------------------------------------------------
# One pair


@njit(**_JIT)
def _plane(buf, k, h, w, stride):
    return buf[k * stride : k * stride + h * w].reshape(h, w)


@njit(**_JIT)
def _solve_level(i0, i1, u1, u2, buf, stride, params, rows_parallel):
    """Refine the flow (u1, u2) on one level (OpenCV's ``procOneScale``)."""
    h, w = i0.shape
    l_t, theta, taut, eps_sq, warps, outer, inner, median = params
    eps = np.float32(eps_sq * h * w)
    i1x = _plane(buf, 0, h, w, stride)
    i1y = _plane(buf, 1, h, w, stride)
    wx = _plane(buf, 2, h, w, stride)
    wy = _plane(buf, 3, h, w, stride)
    rho_c = _plane(buf, 4, h, w, stride)
    p11 = _plane(buf, 5, h, w, stride)
    p12 = _plane(buf, 6, h, w, stride)
    p21 = _plane(buf, 7, h, w, stride)
    p22 = _plane(buf, 8, h, w, stride)
    err = _plane(buf, 9, h, w, stride)
    pad = buf[_WORK_PLANES * stride :]
    _centered_gradient(i1, i1x, i1y)
    p11[:] = 0.0
    p12[:] = 0.0
    p21[:] = 0.0
    p22[:] = 0.0
    k = int(median)
    for _ in range(int(warps)):
        for y in range(h):
            _warp_row(y, i0, i1, i1x, i1y, u1, u2, wx[y], wy[y], rho_c[y])
        above = True
        n_outer = 0
        while above and n_outer < outer:
            if k > 1:
                _median(u1, pad, k)
                _median(u2, pad, k)
            n_inner = 0
            while above and n_inner < inner:
                if rows_parallel:
                    _iterate_rows(u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta, taut)
                else:
                    _iterate(u1, u2, p11, p12, p21, p22, wx, wy, rho_c, err, l_t, theta, taut)
                above = _above(err, eps)
                n_inner += 1
            n_outer += 1


@njit(**_JIT)
def _solve_pair(i0, i1, flow, init, sizes, params, scale_step, rows_parallel):
    """The whole pyramid for one pair: uint8/float [H, W] frames -> ``flow`` [H, W, 2]."""
    n_levels = sizes.shape[0]
    h, w = i0.shape
    stride = h * w + _PLANE_PAD
    # Per level: I0, I1, u1, u2 (4 planes each, at that level's size), then the work planes.
    total = 0
    for s in range(n_levels):
        total += 4 * (sizes[s, 0] * sizes[s, 1] + _PLANE_PAD)
    pad_size = (h + 8) * (w + 8)
    work = np.zeros(total + _WORK_PLANES * stride + pad_size + stride, np.float32)
    offs = np.empty(n_levels, np.int64)
    o = 0
    for s in range(n_levels):
        offs[s] = o
        o += 4 * (sizes[s, 0] * sizes[s, 1] + _PLANE_PAD)
    wbuf = work[o:]
    tmp = wbuf[_WORK_PLANES * stride + pad_size :]
    levels = []
    for s in range(n_levels):
        hs = sizes[s, 0]
        ws = sizes[s, 1]
        st = hs * ws + _PLANE_PAD
        levels.append(
            (
                _plane(work[offs[s] :], 0, hs, ws, st),
                _plane(work[offs[s] :], 1, hs, ws, st),
                _plane(work[offs[s] :], 2, hs, ws, st),
                _plane(work[offs[s] :], 3, hs, ws, st),
            )
        )
    a0, a1, f1, f2 = levels[0]
    for y in range(h):
        for x in range(w):
            a0[y, x] = np.float32(i0[y, x])
            a1[y, x] = np.float32(i1[y, x])
    ss = np.float32(scale_step)
    if init.shape[0] == h:
        for y in range(h):
            for x in range(w):
                f1[y, x] = init[y, x, 0]
                f2[y, x] = init[y, x, 1]
    inv = 1.0 / scale_step
    for s in range(1, n_levels):
        b0, b1, g1, g2 = levels[s]
        c0, c1, e1, e2 = levels[s - 1]
        hs, ws = b0.shape
        t = tmp[: c0.shape[0] * ws].reshape(c0.shape[0], ws)
        _resize(c0, b0, t, inv, inv)
        _resize(c1, b1, t, inv, inv)
        if init.shape[0] == h:
            _resize(e1, g1, t, inv, inv)
            _resize(e2, g2, t, inv, inv)
            for y in range(hs):
                for x in range(ws):
                    g1[y, x] = g1[y, x] * ss
                    g2[y, x] = g2[y, x] * ss
    if init.shape[0] != h:
        levels[n_levels - 1][2][:] = 0.0
        levels[n_levels - 1][3][:] = 0.0
    up = np.float32(1.0 / scale_step)
    for s in range(n_levels - 1, -1, -1):
        b0, b1, g1, g2 = levels[s]
        _solve_level(
            b0, b1, g1, g2, wbuf, b0.shape[0] * b0.shape[1] + _PLANE_PAD, params, rows_parallel
        )
        if s == 0:
            break
        c0, c1, e1, e2 = levels[s - 1]
        hs, ws = b0.shape
        ho, wo = c0.shape
        t = tmp[: hs * wo].reshape(hs, wo)
        _resize(g1, e1, t, hs / ho, ws / wo)
        _resize(g2, e2, t, hs / ho, ws / wo)
        for y in range(ho):
            for x in range(wo):
                e1[y, x] = e1[y, x] * up
                e2[y, x] = e2[y, x] * up
    for y in range(h):
        for x in range(w):
            flow[y, x, 0] = f1[y, x]
            flow[y, x, 1] = f2[y, x]


@njit(parallel=True, **_JIT)
def _solve_pairs(i0, i1, flow, init, sizes, params, scale_step):
    """Pairs in parallel, each on one thread."""
    for b in prange(i0.shape[0]):
        _solve_pair(i0[b], i1[b], flow[b], init[b], sizes, params, scale_step, False)


# --------------------------------------------------------------------------------------
# Entry point

#: Serialises :func:`solve` between Python threads. Process-wide on purpose: it guards
#: numba's thread pool and thread count, of which a process has exactly one (not
#: reentrant), whichever solver or feeder calls.
_lock = threading.Lock()


def solve(
    i0: np.ndarray,
    i1: np.ndarray,
    params: TVL1Params,
    initial_flow: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """TV-L1 flow of each pair ``(i0[b], i1[b])``: float32 [B, H, W, 2] pixels (x, y).

    ``i0``, ``i1``: [B, H, W] uint8 or float32 grey levels on the 0..255 scale.
    ``initial_flow``: [B, H, W, 2] float32 when ``params.use_initial_flow``. ``threads``:
    numba threads for this call (default: numba's, i.e. all cores). Two or more pairs are
    solved in parallel over pairs; one pair with its rows split over the threads. Calls
    from several Python threads are serialised (numba's thread pool is one per process).
    """
    reason = unavailable(params)
    if reason is not None:
        raise ValueError(reason)
    b, h, w = i0.shape
    flow = np.empty((b, h, w, 2), np.float32)
    if b == 0:
        return flow
    sizes = np.array(level_sizes(h, w, params), np.int64).reshape(-1, 2)
    coefs = (
        np.float32(params.lambda_ * params.theta),
        np.float32(params.theta),
        np.float32(params.tau / params.theta),
        float(params.epsilon) ** 2,
        float(params.warps),
        float(params.outer_iterations),
        float(params.inner_iterations),
        float(params.median_filtering),
    )
    if params.use_initial_flow:
        init = np.ascontiguousarray(initial_flow, dtype=np.float32)
    else:
        init = np.zeros((b, 0, 0, 2), np.float32)
    i0 = np.ascontiguousarray(i0, dtype=np.float32)  # one compiled specialisation
    i1 = np.ascontiguousarray(i1, dtype=np.float32)
    n = numba.config.NUMBA_NUM_THREADS if threads is None else max(1, int(threads))
    with _lock:
        prev = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            if b == 1 or n == 1:
                rows = n > 1
                for k in range(b):
                    _solve_pair(
                        i0[k], i1[k], flow[k], init[k], sizes, coefs, float(params.scale_step), rows
                    )
            else:
                # Pairs differ in cost by up to ~2x: hand them out one at a time (measured
                # +1.5-5% over equal static chunks for 16 pairs on 2 threads).
                chunk = numba.set_parallel_chunksize(1)
                try:
                    _solve_pairs(i0, i1, flow, init, sizes, coefs, float(params.scale_step))
                finally:
                    numba.set_parallel_chunksize(chunk)
        finally:
            numba.set_num_threads(prev)
    return flow


def warm() -> float:
    """Compile (or load from the cache) every kernel the solver uses; returns seconds.

    Docker images run this at build time (``python -m tristream.models.tvl1.cpu --warm``)
    so that workers on the same CPU model start without compiling."""
    import time

    t0 = time.perf_counter()
    frames = np.linspace(0, 255, 3 * 24 * 32, dtype=np.float32).reshape(3, 24, 32)
    params = TVL1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=1)
    solve(frames[:2], frames[1:], params, threads=2)  # parallel over pairs
    solve(frames[:1], frames[1:2], params, threads=2)  # one pair, rows in parallel
    solve(frames[:1], frames[1:2], TVL1Params(median_filtering=3, nscales=1), threads=1)
    return time.perf_counter() - t0


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--warm"]:
        print(f"numba kernels ready in {warm():.1f} s (cache: {cache_dir()})")
    else:
        sys.exit("usage: python -m tristream.models.tvl1.cpu --warm")
