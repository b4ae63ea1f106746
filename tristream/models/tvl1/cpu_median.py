"""The exact median filter of the fused CPU kernels (OpenCV ``medianBlur`` on float32: edges
replicated, ties exact).

The 5 x 5 median (OpenCV's default ``median_filtering``) is straight-line code generated
from the pruned sorting network of :mod:`.networks` (25 loads, 202 min/max), which numba
vectorises across a row; other odd sizes use an exact insertion sort per pixel.
"""

from __future__ import annotations

import numpy as np

from tristream.models.tvl1.cpu_numba import JIT as _JIT
from tristream.models.tvl1.cpu_numba import njit
from tristream.models.tvl1.networks import median_network_lines

__all__ = ["median", "median_network_source"]


@njit(**_JIT)
def _pad_replicate(src, dst, r):
    h, w = src.shape
    for y in range(h + 2 * r):
        s = src[min(max(y - r, 0), h - 1)]
        d = dst[y]
        for x in range(w + 2 * r):
            d[x] = s[min(max(x - r, 0), w - 1)]


@njit(inline="always")
def _lo(a, b):
    return a if a < b else b


@njit(inline="always")
def _hi(a, b):
    return b if a < b else a


@njit(**_JIT)
def _median5_rows(pad, out):
    """5 x 5 median of ``pad`` [H + 4, W + 4] (replicate-padded) into ``out`` [H, W]."""
    h, w = out.shape
    for y in range(h):
        r0 = pad[y]
        r1 = pad[y + 1]
        r2 = pad[y + 2]
        r3 = pad[y + 3]
        r4 = pad[y + 4]
        o = out[y]
        for x in range(w):
            # BEGIN GENERATED median 5
            v0 = r0[x + 0]
            v1 = r0[x + 1]
            v2 = r0[x + 2]
            v3 = r0[x + 3]
            v4 = r0[x + 4]
            v5 = r1[x + 0]
            v6 = r1[x + 1]
            v7 = r1[x + 2]
            v8 = r1[x + 3]
            v9 = r1[x + 4]
            v10 = r2[x + 0]
            v11 = r2[x + 1]
            v12 = r2[x + 2]
            v13 = r2[x + 3]
            v14 = r2[x + 4]
            v15 = r3[x + 0]
            v16 = r3[x + 1]
            v17 = r3[x + 2]
            v18 = r3[x + 3]
            v19 = r3[x + 4]
            v20 = r4[x + 0]
            v21 = r4[x + 1]
            v22 = r4[x + 2]
            v23 = r4[x + 3]
            v24 = r4[x + 4]
            v25 = _lo(v0, v1)
            v26 = _hi(v0, v1)
            v27 = _lo(v2, v3)
            v28 = _hi(v2, v3)
            v29 = _lo(v4, v5)
            v30 = _hi(v4, v5)
            v31 = _lo(v6, v7)
            v32 = _hi(v6, v7)
            v33 = _lo(v8, v9)
            v34 = _hi(v8, v9)
            v35 = _lo(v10, v11)
            v36 = _hi(v10, v11)
            v37 = _lo(v12, v13)
            v38 = _hi(v12, v13)
            v39 = _lo(v14, v15)
            v40 = _hi(v14, v15)
            v41 = _lo(v16, v17)
            v42 = _hi(v16, v17)
            v43 = _lo(v18, v19)
            v44 = _hi(v18, v19)
            v45 = _lo(v20, v21)
            v46 = _hi(v20, v21)
            v47 = _lo(v22, v23)
            v48 = _hi(v22, v23)
            v49 = _lo(v25, v27)
            v50 = _hi(v25, v27)
            v51 = _lo(v26, v28)
            v52 = _hi(v26, v28)
            v53 = _lo(v51, v50)
            v54 = _hi(v51, v50)
            v55 = _lo(v29, v31)
            v56 = _hi(v29, v31)
            v57 = _lo(v30, v32)
            v58 = _hi(v30, v32)
            v59 = _lo(v57, v56)
            v60 = _hi(v57, v56)
            v61 = _lo(v33, v35)
            v62 = _hi(v33, v35)
            v63 = _lo(v34, v36)
            v64 = _hi(v34, v36)
            v65 = _lo(v63, v62)
            v66 = _hi(v63, v62)
            v67 = _lo(v37, v39)
            v68 = _hi(v37, v39)
            v69 = _lo(v38, v40)
            v70 = _hi(v38, v40)
            v71 = _lo(v69, v68)
            v72 = _hi(v69, v68)
            v73 = _lo(v41, v43)
            v74 = _hi(v41, v43)
            v75 = _lo(v42, v44)
            v76 = _hi(v42, v44)
            v77 = _lo(v75, v74)
            v78 = _hi(v75, v74)
            v79 = _lo(v45, v47)
            v80 = _hi(v45, v47)
            v81 = _lo(v46, v48)
            v82 = _hi(v46, v48)
            v83 = _lo(v81, v80)
            v84 = _hi(v81, v80)
            v85 = _lo(v49, v55)
            v86 = _hi(v49, v55)
            v87 = _lo(v54, v60)
            v88 = _hi(v54, v60)
            v89 = _lo(v87, v86)
            v90 = _hi(v87, v86)
            v91 = _lo(v53, v59)
            v92 = _hi(v53, v59)
            v93 = _lo(v52, v58)
            v94 = _hi(v52, v58)
            v95 = _lo(v93, v92)
            v96 = _hi(v93, v92)
            v97 = _lo(v91, v89)
            v98 = _hi(v91, v89)
            v99 = _lo(v95, v90)
            v100 = _hi(v95, v90)
            v101 = _lo(v96, v88)
            v102 = _hi(v96, v88)
            v103 = _lo(v61, v67)
            v104 = _hi(v61, v67)
            v105 = _lo(v66, v72)
            v106 = _hi(v66, v72)
            v107 = _lo(v105, v104)
            v108 = _hi(v105, v104)
            v109 = _lo(v65, v71)
            v110 = _hi(v65, v71)
            v111 = _lo(v64, v70)
            v112 = _hi(v64, v70)
            v113 = _lo(v111, v110)
            v114 = _hi(v111, v110)
            v115 = _lo(v109, v107)
            v116 = _hi(v109, v107)
            v117 = _lo(v113, v108)
            v118 = _hi(v113, v108)
            v119 = _lo(v114, v106)
            v120 = _hi(v114, v106)
            v121 = _lo(v73, v79)
            v122 = _hi(v73, v79)
            v123 = _lo(v78, v84)
            v124 = _hi(v78, v84)
            v125 = _lo(v123, v122)
            v126 = _hi(v123, v122)
            v127 = _lo(v77, v83)
            v128 = _hi(v77, v83)
            v129 = _lo(v76, v82)
            v130 = _hi(v76, v82)
            v131 = _lo(v129, v128)
            v132 = _hi(v129, v128)
            v133 = _lo(v127, v125)
            v134 = _hi(v127, v125)
            v135 = _lo(v131, v126)
            v136 = _hi(v131, v126)
            v137 = _lo(v132, v124)
            v138 = _hi(v132, v124)
            v139 = _lo(v85, v103)
            v140 = _hi(v85, v103)
            v141 = _lo(v100, v118)
            v142 = _hi(v100, v118)
            v143 = _lo(v141, v140)
            v144 = _hi(v141, v140)
            v145 = _lo(v98, v116)
            v146 = _hi(v98, v116)
            v147 = _lo(v102, v120)
            v148 = _hi(v102, v120)
            v149 = _lo(v147, v146)
            v150 = _hi(v147, v146)
            v151 = _lo(v145, v143)
            v152 = _hi(v145, v143)
            v153 = _lo(v149, v144)
            v154 = _hi(v149, v144)
            v155 = _lo(v150, v142)
            v156 = _hi(v150, v142)
            v157 = _lo(v97, v115)
            v158 = _hi(v97, v115)
            v159 = _lo(v101, v119)
            v160 = _hi(v101, v119)
            v161 = _lo(v159, v158)
            v162 = _hi(v159, v158)
            v163 = _lo(v99, v117)
            v164 = _hi(v99, v117)
            v165 = _lo(v94, v112)
            v167 = _lo(v165, v164)
            v168 = _hi(v165, v164)
            v169 = _lo(v163, v161)
            v170 = _hi(v163, v161)
            v171 = _lo(v167, v162)
            v172 = _hi(v167, v162)
            v173 = _lo(v168, v160)
            v174 = _hi(v168, v160)
            v175 = _lo(v157, v151)
            v176 = _hi(v157, v151)
            v177 = _lo(v169, v152)
            v178 = _hi(v169, v152)
            v179 = _lo(v170, v153)
            v180 = _hi(v170, v153)
            v181 = _lo(v171, v154)
            v182 = _hi(v171, v154)
            v183 = _lo(v172, v155)
            v184 = _hi(v172, v155)
            v185 = _lo(v173, v156)
            v186 = _hi(v173, v156)
            v187 = _lo(v174, v148)
            v189 = _lo(v121, v24)
            v190 = _hi(v121, v24)
            v191 = _lo(v136, v190)
            v192 = _hi(v136, v190)
            v193 = _lo(v134, v191)
            v194 = _hi(v134, v191)
            v195 = _lo(v138, v192)
            v196 = _hi(v138, v192)
            v197 = _lo(v135, v137)
            v198 = _hi(v135, v137)
            v199 = _lo(v133, v193)
            v200 = _hi(v133, v193)
            v201 = _lo(v197, v194)
            v202 = _hi(v197, v194)
            v203 = _lo(v198, v195)
            v204 = _hi(v198, v195)
            v205 = _lo(v130, v196)
            v206 = _hi(v130, v196)
            v208 = _hi(v139, v189)
            v209 = _lo(v182, v206)
            v212 = _hi(v209, v208)
            v214 = _hi(v178, v202)
            v215 = _lo(v186, v214)
            v219 = _lo(v215, v212)
            v224 = _hi(v176, v200)
            v225 = _lo(v184, v224)
            v227 = _lo(v180, v204)
            v232 = _hi(v227, v225)
            v240 = _hi(v232, v219)
            v248 = _hi(v175, v199)
            v250 = _hi(v183, v248)
            v252 = _hi(v179, v203)
            v253 = _lo(v187, v252)
            v257 = _lo(v253, v250)
            v260 = _hi(v177, v201)
            v261 = _lo(v185, v260)
            v263 = _lo(v181, v205)
            v268 = _hi(v263, v261)
            v275 = _lo(v268, v257)
            v292 = _hi(v275, v240)
            med = v292
            # END GENERATED median 5
            o[x] = med


@njit(**_JIT)
def _median_generic(pad, out, k):
    """k x k median (any odd k) by insertion sort per pixel: exact, not vectorised."""
    h, w = out.shape
    n = k * k
    buf = np.empty(n, np.float32)
    for y in range(h):
        for x in range(w):
            m = 0
            for i in range(k):
                for j in range(k):
                    v = pad[y + i, x + j]
                    p = m
                    while p > 0 and buf[p - 1] > v:
                        buf[p] = buf[p - 1]
                        p -= 1
                    buf[p] = v
                    m += 1
            out[y, x] = buf[n // 2]


@njit(**_JIT)
def median(u, pad, k):
    """In-place k x k median of ``u``; ``pad`` is scratch of at least (H + k - 1)(W + k - 1)."""
    h, w = u.shape
    r = k // 2
    p = pad[: (h + 2 * r) * (w + 2 * r)].reshape(h + 2 * r, w + 2 * r)
    _pad_replicate(u, p, r)
    if k == 5:
        _median5_rows(p, u)
    else:
        _median_generic(p, u, k)


_GEN_INDENT = " " * 12


def median_network_source(k: int = 5) -> list[str]:
    """Source lines of the generated block in :func:`_median5_rows`: the 25 window values
    of rows ``r0..r4`` and the 202 min/max of the pruned sorting network
    (:func:`networks.median_network_lines`). A test checks that the block equals this;
    regenerate with ``python -m tristream.models.tvl1.cpu_median``."""
    return median_network_lines(k, lambda i, dy, dx: f"r{dy}[x + {dx}]", "_lo", "_hi")


def _regenerate(path: str) -> None:
    """Rewrite the generated median block of this file."""
    with open(path) as f:
        text = f.read()
    begin = f"{_GEN_INDENT}# BEGIN GENERATED median 5\n"
    end = f"{_GEN_INDENT}# END GENERATED median 5\n"
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    body = "".join(f"{_GEN_INDENT}{line}\n" for line in median_network_source())
    with open(path, "w") as f:
        f.write(head + begin + body + end + tail)


if __name__ == "__main__":
    _regenerate(__file__)
