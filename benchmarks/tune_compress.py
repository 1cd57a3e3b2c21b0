"""Schedule tuning for compression: run fits listed in a JSON-lines job file on N single-thread workers.

    python benchmarks/tune_compress.py jobs.jsonl results.jsonl 2
    # each job: {"img": 3, "steps": 600, "lam": 0.002, "sched": {"lr": 0.02}, "arch": {"arm_hidden": 16}}

Each result line adds bpp (real file), PSNR (decoded file), cost = MSE + lambda * bpp (x 1e4), seconds and
the file's size breakdown. benchmarks/results/tuning-compress-600steps.jsonl was made this way.
"""
import sys, json, dataclasses, time, os
from multiprocessing import Pool
def job(spec):
    import torch
    torch.set_num_threads(1)
    from lotterycli.images import read_image
    from lotterycli.config import load_task_config
    from lotterycli.compress import compress_image
    from lotterycli.bitstream.container import describe
    i, size = spec['img'], spec.get('size', 256)
    from pathlib import Path
    kodak = Path(os.environ.get('LOTTERY_KODAK', Path(__file__).resolve().parents[2] / 'shared/data/kodak'))
    img = read_image(kodak / f'kodim{i:02d}.png')
    H, W = img.shape[1:]
    x = img[:, (H-size)//2:(H-size)//2+size, (W-size)//2:(W-size)//2+size].contiguous()
    cfg = load_task_config('compress', overrides={'steps': spec['steps'], 'lambda': spec['lam'], 'mask_ratio': spec.get('mask_ratio')})
    sched = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get('sched', {}).items()}
    cfg.schedule = dataclasses.replace(cfg.schedule, **sched)
    from lotterycli.codec.architecture import Architecture
    arch = Architecture.from_dict(spec.get('arch', {}))
    r = compress_image(x, cfg, device='cpu', arch=arch)
    d = describe(r.data)['sizes']
    cost = (10 ** (-r.psnr / 10)) + spec['lam'] * r.bpp
    return dict(spec, bpp=round(r.bpp, 4), psnr=round(r.psnr, 2), cost=round(cost * 1e4, 3), s=round(r.seconds, 1),
                best_step=r.fit.best_step, nets=d['networks'], mask=d['mask'], lat=d['latents'])
if __name__ == '__main__':
    specs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    with Pool(int(sys.argv[3]) if len(sys.argv) > 3 else 2) as p, open(sys.argv[2], 'a') as out:
        for res in p.imap_unordered(job, specs):
            out.write(json.dumps(res) + '\n'); out.flush()
