"""TV-L1 parameters: the one home of their names, types and defaults (OpenCV's).

No torch, no numba: the CLI, the config, the flow backends and every kernel path read
these. The defaults are ``cv::optflow::DualTVL1OpticalFlow``'s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

__all__ = ["DEFAULTS", "MIN_LEVEL_SIZE", "PARAM_TYPES", "TVL1Params", "level_sizes"]

#: OpenCV stops building the pyramid once a level would be narrower or shorter than this.
MIN_LEVEL_SIZE = 16


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

    Raises ValueError for a value of the wrong type (an int parameter given as a float,
    a bool for a number) or out of range.
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
        for f in fields(self):
            value = getattr(self, f.name)
            kind = PARAM_TYPES[f.name]
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                ok = ok and math.isfinite(value)
            if not ok:
                raise ValueError(
                    f"TV-L1 parameter {f.name} must be {'a finite ' if kind is float else 'an '}"
                    f"{kind.__name__}, got {value!r}"
                )
        if self.nscales < 1:
            raise ValueError(f"nscales must be >= 1, got {self.nscales}")
        if not 0.0 < self.scale_step < 1.0:
            raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step}")
        if self.theta <= 0.0:
            raise ValueError(f"theta must be > 0, got {self.theta}")
        if self.median_filtering > 1 and self.median_filtering % 2 == 0:
            raise ValueError(f"median_filtering must be odd, got {self.median_filtering}")
        for name in ("warps", "inner_iterations", "outer_iterations", "median_filtering"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


#: Type of each parameter (``float`` accepts ints too).
PARAM_TYPES: dict[str, type] = {
    "tau": float,
    "lambda_": float,
    "theta": float,
    "nscales": int,
    "warps": int,
    "epsilon": float,
    "inner_iterations": int,
    "outer_iterations": int,
    "scale_step": float,
    "gamma": float,
    "median_filtering": int,
    "use_initial_flow": bool,
}

#: The tunable parameters (all but ``use_initial_flow``) and OpenCV's defaults for them,
#: under the names every flow backend accepts (``--flow-param NAME=VALUE``).
DEFAULTS: dict[str, float | int] = {
    k: v for k, v in asdict(TVL1Params()).items() if k != "use_initial_flow"
}


def level_sizes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level, finest first, as OpenCV builds them: each level is
    the previous one resized by ``scale_step`` (sizes rounded half to even, as ``cvRound``),
    and building stops before a level narrower or shorter than 16 pixels."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = sizes[-1]
        nxt = (round(h * params.scale_step), round(w * params.scale_step))
        if nxt[0] < MIN_LEVEL_SIZE or nxt[1] < MIN_LEVEL_SIZE:
            break
        sizes.append(nxt)
    return sizes
