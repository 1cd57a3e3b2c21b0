"""One fit per point, then the post-fit stage twice: schedule.network_refinement off, then on.

    python -m benchmarks.refine_probe OUT.jsonl IMAGE:LAMBDA [IMAGE:LAMBDA ...]

256x256 centre crops, the `fast` preset, one torch thread; each line: bytes, PSNR, RD cost J and
seconds after the fit, both ways, and the change of J. A probe kept out of main once recorded
(docs/design.md names the commit)."""
import copy
import json
import sys
import time
from dataclasses import replace

import torch

from benchmarks.data import load_crops
from lotterycli import api
from lotterycli.compression import encoder

torch.set_num_threads(1)
out = open(sys.argv[1], 'a')
for point in sys.argv[2:]:
    name, lam = point.split(':'); lam = float(lam)
    image = load_crops([name], 256)[name]
    cfg = api.compress_config(preset='fast', lam=lam)
    orig = encoder.file_result
    res = {}
    def both(model, image, cfg, fit, start, progress=None):
        for refine in (False, True):
            m = copy.deepcopy(model)
            c = replace(cfg, schedule=replace(cfg.schedule, network_refinement=refine))
            t = time.perf_counter()
            r = orig(m, image, c, fit, start, progress)
            res[refine] = (r, time.perf_counter() - t)
        return res[True][0]
    encoder.file_result = both
    t0 = time.perf_counter()
    encoder.compress_image(image, cfg)
    total = time.perf_counter() - t0
    encoder.file_result = orig
    row = {'image': name, 'lam': lam, 'total_s': round(total, 1)}
    for refine, (r, s) in res.items():
        mse = 10 ** (-r.psnr / 10)
        row['on' if refine else 'off'] = {'bytes': r.n_bytes, 'psnr': round(r.psnr, 4), 'J': mse + lam * r.bpp, 'post_s': round(s, 1)}
    row['dJ%'] = round(100 * (row['on']['J'] - row['off']['J']) / row['off']['J'], 2)
    out.write(json.dumps(row) + '\n'); out.flush()
    print(json.dumps(row), flush=True)
