"""How much render averaging loses when it takes only every n-th step's render (inpainting).

    python benchmarks/average_every_study.py [--images 1,3,5,7] [--steps 1000] [--workers 2]

One inpainting member per crop (protocol observation: 256x256 centre crop, 50 % of the pixels
missing, mask seed 1234 + i; seed 0, the configs/inpaint.yaml settings) fitted with a whole render
at every step of the averaging window; each is kept, and the member's image (known pixels put back)
is scored for averages over every 1st, 2nd, 4th, 8th and 16th render of the window. The fit itself
is the same for every n (only which renders are averaged differs), so the PSNR differences are the
cost of averaging fewer renders. docs/tuning.md (session 7) quotes it.
"""
import argparse
import dataclasses
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVERY = (1, 2, 4, 8, 16)


def run(spec: tuple[int, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from benchmarks.data import center_crop, load_image
    from benchmarks.tune_restore import _operator
    from lotterycli.codec.model import LotteryModel
    from lotterycli.config import load_task_config
    from lotterycli.fit import Fitter, PixelMSE
    from lotterycli.metrics import psnr

    i, steps = spec
    x = center_crop(load_image(f"kodim{i:02d}"), 256)
    _, op = _operator("inpaint-50", 256, i)
    y = op.simulate(x, 1234 + i)
    cfg = load_task_config("inpaint")
    renders: list[torch.Tensor] = []

    class RecordingModel(LotteryModel):
        """Keeps every whole render made with gradients (the fitting steps' ones, not evaluations)."""

        def forward(self, mode="hard", temperature=0.3, noise_a=1.0, pixels=None):
            out = super().forward(mode, temperature, noise_a, pixels)
            if pixels is None and torch.is_grad_enabled():
                renders.append(out[0].detach().clone())
            return out

    torch.manual_seed(cfg.seed)  # as restore_image builds member 0
    model = RecordingModel(256, 256, cfg.architecture, cfg.seed, cfg.mask_ratio)
    pixels = torch.nonzero(op.mask.reshape(-1)).squeeze(1)
    target = y.reshape(3, -1)[:, pixels]
    schedule = dataclasses.replace(cfg.schedule, steps=steps, average_every=1)
    Fitter(model, PixelMSE(pixels, target, 256 * 256), cfg.lam, schedule).finish()
    out = {"img": i, "renders": len(renders)}
    for n in EVERY:
        image = op.keep_observed(torch.stack(renders[::n]).mean(0).clamp(0, 1), y)
        out[f"every_{n}"] = round(psnr(image, x), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="1,3,5,7")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    images = [int(s) for s in args.images.split(",")]
    with Pool(args.workers) as pool:
        rows = sorted(pool.map(run, [(i, args.steps) for i in images]), key=lambda r: r["img"])
    print("| crop | " + " | ".join(f"every {n}" for n in EVERY) + " |")
    print("|---|" + "---|" * len(EVERY))
    for r in rows:
        print(f"| kodim{r['img']:02d} | " + " | ".join(f"{r[f'every_{n}']:.3f}" for n in EVERY) + " |")
    means = [sum(r[f"every_{n}"] for r in rows) / len(rows) for n in EVERY]
    print("| mean | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()
