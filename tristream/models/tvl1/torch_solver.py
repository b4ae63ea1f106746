"""The solver's driver for the torch kernel paths (eager, compiled, Triton): the pyramid,
the warpings and OpenCV's stopping rule kept on the device, over a path's warp, median
and iteration.

The stopping rule is applied per pair and kept on the device: a mask of the pairs still
iterating, under which a converged pair stops changing while the others continue. The
host reads the mask at most once per run of inner iterations on a GPU (every iteration
on CPU, where a read is free) and compacts finished pairs out of the batch there; when it
reads does not change the flow, and a pair gives the same flow alone or in a batch.
"""

from __future__ import annotations

from typing import Protocol

import torch

from tristream.models.tvl1 import ops
from tristream.models.tvl1.base import TVL1Stats
from tristream.models.tvl1.params import TVL1Params, level_sizes


class TorchOps(Protocol):
    """The three operations a torch kernel path supplies to the driver, and the path's
    :class:`~.ops.OpsCache` (the driver's resizes remember their taps there)."""

    ops_cache: ops.OpsCache

    def warp(self, images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        """``images`` [B, C, H, W] sampled at (x + u1, y + u2), zero outside."""
        ...

    def median(self, u: torch.Tensor, k: int) -> torch.Tensor:
        """Exact k x k median of [B, H, W], edges replicated."""
        ...

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
        ...


def _solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    flow: list[torch.Tensor],
    params: TVL1Params,
    path: TorchOps,
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

    i1x, i1y = ops.centered_gradient(i1)
    images = torch.stack([i1, i1x, i1y], dim=1)
    duals = [torch.zeros_like(i0) for _ in range(2 * n_primal)]
    state = list(flow) + duals  # u1, u2, (u3), p11, p12, p21, p22, (p31, p32): [B, H, W]
    for _ in range(params.warps):
        warped = path.warp(images, state[0], state[1])
        i1w, i1wx, i1wy = warped.unbind(1)
        grad = i1wx * i1wx + i1wy * i1wy
        neg_inv_grad = torch.where(grad > ops.FLT_EPSILON, -1.0 / grad, -1e30)
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
    path: TorchOps,
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


def solve(
    i0: torch.Tensor,
    i1: torch.Tensor,
    initial_flow: torch.Tensor | None,
    params: TVL1Params,
    path: TorchOps,
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
    cache = path.ops_cache
    for _ in range(1, len(level_sizes(*i0.shape[1:], params))):
        levels0.append(ops.downscale(levels0[-1], params.scale_step, cache))
        levels1.append(ops.downscale(levels1[-1], params.scale_step, cache))
        if params.use_initial_flow:
            flows = [ops.downscale(f, params.scale_step, cache) * params.scale_step for f in flows]
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
        up = [ops.resize_to(f, fh, fw, cache) for f in flows]
        for c in range(2):  # the illumination variable u3 is not rescaled
            up[c] = up[c] * (1.0 / params.scale_step)
        flows = up
    return torch.stack(flows[:2], dim=-1).contiguous()
