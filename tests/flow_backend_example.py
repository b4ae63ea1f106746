"""A flow backend named by import path: ``--flow tests.flow_backend_example:farneback``.

What a user's own backend looks like: a plain function in an importable module, nothing
registered. Every worker process that gets the name imports this module itself.
"""

from __future__ import annotations

import cv2
import numpy as np

#: OpenCV's Farneback settings used here (its documented example values). A module
#: attribute that is not callable: ``--flow tests.flow_backend_example:FARNEBACK`` is
#: refused.
FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}


def farneback(gray: np.ndarray, **params: object) -> np.ndarray:
    """Dense Farneback flow of uint8 gray ``[T, H, W]``: float32 ``[T-1, H, W, 2]`` pixels
    (x right, y down) from frame t to t+1. Takes no TV-L1 parameters (``--flow-param``)."""
    if params:
        raise ValueError(f"farneback takes no --flow-param, got {sorted(params)}")
    out = np.empty((len(gray) - 1, *gray.shape[1:], 2), np.float32)
    for t in range(len(gray) - 1):
        out[t] = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **FARNEBACK)
    return out
