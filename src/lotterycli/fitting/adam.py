"""Adam, written out: the update of `torch.optim.Adam` with its defaults, without torch.optim.

Why: the first use of `torch.optim` in a process imports `torch._dynamo`, which took 2.4 s on
this project's 2-core machines, on every `lottery compress` or `restore` call (a 128x128 `fast`
compression fits in about 10 s). The update below is the one torch runs on CPU tensors with the
defaults (betas 0.9 and 0.999, eps 1e-8, no weight decay, no amsgrad: its single-tensor path),
operation for operation, so fits give the same numbers as with torch's Adam on a CPU (a test
compares the two bit for bit). On a GPU torch would batch the tensors (its "foreach" path,
the same formula in another order of float operations); this one updates tensor by tensor.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class Adam:
    """Adam over parameter groups: dicts with "params" and "lr" (the lr may be changed per step).

    `Adam([tensors], lr=0.01)` or `Adam([{"params": [...], "lr": 0.01}, ...])`, as torch's.
    Parameters whose .grad is None at a step are skipped (their moments do not move).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3):
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = [{"params": list(g["params"]), "lr": float(g.get("lr", lr))} for g in params]
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    # torch keeps the step count as a float32 tensor and reads it with .item()
                    state = self.state[p] = {"step": 0.0, "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                             "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                state["step"] += 1.0
                step = state["step"]
                grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - BETA1)
                exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
                bias_correction1 = 1 - BETA1**step
                bias_correction2 = 1 - BETA2**step
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(EPS)
                p.addcdiv_(exp_avg, denom, value=-step_size)
