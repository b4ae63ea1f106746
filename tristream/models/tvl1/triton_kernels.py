"""Fused Triton kernels for the TV-L1 solver: one inner iteration, and the median filter.

The ``triton`` kernel path of :mod:`tristream.models.tvl1` (see ``paths.KERNELS``):

* :func:`iteration`: one primal-dual iteration of every live pair in ONE kernel launch
  (thresholding step, divergence, primal update, forward gradient, dual update, the per-pair
  squared update), plus a small sum: the eager path needs ~60 launches. Each program
  handles ``BLOCK`` pixels of one pair and recomputes the primal update at the right and
  lower neighbour (the dual update needs the new flow there), so the new state is written
  once and read from the previous state only. Finished pairs (``live`` false) are copied
  through unchanged, which keeps OpenCV's per-pair stopping rule on the device.
* :func:`median`: the exact k x k median (edge replicated, k = 3 or 5) in one launch:
  each pixel loads its window and runs the min/max operations of a pruned sorting network
  (202 for 5 x 5), generated from the eager path's network (:func:`median_network_source`).

All float32, [B, H, W] contiguous tensors. The arithmetic follows the eager path
operation by operation, with IEEE-rounded division and square root (``div_rn``,
``sqrt_rn``); the per-pair sum runs in another order and a GPU may fuse a multiply and
an add, so the flow agrees with the eager path to float32 rounding (amplified, as between
OpenCV builds, by the median filter), not bit for bit.

Triton is an optional dependency (the ``triton`` extra). On the CPU the kernels run only
under Triton's numpy interpreter: a test mode, far slower than the eager path, never a
speed path.

What must be set before import, and why: ``TRITON_INTERPRET=1`` (the interpreter) has to
be in the environment before Triton is first imported in the process. ``@triton.jit``
decides when it decorates a function whether that becomes a compiled ``JITFunction`` or
an interpreted one, and decoration happens at import: Triton's own library functions
(``triton.language``) when Triton is imported, this module's kernels when this module
is. Changing the variable later does not change functions already decorated (Triton
still reads it at a few other places, so the process would mix both modes): set it once,
before the first import, and use a fresh process for the other mode. This module reads no
environment itself: it asks its kernel objects what they are (:func:`interpreted`), at
each launch for the block size and in :func:`unavailable` for whether the CPU can run them.
"""

from __future__ import annotations

import os

import torch

from tristream.models.tvl1.networks import sort_program
from tristream.models.tvl1.params import TVL1Params
from tristream.models.tvl1.paths import EagerPath

try:  # optional dependency
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None
    tl = None

#: Pixels per program of the iteration and median kernels when compiled (GPU), and when
#: interpreted (the interpreter pays per program and per operation, not per pixel: larger
#: blocks there). :func:`block_size` picks one per kernel at launch.
BLOCK_COMPILED = 256
BLOCK_INTERPRETED = 4096


def interpreted(kernel: object = None) -> bool:
    """Whether ``kernel`` (default: the iteration kernel) was built for Triton's CPU
    interpreter, i.e. decorated while ``TRITON_INTERPRET=1`` (see the module docstring).
    ``False`` without Triton."""
    if triton is None:
        return False
    return not isinstance(_iteration_kernel if kernel is None else kernel, triton.JITFunction)


def block_size(kernel: object) -> int:
    """Pixels per program for launching ``kernel``: :data:`BLOCK_INTERPRETED` for an
    interpreted kernel object, else :data:`BLOCK_COMPILED`."""
    return BLOCK_INTERPRETED if interpreted(kernel) else BLOCK_COMPILED


def unavailable(device: torch.device, params: TVL1Params) -> str | None:
    """Why the Triton kernels cannot solve with ``params`` on ``device``, or ``None``."""
    if triton is None:
        return "Triton is not installed (pip install 'tristream[triton]')"
    if device.type == "cpu" and not interpreted():
        return (
            "Triton kernels run on CUDA, or on the CPU only under TRITON_INTERPRET=1 (a test mode)"
        )
    if device.type not in ("cpu", "cuda"):
        return f"Triton kernels do not run on {device.type}"
    if params.gamma != 0.0:
        return "the Triton kernels do not implement the illumination term (gamma != 0)"
    if params.median_filtering > 1 and params.median_filtering not in MEDIAN_SIZES:
        return f"no fused Triton median for median_filtering={params.median_filtering}"
    return None


if triton is not None:

    @triton.jit
    def _primal(
        u1_ptr, u2_ptr, p11_ptr, p12_ptr, p21_ptr, p22_ptr, wx_ptr, wy_ptr, nig_ptr, rc_ptr,
        base, y, x, W, m, l_t, theta,
    ):  # fmt: skip
        """Old and new (u1, u2) at pixels (y, x) of the pair at ``base``, where ``m``."""
        off = base + y * W + x
        u1 = tl.load(u1_ptr + off, mask=m, other=0.0)
        u2 = tl.load(u2_ptr + off, mask=m, other=0.0)
        wx = tl.load(wx_ptr + off, mask=m, other=0.0)
        wy = tl.load(wy_ptr + off, mask=m, other=0.0)
        nig = tl.load(nig_ptr + off, mask=m, other=0.0)
        rc = tl.load(rc_ptr + off, mask=m, other=0.0)
        rho = rc + (wx * u1 + wy * u2)
        step = tl.minimum(tl.maximum(rho * nig, -l_t), l_t)
        left = m & (x > 0)
        up = m & (y > 0)
        # Backward-difference divergence, zero beyond the first row / column.
        div1 = (tl.load(p11_ptr + off, mask=m, other=0.0)
                - tl.load(p11_ptr + off - 1, mask=left, other=0.0)) + (
                tl.load(p12_ptr + off, mask=m, other=0.0)
                - tl.load(p12_ptr + off - W, mask=up, other=0.0))  # fmt: skip
        div2 = (tl.load(p21_ptr + off, mask=m, other=0.0)
                - tl.load(p21_ptr + off - 1, mask=left, other=0.0)) + (
                tl.load(p22_ptr + off, mask=m, other=0.0)
                - tl.load(p22_ptr + off - W, mask=up, other=0.0))  # fmt: skip
        n1 = u1 + step * wx + theta * div1
        n2 = u2 + step * wy + theta * div2
        return n1, n2, u1, u2

    @triton.jit
    def _iteration_kernel(
        u1_ptr, u2_ptr, p11_ptr, p12_ptr, p21_ptr, p22_ptr,
        wx_ptr, wy_ptr, nig_ptr, rc_ptr, live_ptr,
        o1_ptr, o2_ptr, o11_ptr, o12_ptr, o21_ptr, o22_ptr, err_ptr,
        H, W, n_blocks, l_t, theta, taut,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """One iteration for BLOCK pixels of pair ``program_id(1)``; partial error sum."""
        pid = tl.program_id(0)
        b = tl.program_id(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < H * W
        y = offs // W
        x = offs % W
        base = b.to(tl.int64) * H * W
        alive = tl.load(live_ptr + b) != 0
        n1, n2, u1, u2 = _primal(
            u1_ptr, u2_ptr, p11_ptr, p12_ptr, p21_ptr, p22_ptr, wx_ptr, wy_ptr, nig_ptr,
            rc_ptr, base, y, x, W, m, l_t, theta,
        )  # fmt: skip
        right = m & (x < W - 1)
        n1r, n2r, _, _ = _primal(
            u1_ptr, u2_ptr, p11_ptr, p12_ptr, p21_ptr, p22_ptr, wx_ptr, wy_ptr, nig_ptr,
            rc_ptr, base, y, x + 1, W, right, l_t, theta,
        )  # fmt: skip
        down = m & (y < H - 1)
        n1d, n2d, _, _ = _primal(
            u1_ptr, u2_ptr, p11_ptr, p12_ptr, p21_ptr, p22_ptr, wx_ptr, wy_ptr, nig_ptr,
            rc_ptr, base, y + 1, x, W, down, l_t, theta,
        )  # fmt: skip
        off = base + offs
        # Dual update with the forward gradient of the new flow (zero at the far edges).
        ux = tl.where(right, n1r - n1, 0.0)
        uy = tl.where(down, n1d - n1, 0.0)
        norm = 1.0 + taut * tl.sqrt_rn(ux * ux + uy * uy)
        p11 = tl.load(p11_ptr + off, mask=m, other=0.0)
        p12 = tl.load(p12_ptr + off, mask=m, other=0.0)
        q11 = tl.div_rn(p11 + taut * ux, norm)
        q12 = tl.div_rn(p12 + taut * uy, norm)
        ux = tl.where(right, n2r - n2, 0.0)
        uy = tl.where(down, n2d - n2, 0.0)
        norm = 1.0 + taut * tl.sqrt_rn(ux * ux + uy * uy)
        p21 = tl.load(p21_ptr + off, mask=m, other=0.0)
        p22 = tl.load(p22_ptr + off, mask=m, other=0.0)
        q21 = tl.div_rn(p21 + taut * ux, norm)
        q22 = tl.div_rn(p22 + taut * uy, norm)
        d1 = n1 - u1
        d2 = n2 - u2
        tl.store(err_ptr + b * n_blocks + pid, tl.sum(tl.where(m, d1 * d1 + d2 * d2, 0.0)))
        tl.store(o1_ptr + off, tl.where(alive, n1, u1), mask=m)
        tl.store(o2_ptr + off, tl.where(alive, n2, u2), mask=m)
        tl.store(o11_ptr + off, tl.where(alive, q11, p11), mask=m)
        tl.store(o12_ptr + off, tl.where(alive, q12, p12), mask=m)
        tl.store(o21_ptr + off, tl.where(alive, q21, p21), mask=m)
        tl.store(o22_ptr + off, tl.where(alive, q22, p22), mask=m)

    @triton.jit
    def _tap(src_ptr, base, y, x, dy, dx, H, W, m):
        """Values at (y + dy, x + dx), coordinates clamped into the image (edge replicated)."""
        yy = tl.minimum(tl.maximum(y + dy, 0), H - 1)
        xx = tl.minimum(tl.maximum(x + dx, 0), W - 1)
        return tl.load(src_ptr + base + yy * W + xx, mask=m, other=0.0)

    @triton.jit
    def _median3_kernel(src_ptr, dst_ptr, H, W, BLOCK: tl.constexpr):
        """Exact 3 x 3 median of BLOCK pixels of pair ``program_id(1)``, edges replicated."""
        pid = tl.program_id(0)
        b = tl.program_id(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < H * W
        y = offs // W
        x = offs % W
        base = b.to(tl.int64) * H * W
        # BEGIN GENERATED median 3
        v0 = _tap(src_ptr, base, y, x, -1, -1, H, W, m)
        v1 = _tap(src_ptr, base, y, x, -1, 0, H, W, m)
        v2 = _tap(src_ptr, base, y, x, -1, 1, H, W, m)
        v3 = _tap(src_ptr, base, y, x, 0, -1, H, W, m)
        v4 = _tap(src_ptr, base, y, x, 0, 0, H, W, m)
        v5 = _tap(src_ptr, base, y, x, 0, 1, H, W, m)
        v6 = _tap(src_ptr, base, y, x, 1, -1, H, W, m)
        v7 = _tap(src_ptr, base, y, x, 1, 0, H, W, m)
        v8 = _tap(src_ptr, base, y, x, 1, 1, H, W, m)
        v9 = tl.minimum(v0, v1)
        v10 = tl.maximum(v0, v1)
        v11 = tl.minimum(v2, v3)
        v12 = tl.maximum(v2, v3)
        v13 = tl.minimum(v4, v5)
        v14 = tl.maximum(v4, v5)
        v15 = tl.minimum(v6, v7)
        v16 = tl.maximum(v6, v7)
        v17 = tl.minimum(v9, v11)
        v18 = tl.maximum(v9, v11)
        v19 = tl.minimum(v10, v12)
        v20 = tl.maximum(v10, v12)
        v21 = tl.minimum(v19, v18)
        v22 = tl.maximum(v19, v18)
        v23 = tl.minimum(v13, v15)
        v24 = tl.maximum(v13, v15)
        v25 = tl.minimum(v14, v16)
        v26 = tl.maximum(v14, v16)
        v27 = tl.minimum(v25, v24)
        v28 = tl.maximum(v25, v24)
        v29 = tl.minimum(v17, v23)
        v30 = tl.maximum(v17, v23)
        v31 = tl.minimum(v22, v28)
        v32 = tl.maximum(v22, v28)
        v33 = tl.minimum(v31, v30)
        v34 = tl.maximum(v31, v30)
        v35 = tl.minimum(v21, v27)
        v36 = tl.maximum(v21, v27)
        v37 = tl.minimum(v20, v26)
        v39 = tl.minimum(v37, v36)
        v40 = tl.maximum(v37, v36)
        v42 = tl.maximum(v35, v33)
        v43 = tl.minimum(v39, v34)
        v44 = tl.maximum(v39, v34)
        v45 = tl.minimum(v40, v32)
        v48 = tl.maximum(v29, v8)
        v49 = tl.minimum(v44, v48)
        v52 = tl.maximum(v42, v49)
        v55 = tl.minimum(v43, v45)
        v60 = tl.maximum(v55, v52)
        med = v60
        # END GENERATED median 3
        tl.store(dst_ptr + base + offs, med, mask=m)

    @triton.jit
    def _median5_kernel(src_ptr, dst_ptr, H, W, BLOCK: tl.constexpr):
        """Exact 5 x 5 median of BLOCK pixels of pair ``program_id(1)``, edges replicated."""
        pid = tl.program_id(0)
        b = tl.program_id(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < H * W
        y = offs // W
        x = offs % W
        base = b.to(tl.int64) * H * W
        # BEGIN GENERATED median 5
        v0 = _tap(src_ptr, base, y, x, -2, -2, H, W, m)
        v1 = _tap(src_ptr, base, y, x, -2, -1, H, W, m)
        v2 = _tap(src_ptr, base, y, x, -2, 0, H, W, m)
        v3 = _tap(src_ptr, base, y, x, -2, 1, H, W, m)
        v4 = _tap(src_ptr, base, y, x, -2, 2, H, W, m)
        v5 = _tap(src_ptr, base, y, x, -1, -2, H, W, m)
        v6 = _tap(src_ptr, base, y, x, -1, -1, H, W, m)
        v7 = _tap(src_ptr, base, y, x, -1, 0, H, W, m)
        v8 = _tap(src_ptr, base, y, x, -1, 1, H, W, m)
        v9 = _tap(src_ptr, base, y, x, -1, 2, H, W, m)
        v10 = _tap(src_ptr, base, y, x, 0, -2, H, W, m)
        v11 = _tap(src_ptr, base, y, x, 0, -1, H, W, m)
        v12 = _tap(src_ptr, base, y, x, 0, 0, H, W, m)
        v13 = _tap(src_ptr, base, y, x, 0, 1, H, W, m)
        v14 = _tap(src_ptr, base, y, x, 0, 2, H, W, m)
        v15 = _tap(src_ptr, base, y, x, 1, -2, H, W, m)
        v16 = _tap(src_ptr, base, y, x, 1, -1, H, W, m)
        v17 = _tap(src_ptr, base, y, x, 1, 0, H, W, m)
        v18 = _tap(src_ptr, base, y, x, 1, 1, H, W, m)
        v19 = _tap(src_ptr, base, y, x, 1, 2, H, W, m)
        v20 = _tap(src_ptr, base, y, x, 2, -2, H, W, m)
        v21 = _tap(src_ptr, base, y, x, 2, -1, H, W, m)
        v22 = _tap(src_ptr, base, y, x, 2, 0, H, W, m)
        v23 = _tap(src_ptr, base, y, x, 2, 1, H, W, m)
        v24 = _tap(src_ptr, base, y, x, 2, 2, H, W, m)
        v25 = tl.minimum(v0, v1)
        v26 = tl.maximum(v0, v1)
        v27 = tl.minimum(v2, v3)
        v28 = tl.maximum(v2, v3)
        v29 = tl.minimum(v4, v5)
        v30 = tl.maximum(v4, v5)
        v31 = tl.minimum(v6, v7)
        v32 = tl.maximum(v6, v7)
        v33 = tl.minimum(v8, v9)
        v34 = tl.maximum(v8, v9)
        v35 = tl.minimum(v10, v11)
        v36 = tl.maximum(v10, v11)
        v37 = tl.minimum(v12, v13)
        v38 = tl.maximum(v12, v13)
        v39 = tl.minimum(v14, v15)
        v40 = tl.maximum(v14, v15)
        v41 = tl.minimum(v16, v17)
        v42 = tl.maximum(v16, v17)
        v43 = tl.minimum(v18, v19)
        v44 = tl.maximum(v18, v19)
        v45 = tl.minimum(v20, v21)
        v46 = tl.maximum(v20, v21)
        v47 = tl.minimum(v22, v23)
        v48 = tl.maximum(v22, v23)
        v49 = tl.minimum(v25, v27)
        v50 = tl.maximum(v25, v27)
        v51 = tl.minimum(v26, v28)
        v52 = tl.maximum(v26, v28)
        v53 = tl.minimum(v51, v50)
        v54 = tl.maximum(v51, v50)
        v55 = tl.minimum(v29, v31)
        v56 = tl.maximum(v29, v31)
        v57 = tl.minimum(v30, v32)
        v58 = tl.maximum(v30, v32)
        v59 = tl.minimum(v57, v56)
        v60 = tl.maximum(v57, v56)
        v61 = tl.minimum(v33, v35)
        v62 = tl.maximum(v33, v35)
        v63 = tl.minimum(v34, v36)
        v64 = tl.maximum(v34, v36)
        v65 = tl.minimum(v63, v62)
        v66 = tl.maximum(v63, v62)
        v67 = tl.minimum(v37, v39)
        v68 = tl.maximum(v37, v39)
        v69 = tl.minimum(v38, v40)
        v70 = tl.maximum(v38, v40)
        v71 = tl.minimum(v69, v68)
        v72 = tl.maximum(v69, v68)
        v73 = tl.minimum(v41, v43)
        v74 = tl.maximum(v41, v43)
        v75 = tl.minimum(v42, v44)
        v76 = tl.maximum(v42, v44)
        v77 = tl.minimum(v75, v74)
        v78 = tl.maximum(v75, v74)
        v79 = tl.minimum(v45, v47)
        v80 = tl.maximum(v45, v47)
        v81 = tl.minimum(v46, v48)
        v82 = tl.maximum(v46, v48)
        v83 = tl.minimum(v81, v80)
        v84 = tl.maximum(v81, v80)
        v85 = tl.minimum(v49, v55)
        v86 = tl.maximum(v49, v55)
        v87 = tl.minimum(v54, v60)
        v88 = tl.maximum(v54, v60)
        v89 = tl.minimum(v87, v86)
        v90 = tl.maximum(v87, v86)
        v91 = tl.minimum(v53, v59)
        v92 = tl.maximum(v53, v59)
        v93 = tl.minimum(v52, v58)
        v94 = tl.maximum(v52, v58)
        v95 = tl.minimum(v93, v92)
        v96 = tl.maximum(v93, v92)
        v97 = tl.minimum(v91, v89)
        v98 = tl.maximum(v91, v89)
        v99 = tl.minimum(v95, v90)
        v100 = tl.maximum(v95, v90)
        v101 = tl.minimum(v96, v88)
        v102 = tl.maximum(v96, v88)
        v103 = tl.minimum(v61, v67)
        v104 = tl.maximum(v61, v67)
        v105 = tl.minimum(v66, v72)
        v106 = tl.maximum(v66, v72)
        v107 = tl.minimum(v105, v104)
        v108 = tl.maximum(v105, v104)
        v109 = tl.minimum(v65, v71)
        v110 = tl.maximum(v65, v71)
        v111 = tl.minimum(v64, v70)
        v112 = tl.maximum(v64, v70)
        v113 = tl.minimum(v111, v110)
        v114 = tl.maximum(v111, v110)
        v115 = tl.minimum(v109, v107)
        v116 = tl.maximum(v109, v107)
        v117 = tl.minimum(v113, v108)
        v118 = tl.maximum(v113, v108)
        v119 = tl.minimum(v114, v106)
        v120 = tl.maximum(v114, v106)
        v121 = tl.minimum(v73, v79)
        v122 = tl.maximum(v73, v79)
        v123 = tl.minimum(v78, v84)
        v124 = tl.maximum(v78, v84)
        v125 = tl.minimum(v123, v122)
        v126 = tl.maximum(v123, v122)
        v127 = tl.minimum(v77, v83)
        v128 = tl.maximum(v77, v83)
        v129 = tl.minimum(v76, v82)
        v130 = tl.maximum(v76, v82)
        v131 = tl.minimum(v129, v128)
        v132 = tl.maximum(v129, v128)
        v133 = tl.minimum(v127, v125)
        v134 = tl.maximum(v127, v125)
        v135 = tl.minimum(v131, v126)
        v136 = tl.maximum(v131, v126)
        v137 = tl.minimum(v132, v124)
        v138 = tl.maximum(v132, v124)
        v139 = tl.minimum(v85, v103)
        v140 = tl.maximum(v85, v103)
        v141 = tl.minimum(v100, v118)
        v142 = tl.maximum(v100, v118)
        v143 = tl.minimum(v141, v140)
        v144 = tl.maximum(v141, v140)
        v145 = tl.minimum(v98, v116)
        v146 = tl.maximum(v98, v116)
        v147 = tl.minimum(v102, v120)
        v148 = tl.maximum(v102, v120)
        v149 = tl.minimum(v147, v146)
        v150 = tl.maximum(v147, v146)
        v151 = tl.minimum(v145, v143)
        v152 = tl.maximum(v145, v143)
        v153 = tl.minimum(v149, v144)
        v154 = tl.maximum(v149, v144)
        v155 = tl.minimum(v150, v142)
        v156 = tl.maximum(v150, v142)
        v157 = tl.minimum(v97, v115)
        v158 = tl.maximum(v97, v115)
        v159 = tl.minimum(v101, v119)
        v160 = tl.maximum(v101, v119)
        v161 = tl.minimum(v159, v158)
        v162 = tl.maximum(v159, v158)
        v163 = tl.minimum(v99, v117)
        v164 = tl.maximum(v99, v117)
        v165 = tl.minimum(v94, v112)
        v167 = tl.minimum(v165, v164)
        v168 = tl.maximum(v165, v164)
        v169 = tl.minimum(v163, v161)
        v170 = tl.maximum(v163, v161)
        v171 = tl.minimum(v167, v162)
        v172 = tl.maximum(v167, v162)
        v173 = tl.minimum(v168, v160)
        v174 = tl.maximum(v168, v160)
        v175 = tl.minimum(v157, v151)
        v176 = tl.maximum(v157, v151)
        v177 = tl.minimum(v169, v152)
        v178 = tl.maximum(v169, v152)
        v179 = tl.minimum(v170, v153)
        v180 = tl.maximum(v170, v153)
        v181 = tl.minimum(v171, v154)
        v182 = tl.maximum(v171, v154)
        v183 = tl.minimum(v172, v155)
        v184 = tl.maximum(v172, v155)
        v185 = tl.minimum(v173, v156)
        v186 = tl.maximum(v173, v156)
        v187 = tl.minimum(v174, v148)
        v189 = tl.minimum(v121, v24)
        v190 = tl.maximum(v121, v24)
        v191 = tl.minimum(v136, v190)
        v192 = tl.maximum(v136, v190)
        v193 = tl.minimum(v134, v191)
        v194 = tl.maximum(v134, v191)
        v195 = tl.minimum(v138, v192)
        v196 = tl.maximum(v138, v192)
        v197 = tl.minimum(v135, v137)
        v198 = tl.maximum(v135, v137)
        v199 = tl.minimum(v133, v193)
        v200 = tl.maximum(v133, v193)
        v201 = tl.minimum(v197, v194)
        v202 = tl.maximum(v197, v194)
        v203 = tl.minimum(v198, v195)
        v204 = tl.maximum(v198, v195)
        v205 = tl.minimum(v130, v196)
        v206 = tl.maximum(v130, v196)
        v208 = tl.maximum(v139, v189)
        v209 = tl.minimum(v182, v206)
        v212 = tl.maximum(v209, v208)
        v214 = tl.maximum(v178, v202)
        v215 = tl.minimum(v186, v214)
        v219 = tl.minimum(v215, v212)
        v224 = tl.maximum(v176, v200)
        v225 = tl.minimum(v184, v224)
        v227 = tl.minimum(v180, v204)
        v232 = tl.maximum(v227, v225)
        v240 = tl.maximum(v232, v219)
        v248 = tl.maximum(v175, v199)
        v250 = tl.maximum(v183, v248)
        v252 = tl.maximum(v179, v203)
        v253 = tl.minimum(v187, v252)
        v257 = tl.minimum(v253, v250)
        v260 = tl.maximum(v177, v201)
        v261 = tl.minimum(v185, v260)
        v263 = tl.minimum(v181, v205)
        v268 = tl.maximum(v263, v261)
        v275 = tl.minimum(v268, v257)
        v292 = tl.maximum(v275, v240)
        med = v292
        # END GENERATED median 5
        tl.store(dst_ptr + base + offs, med, mask=m)

    _MEDIAN_KERNELS = {3: _median3_kernel, 5: _median5_kernel}

#: Whether this module's kernels were built for the interpreter: :func:`interpreted`, fixed
#: when the module was imported (the kernel objects cannot change kind afterwards).
INTERPRETED = interpreted()

#: Median sizes with a fused kernel (the generated blocks above).
MEDIAN_SIZES = (3, 5)


def median_network_source(k: int) -> list[str]:
    """Source lines of the k x k median network inside ``_median{k}_kernel``.

    Generated from the pruned odd-even merge sort network of the eager path
    (``networks.sort_program``: only the min/max operations that the middle rank depends
    on): k * k clamped loads ``v<i>``, the min/max operations, and ``med``. The kernels'
    generated blocks must equal this (a test checks); regenerate with
    ``python -m tristream.models.tvl1.triton_kernels``.
    """
    n = k * k
    r = k // 2
    program = sort_program(n, [n // 2])
    lines = [
        f"v{i} = _tap(src_ptr, base, y, x, {i // k - r}, {i % k - r}, H, W, m)" for i in range(n)
    ]
    for dst, is_max, a, b in program.ops:
        lines.append(f"v{dst} = tl.{'maximum' if is_max else 'minimum'}(v{a}, v{b})")
    lines.append(f"med = v{program.outputs[0]}")
    return lines


#: GPU architectures the kernels are compiled for ahead of time in the tests (no GPU
#: needed): Ampere (A100), Hopper (H100/H200), Blackwell (B200).
AOT_ARCHS = (80, 90, 100)


def _aot_signatures() -> dict[str, tuple[object, dict[str, str], dict[str, int]]]:
    """Each kernel with the argument types the solver launches it with."""
    f32 = "*fp32"
    it = {name: f32 for name in (
        "u1_ptr", "u2_ptr", "p11_ptr", "p12_ptr", "p21_ptr", "p22_ptr",
        "wx_ptr", "wy_ptr", "nig_ptr", "rc_ptr",
    )}  # fmt: skip
    it["live_ptr"] = "*i1"
    it.update({n: f32 for n in ("o1_ptr", "o2_ptr", "o11_ptr", "o12_ptr", "o21_ptr",
                                 "o22_ptr", "err_ptr")})  # fmt: skip
    it.update({"H": "i32", "W": "i32", "n_blocks": "i32"})
    it.update({"l_t": "fp32", "theta": "fp32", "taut": "fp32", "BLOCK": "constexpr"})
    med = {"src_ptr": f32, "dst_ptr": f32, "H": "i32", "W": "i32", "BLOCK": "constexpr"}
    block = {"BLOCK": BLOCK_COMPILED}
    return {
        "iteration": (_iteration_kernel, it, block),
        "median3": (_median3_kernel, dict(med), block),
        "median5": (_median5_kernel, dict(med), block),
    }


def aot_resources(archs: tuple[int, ...] = AOT_ARCHS) -> dict[str, dict[str, int]]:
    """Compile every kernel ahead of time for CUDA ``sm_<arch>`` with Triton's own ptxas
    (no GPU, no driver) and read each cubin's resources with Triton's ``cuobjdump``.

    Returns ``{"<kernel>@sm_<arch>": {"REG": registers per thread, "STACK": bytes,
    "LOCAL": bytes, ...}}``; STACK or LOCAL above 0 means registers spilled. Raises on a
    compile error. Needs Triton imported without ``TRITON_INTERPRET`` (run it in a fresh
    process: ``python -m tristream.models.tvl1.triton_kernels --aot``).
    """
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreted():
        raise RuntimeError("aot_resources needs Triton imported without TRITON_INTERPRET")
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out: dict[str, dict[str, int]] = {}
    for name, (fn, signature, constexprs) in _aot_signatures().items():
        source = ASTSource(fn, signature, constexprs=constexprs)
        for arch in archs:
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32))
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                text = subprocess.run(
                    [tool, "--dump-resource-usage", f.name],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
            usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
            if usage is None:
                raise RuntimeError(f"no resource usage for {name} on sm_{arch}: {text!r}")
            keys = ("REG", "STACK", "SHARED", "LOCAL")
            out[f"{name}@sm_{arch}"] = dict(zip(keys, map(int, usage.groups())))
    return out


def _regenerate(path: str) -> None:
    """Rewrite the generated median blocks of this file (``python -m ...triton_kernels``)."""
    with open(path) as f:
        text = f.read()
    for k in MEDIAN_SIZES:
        begin = f"        # BEGIN GENERATED median {k}\n"
        end = f"        # END GENERATED median {k}\n"
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        body = "".join(f"        {line}\n" for line in median_network_source(k))
        text = head + begin + body + end + tail
    with open(path, "w") as f:
        f.write(text)


def _grid(b: int, h: int, w: int, block: int) -> tuple[int, int]:
    return (triton.cdiv(h * w, block), b)


def iteration(
    state: list[torch.Tensor],
    consts: list[torch.Tensor],
    live: torch.Tensor,
    eps: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One inner iteration of the live pairs, fused.

    Args:
        state: [u1, u2, p11, p12, p21, p22], float32 [B, H, W] contiguous (flow in px,
            duals unitless).
        consts: [i1wx, i1wy, neg_inv_grad, rho_c] of the current warping, float32 [B, H, W].
        live: bool [B], the pairs still iterating; the others are copied unchanged.
        eps: 0-d float32, the per-pair threshold on the sum of squared updates (px^2).
        l_t, theta, taut: lambda * theta, theta, tau / theta (float32-rounded).

    Returns:
        (new state, new live): live[b] stays true while pair b's update sum exceeds eps.
    """
    b, h, w = state[0].shape
    block = block_size(_iteration_kernel)
    grid = _grid(b, h, w, block)
    out = [torch.empty_like(t) for t in state]
    err = torch.empty((b, grid[0]), dtype=torch.float32, device=state[0].device)
    _iteration_kernel[grid](*state, *consts, live, *out, err, h, w, grid[0], l_t, theta, taut,
                            BLOCK=block)  # fmt: skip
    return out, live & (err.sum(dim=1) > eps)


def median(u: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k x k median (k in :data:`MEDIAN_SIZES`) of float32 [B, H, W] contiguous,
    edges replicated (OpenCV medianBlur); same shape."""
    b, h, w = u.shape
    out = torch.empty_like(u)
    kernel = _MEDIAN_KERNELS[k]
    block = block_size(kernel)
    kernel[_grid(b, h, w, block)](u, out, h, w, BLOCK=block)
    return out


class TritonPath(EagerPath):
    """The ``triton`` kernel path: fused iteration and median; the warp stays eager."""

    name = "triton"

    def unavailable(self, device: torch.device, params: TVL1Params) -> str | None:
        return unavailable(device, params)

    def median(self, u: torch.Tensor, k: int) -> torch.Tensor:
        return median(u.contiguous(), k)

    def iterate(
        self,
        state: list[torch.Tensor],
        consts: list[torch.Tensor],
        live: torch.Tensor,
        all_live: bool,
        eps: torch.Tensor,
        coefs: tuple[float, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if len(state) != 6:
            raise ValueError("the Triton kernels do not implement gamma != 0")
        state = [t.contiguous() for t in state]
        consts = [t.contiguous() for t in consts]
        l_t, theta, taut = coefs
        return iteration(state, consts, live, eps, l_t, theta, taut)


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["--aot"]:
        print(json.dumps(aot_resources(), indent=1, sort_keys=True))
    else:
        _regenerate(__file__)
