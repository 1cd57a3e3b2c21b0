"""Adam, written out: the update of `torch.optim.Adam` with its defaults, without torch.optim.

Why: the first use of `torch.optim` in a process imports `torch._dynamo`, which took 2.4 s on
this project's 2-core machines, on every `lottery compress` or `restore` call (a 128x128 `fast`
compression fits in about 10 s). The update below is the one torch runs on CPU tensors with the
defaults (betas 0.9 and 0.999, eps 1e-8, no weight decay, no amsgrad: its single-tensor path),
operation for operation, so fits give the same numbers as with torch's Adam on a CPU (a test
compares the two bit for bit). The update runs as torch's multi-tensor operations, one call per
operation for a whole group of parameters. On a GPU it is torch's fused Adam kernel instead, one
launch per group rather than seven (`fused`; the same formula, rounded in another order).
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

    def __init__(self, params: Iterable, lr: float = 1e-3, fused: bool | None = None):
        """`fused`: update with torch's fused Adam kernel (default: when every parameter is on a
        CUDA device, where a step's time is its kernel launches; a CPU keeps the multi-tensor
        path, whose numbers match torch's own Adam bit for bit)."""
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = [{"params": list(g["params"]), "lr": float(g.get("lr", lr))} for g in params]
        self.state: dict[torch.Tensor, dict] = {}
        if fused is None:
            every = [p for g in self.param_groups for p in g["params"]]
            fused = bool(every) and all(p.device.type == "cuda" for p in every)
        self.fused = fused

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
        """One update of every parameter that has a gradient, a group at a time with torch's
        multi-tensor ("foreach") operations: one call per operation and group rather than per
        tensor (on a CPU the same per-tensor arithmetic, so the same numbers)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = []
            for p in params:
                state = self.state.get(p)
                if state is None:
                    # torch keeps the step count as a float32 tensor and reads it with .item()
                    state = self.state[p] = {"step": 0.0, "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                             "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                state["step"] += 1.0
                states.append(state)
            if self.fused:
                self._fused_update(group["lr"], params, states)
                continue
            # Parameters of a group step together, so they share the step count (and its corrections).
            for step in sorted({st["step"] for st in states}):
                chosen = [i for i, st in enumerate(states) if st["step"] == step]
                grads = [params[i].grad for i in chosen]
                exp_avgs = [states[i]["exp_avg"] for i in chosen]
                exp_avg_sqs = [states[i]["exp_avg_sq"] for i in chosen]
                torch._foreach_lerp_(exp_avgs, grads, 1 - BETA1)
                torch._foreach_mul_(exp_avg_sqs, BETA2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - BETA2)
                bias_correction1 = 1 - BETA1**step
                bias_correction2 = 1 - BETA2**step
                step_size = group["lr"] / bias_correction1
                denom = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_div_(denom, bias_correction2**0.5)
                torch._foreach_add_(denom, EPS)
                torch._foreach_addcdiv_([params[i] for i in chosen], exp_avgs, denom, value=-step_size)

    @staticmethod
    def _fused_update(lr: float, params: list[torch.Tensor], states: list[dict]) -> None:
        """One launch for the group: torch's fused kernel, which reads each parameter's step count
        from a tensor on its device (kept beside the float count that checkpoints save)."""
        steps = []
        for st in states:
            # The tensor is trusted only if it was advanced with the float count (no device read:
            # that would wait for the GPU every step); a restored state gets a new one.
            if st.get("step_tensor_at") != st["step"] - 1.0:
                st["step_tensor"] = torch.tensor(st["step"] - 1.0, dtype=torch.float32, device=st["exp_avg"].device)
            st["step_tensor_at"] = st["step"]
            steps.append(st["step_tensor"])
        torch._foreach_add_(steps, 1.0)
        torch._fused_adam_(params, [p.grad for p in params], [st["exp_avg"] for st in states],
                           [st["exp_avg_sq"] for st in states], [], steps, lr=lr, beta1=BETA1, beta2=BETA2,
                           weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False)
