"""Where a fitting step's time goes on a GPU: torch.profiler over 20 steps at 256x256.

    PYTHONPATH=src:. python benchmarks/gpu_profile.py [cuda|cpu]
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from lotterycli.codec.model import LotteryModel
from lotterycli.config import load_task_config
from lotterycli.fit import Schedule, fit, mse

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
arch = load_task_config("compress").architecture
model = LotteryModel(256, 256, arch, seed=0, mask_ratio=0.3).to(dev)
target = torch.rand(3, 256, 256, device=dev)
fit(model, mse(target), 1e-3, Schedule(steps=3))
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
with profile(activities=acts) as prof:
    fit(model, mse(target), 1e-3, Schedule(steps=20, hard_fraction=0.0))
key = "self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total"
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
if dev == "cuda":
    print(prof.key_averages().table(sort_by=key, row_limit=12))
