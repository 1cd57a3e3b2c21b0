"""Diagnostic behind docs/tuning.md "Instability at high lambda": compress the 256x256 kodim02 crop at
lambda 1.6e-2 with the balanced preset (1,500 steps, one thread) and print the fit's trajectory.

    PYTHONPATH=. python benchmarks/diagnose_high_lambda.py
"""
import torch, json
torch.set_num_threads(1)
from benchmarks.data import center_crop, load_image
from lotterycli.config import load_task_config
from lotterycli.compress import compress_image
from lotterycli.bitstream.container import describe
x=center_crop(load_image('kodim02'),256)
cfg=load_task_config('compress', overrides={'lambda':0.016})
hist=[]
def cb(info):
    if info.step % 50 == 1 or info.step == info.total:
        hist.append((info.step, round(info.loss,5), round(info.distortion,5), round(info.bpp,4)))
r=compress_image(x,cfg,device='cpu', progress=cb)
print(r.bpp, r.psnr, describe(r.data)['sizes'], r.fit.best_step, r.fit.best_loss)
for h in hist: print(*h)
