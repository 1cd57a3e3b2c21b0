"""Restoration tuning: run fits listed in a JSON-lines job file on N single-thread workers.

    python benchmarks/tune_restore.py jobs.jsonl results.jsonl 2
    # each job: {"img": 3, "task": "denoise-s25", "steps": 600, "k": 2, "size": 256,
    #            "lam": 0.003, "sched": {"average_fraction": 0.5}, "arch": {"modnet_hidden": 16},
    #            "mask_ratio": 0.5, "keep_observed": false, "candidates": 6, "screen_fraction": 0.1,
    #            "seed": 0, "warm_start": 0.5, "member_transforms": true, "classical_blend": 0.3, "save": "/tmp/renders"}

Tasks are the benchmark's: denoise-s15/s25/s50, inpaint-50, sr-x2-s5, sr-x4-s5, with the
protocol's observations (noise from numpy default_rng(1234 + i), float, unclipped). "lam" defaults
to the task config's lambda for the noise level. Each result line adds the combined PSNR of the
first k members for every k up to "k" (psnr_k; with a classical_blend, also blend_k: each mixed with
the classical estimate, whose own PSNR is "classical"), each member's PSNR, the kept and screened-out seeds,
the candidates' screening losses (x 1e4) and the seconds of the whole job ("s"; before session 5: the sum
of the members' fit seconds). With "save": DIR, the clean crop, the observation and every member's
render go to DIR/kodimII-TASK-JOBHASH.pt, for studying other ways of combining members offline.
docs/tuning.md quotes results made this way.
"""
import dataclasses
import json
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script


def _operator(task: str, size: int, index: int):
    from lotterycli.operators import Denoise, Inpaint, SuperResolution

    if task.startswith("denoise-s"):
        return "denoise", Denoise(float(task.split("-s")[1]) / 255)
    if task == "inpaint-50":
        return "inpaint", Inpaint.random(size, size, 0.5, 1234 + index)
    if task.startswith("sr-x"):
        scale, sigma = task[4:].split("-s")
        return "sr", SuperResolution(int(scale), float(sigma) / 255)
    raise ValueError(f"unknown task {task}")


def job(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from benchmarks.data import center_crop, load_image
    from lotterycli.codec.architecture import Architecture
    from lotterycli.config import load_task_config
    from lotterycli.metrics import psnr
    from lotterycli.restore import blend_classical, combine, restore_image

    i, size = spec["img"], spec.get("size", 256)
    x = center_crop(load_image(f"kodim{i:02d}"), size)
    task, op = _operator(spec["task"], size, i)
    y = op.simulate(x, 1234 + i)
    cfg = load_task_config(task, overrides={"steps": spec["steps"], "ensemble": spec.get("k", 1)})
    sched = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("sched", {}).items()}
    cfg.schedule = dataclasses.replace(cfg.schedule, **sched)
    if "mask_ratio" in spec:
        cfg.mask_ratio = spec["mask_ratio"]
    if "keep_observed" in spec:
        cfg.keep_observed = bool(spec["keep_observed"])
    cfg.seed = spec.get("seed", cfg.seed)
    cfg.warm_start = spec.get("warm_start", cfg.warm_start)
    cfg.member_transforms = spec.get("member_transforms", cfg.member_transforms)
    cfg.classical_blend = spec.get("classical_blend", cfg.classical_blend)
    cfg.candidates = spec.get("candidates", cfg.candidates)
    cfg.screen_fraction = spec.get("screen_fraction", cfg.screen_fraction)
    arch = dataclasses.replace(cfg.architecture, **spec.get("arch", {}))
    sigma = getattr(op, "sigma", 0.0)
    lam = spec.get("lam") or cfg.lambda_for(sigma * 255 if task != "inpaint" else None, getattr(op, "scale", None))
    r = restore_image(y, op, cfg, lam=lam, device="cpu", arch=arch)
    if spec.get("save"):
        import hashlib

        tag = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        Path(spec["save"]).mkdir(parents=True, exist_ok=True)
        torch.save({"x": x, "y": y, "members": r.members, "seeds": r.seeds, "spec": spec},
                   Path(spec["save"]) / f"kodim{i:02d}-{spec['task']}-{tag}.pt")
    members = [round(psnr(m, x), 2) for m in r.members]
    combined = [combine(r.members[:k], cfg.combine).clamp(0, 1) for k in range(1, len(members) + 1)]
    psnr_k = [round(psnr(c, x), 2) for c in combined]
    extra = {}
    if r.classical_image is not None:
        extra["classical"] = round(psnr(r.classical_image, x), 2)
        extra["blend_k"] = [round(psnr(blend_classical(c, r.classical_image, cfg.classical_blend), x), 2) for c in combined]
    return dict(spec, lam=lam, psnr_k=psnr_k, **extra, members=members, seeds=r.seeds, dropped=r.dropped_seeds,
                screen_losses=[round(v * 1e4, 3) for v in r.screen_losses], s=round(r.seconds, 1))


if __name__ == "__main__":
    specs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with Pool(workers) as pool, open(sys.argv[2], "a") as out:
        for res in pool.imap_unordered(job, specs):
            out.write(json.dumps(res) + "\n")
            out.flush()
