"""Usage: PASSES=N python -m benchmarks.refine_files_probe MAXV MODULES tz|pm1|zero FILE.lottery...

RD zeroing of the networks' integers on real files: each nonzero value with |v| <= MAXV tried at
0 (then at v - sign), kept if J = D + lam * (bits of the whole file) / pixels falls."""
import copy
import sys
import time
from dataclasses import replace

import torch

from benchmarks.data import load_crops
from lotterycli.bitstream.container import decode_file, encode_file
from lotterycli.bitstream.param_coding import module_bits
from lotterycli.compression import quantize as Q
from lotterycli.fitting.losses import squared_error
from lotterycli.model.exact_render import render_payload
from lotterycli.model.lottery_model import model_from_payload

torch.set_num_threads(1)
MAXV = int(sys.argv[1]); modules = sys.argv[2].split(','); MODE = sys.argv[3]
for path in sys.argv[4:]:
    name = path.split('/')[-1].split('-lam=')[0]
    lam = float(path.split('lam=')[1].split('.lottery')[0])
    target = load_crops([name], 256)[name]
    data = open(path, 'rb').read(); p = decode_file(data)
    model = model_from_payload(p); dist = squared_error(target)
    feats = Q._fixed_features(model, dist)
    n = model.n_pixels
    def J(name_, q):
        model.load_quantized(name_, q)
        if name_ == 'arm':
            pairs = P
            d = d0; bpp = Q._hard_bpp(model, pairs)
        else:
            d = Q._hard_distortion(model, dist, feats if name_ == 'modnet' else None); bpp = bpp0
        return d + lam * (bpp + module_bits(q, name_) / n)
    from lotterycli.compression.arm_refit import latent_pairs
    P = latent_pairs(model)
    d0 = Q._hard_distortion(model, dist); bpp0 = Q._hard_bpp(model, P)
    t = time.perf_counter(); newmods = dict(p.modules); trials = 0
    gains = []
    for mname in modules:
        t1 = time.perf_counter(); tr1 = trials
        q = copy.deepcopy(p.modules[mname]); best = start = J(mname, q)
        for tn, ten in [x for _ in range(int(__import__('os').environ.get('PASSES','1'))) for x in q.tensors.items()]:
            flat = ten.view(-1)
            for i in range(flat.numel()):
                v = int(flat[i])
                if abs(v) > MAXV or (v == 0 and MODE == 'zero'): continue
                cands = (0,) if MODE == 'zero' else ((v - (1 if v > 0 else -1),) if v else ()) if MODE == 'tz' else ((v - (1 if v > 0 else -1), v + (1 if v > 0 else -1)) if v else (1, -1))
                for cand in cands:
                    flat[i] = cand; trials += 1
                    c = J(mname, q)
                    if c < best: best = c; break
                    flat[i] = v
        model.load_quantized(mname, q); newmods[mname] = q
        gains.append(f"{mname} {100*(best-start)/start:+.2f}% {trials-tr1}t {time.perf_counter()-t1:.0f}s")
        if mname == 'arm': bpp0 = Q._hard_bpp(model, P)
        else: d0 = Q._hard_distortion(model, dist)
    new = replace(p, modules=newmods); nd = encode_file(new)
    def truth(pl, nb):
        img = render_payload(pl).double() / 255.0
        mse = float(((img - target.double()) ** 2).mean())
        return mse + lam * nb * 8 / n, mse
    j0, m0 = truth(p, len(data)); j1, m1 = truth(new, len(nd))
    import math
    print(f"{name} {lam} bytes {len(data)} -> {len(nd)}  psnr {10*math.log10(1/m0):.3f} -> {10*math.log10(1/m1):.3f}  J {100*(j1-j0)/j0:+.2f}%  trials {trials} {time.perf_counter()-t:.1f}s | " + '; '.join(gains), flush=True)
