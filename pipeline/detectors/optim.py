"""Optimisers and learning-rate schedules of the detectors' training recipes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


class StableAdamW(torch.optim.Optimizer):
    """AdamW with AdaFactor-style update clipping (Wortsman et al., "Stable and low-precision training
    for large-scale vision-language models"), optionally with AMSGrad, as Dinomaly's recipe uses.

    Per parameter tensor the step size is lr / max(1, RMS(g^2 / v_hat)): when the current squared
    gradient is much larger than its running average (a loss spike), the update shrinks instead of
    exploding. Otherwise it is exactly AdamW (decoupled weight decay lr * wd * p).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": amsgrad})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(grad)
                    state["v"] = torch.zeros_like(grad)
                    if group["amsgrad"]:
                        state["v_max"] = torch.zeros_like(grad)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                v = state["v"]
                if group["amsgrad"]:
                    torch.maximum(state["v_max"], v, out=state["v_max"])
                    v = state["v_max"]
                m_hat = state["m"] / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)
                rms = torch.sqrt(torch.mean(grad * grad / v_hat.clamp_min(group["eps"] ** 2))).item()
                lr = group["lr"] / max(1.0, rms)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_((m_hat / (v_hat.sqrt() + group["eps"])).to(p.dtype), alpha=-lr)
        return loss


def step_schedule(iterations: int, step_at: float, factor: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: 1, then ``factor`` from ``step_at`` of the iterations on (ViTAD)."""
    boundary = int(round(step_at * iterations))
    return lambda i: 1.0 if i < boundary else factor


def warmup_cosine_schedule(iterations: int, warmup: float, final_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from 0 over ``warmup`` of the iterations, then cosine decay to
    ``final_ratio`` at the last iteration (Dinomaly)."""
    warm = max(1, int(round(warmup * iterations)))

    def multiplier(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        progress = (i - warm) / max(1, iterations - 1 - warm)
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier
