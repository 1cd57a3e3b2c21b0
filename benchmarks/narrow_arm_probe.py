"""Usage: python -m benchmarks.narrow_arm_probe 2,1 FILE.lottery...

For each file: fit ARMs of widths W from scratch to its latents, quantize (real search),
report total file bytes with the header's extra bytes for a width without preset."""
import copy
import sys
from dataclasses import replace

import torch

from lotterycli.bitstream.container import decode_file, encode_file
from lotterycli.compression import quantize as Q
from lotterycli.compression.arm_refit import latent_pairs, scratch_arm
from lotterycli.model.lottery_model import model_from_payload

torch.set_num_threads(1)
widths=[int(w) for w in sys.argv[1].split(',')]
tot={w:0 for w in widths}; base=0; n=0
for path in sys.argv[2:]:
    data=open(path,'rb').read(); p=decode_file(data)
    lam=float(path.split('lam=')[1].split('.lottery')[0])
    model=model_from_payload(p); pairs=latent_pairs(model)
    row=[path.split('/')[-1], len(data), f"arm{p.architecture.arm_hidden}"]
    best=len(data)
    for w in widths:
        m=copy.deepcopy(model)
        arm=scratch_arm(m, w, 600, 0.01, 0, pairs=pairs)
        Q.install_arm(m, arm)
        trials=Q._Trials(10**6, None)
        cost,q=Q._search_steps(m, "arm", {k:v.detach().clone() for k,v in arm.state_dict().items()}, None, lam, 0.0, 0.0, True, pairs, trials)
        pay=replace(p, architecture=replace(p.architecture, arm_hidden=w), modules=dict(p.modules, arm=q))
        nb=len(encode_file(pay))
        row.append(f"w{w}:{nb}")
        best=min(best,nb)
        tot[w]+=min(nb,len(data))
    base+=len(data); n+=1
    row.append(f"best {best} ({100*(best-len(data))/len(data):+.1f}%)")
    print(*row, flush=True)
print('sum base', base, {w: tot[w] for w in widths})
