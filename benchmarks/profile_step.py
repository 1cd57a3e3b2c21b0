"""Where a fitting step's time goes at a given size, and what synthesising only some pixels saves.

    python -m benchmarks.profile_step [--size 256] [--threads 1] [--observed 0.5] [--config inpaint]
                                      [--pixel-fraction 0.5]
    python -m benchmarks.profile_step --members 1,2,4,8 [--threads 2] [--size 256]
    python -m benchmarks.profile_step --bands [--size 1536] [--threads 1] [--steps 2]

Times forward + backward of each part of the model on random latents (quantization proxies,
upsampling, ARM rate, ModNet, synthesis of all pixels and of the observed fraction), then the
whole-step rate of `fit.Fitter` with whole renders, with a `PixelMSE` over a random observed
set (as inpainting's: only those pixels are synthesised), and with a loss over every pixel of
which `--pixel-fraction` is drawn afresh each step (compression, denoising), and with two or more
threads the last again with the rate on a second thread (`Fitter`'s rate_thread, what compression
runs), all without render averaging. Milliseconds are medians of repeated calls after a
warm-up; run it on a quiet machine.

`--bands`: only this: seconds per compression step of a fit in bands of rows (as an image above
2 megapixels is fitted, `model.bands`) against the same fit whole, in alternating rounds.

`measure_step_rate` is what the protocol's speed part reports as steps per second.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace


def measure_step_rate(height: int, width: int, steps: int = 20, device: str = "cpu", arch=None) -> float:
    """Fitting steps per second on a random image of the given size (after 3 warm-up steps), with
    whole renders, and with the rate on a second thread where `lottery compress` would use it
    (`rate_thread_pays`). `arch`: an Architecture; default: the compression config's."""
    import torch

    from lotterycli.config import load_task_config
    from lotterycli.fitting.loop import fit, rate_thread_pays
    from lotterycli.fitting.losses import squared_error
    from lotterycli.model.lottery_model import LotteryModel

    cfg = load_task_config("compress")
    arch = cfg.architecture if arch is None else arch
    model = LotteryModel(height, width, arch, seed=0, mask_ratio=0.3).to(device)
    target = torch.rand(3, height, width, device=device)
    split = rate_thread_pays(torch.device(device), height * width)
    fit(model, squared_error(target), 1e-3, replace(cfg.schedule, steps=3), rate_thread=split)
    start = time.perf_counter()
    fit(model, squared_error(target), 1e-3, replace(cfg.schedule, steps=steps, hard_fraction=0.0, pixel_fraction=1.0),
        rate_thread=split)
    return steps / (time.perf_counter() - start)


def _median_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def batched_synthesis_ms(arch, size: int, members: int) -> float:
    """Median ms per member of the synthesis forward + backward of `members` fits as one batched
    product (their masked random weights stacked, one `bmm` per layer for all of them).

    Why: a batched fit (many members per kernel) pays where a step is launch-bound, on a GPU; on
    a CPU it pays only if a batched product costs no more per member than a single one. Every
    member count runs the same batched code, so the ratios compare like with like.
    """
    import torch
    from torch.nn import functional as F

    from lotterycli.model.synthesis import random_weights

    n = size * size
    gen = torch.Generator().manual_seed(0)
    stacked = [torch.stack(ws) for ws in zip(*(random_weights(arch, seed) for seed in range(members)))]
    w1, w2, w3, w4 = (w.requires_grad_() for w in stacked)
    coords = torch.rand(2, n, generator=gen) * 2 - 1
    m1, m2, m3 = arch.modulation_channels  # the three layers see [h, M_k], M_k the first m_k rows
    mods = torch.rand(members, m3, n, generator=gen)
    h1, h2, h3 = arch.synth_hidden

    def run() -> None:
        m = mods.clone().requires_grad_()
        h = F.gelu(torch.matmul(w1, coords))
        h = F.gelu(torch.bmm(w2, torch.cat([h, m[:, :m1]], 1)))
        h = F.gelu(torch.bmm(w3, torch.cat([h, m[:, :m2]], 1)))
        v = torch.bmm(w4, torch.cat([h, m], 1))
        ((torch.tanh(v) + 1) * 0.5).sum().backward()

    assert w2.shape[-1] == h1 + m1 and w3.shape[-1] == h2 + m2 and w4.shape[-1] == h3 + m3
    return _median_ms(run, repeats=10) / members


def _member_counts(text: str) -> list[int]:
    """--members: positive integers, comma separated."""
    try:
        counts = [int(b) for b in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return counts


def banded_against_whole(size: int, steps: int, rounds: int = 3) -> dict[str, list[float]]:
    """Seconds per step of a size x size compression fit in bands and whole, `steps` steps per
    round, the two alternating (a busy machine slows both alike)."""
    import torch

    from lotterycli.config import load_task_config
    from lotterycli.fitting.loop import Fitter
    from lotterycli.fitting.losses import PixelMSE
    from lotterycli.model.bands import fit_band_rows
    from lotterycli.model.lottery_model import LotteryModel

    cfg = load_task_config("compress", overrides={"steps": 100000})
    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size, size, generator=gen), 5, 1, 2)[0]
    rows = fit_band_rows(size, size) or max(16, size // 4)  # below the threshold: four bands
    fitters = {}
    for name, band_rows in (("bands", rows), ("whole", 0)):
        torch.manual_seed(0)
        model = LotteryModel(size, size, cfg.architecture, 0, 0.3)
        model.set_band_rows(band_rows)
        fitters[name] = Fitter(model, PixelMSE.whole(image), cfg.lam, cfg.schedule)
        fitters[name].advance(1)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in fitters}
    for _ in range(rounds):
        for name, fitter in fitters.items():
            start = time.perf_counter()
            fitter.advance(fitter.step + steps)
            seconds[name].append((time.perf_counter() - start) / steps)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=None, help="image side (256; --bands: 1536)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--observed", type=float, default=0.5, help="fraction of pixels the loss reads")
    p.add_argument("--config", default="inpaint", help="task config whose architecture is used")
    p.add_argument("--steps", type=int, default=None, help="steps timed per step-rate measurement (60; --bands: 2)")
    p.add_argument("--pixel-fraction", type=float, default=0.5,
                   help="last line: a loss over every pixel, this fraction drawn afresh each step")
    p.add_argument("--members", default=None, type=_member_counts,
                   help="only this: the synthesis of B members batched, ms per member, for each B given (1,2,4,8)")
    p.add_argument("--bands", action="store_true", help="only this: a step in bands of rows against a whole one")
    args = p.parse_args()
    args.size = args.size or (1536 if args.bands else 256)
    args.steps = args.steps or (2 if args.bands else 60)
    if args.bands:
        import torch

        torch.set_num_threads(args.threads)
        size, seconds = args.size, banded_against_whole(args.size, args.steps)
        whole = statistics.median(seconds["whole"])
        print(f"{size}x{size}, {args.threads} thread(s), seconds per compression step (median of rounds):")
        for name, values in seconds.items():
            print(f"  {name:5s} {statistics.median(values):7.2f}  x{statistics.median(values) / whole:.2f}"
                  f"  ({', '.join(f'{v:.2f}' for v in values)})")
        return
    if args.members:
        import torch

        from lotterycli.config import load_task_config

        torch.set_num_threads(args.threads)
        arch = load_task_config(args.config).architecture
        counts = args.members
        per_member = {b: batched_synthesis_ms(arch, args.size, b) for b in counts}
        print(f"{args.size}x{args.size}, {args.threads} thread(s): synthesis forward + backward of B members as one "
              "batched product, ms per member (x the first count's):")
        for b, ms in per_member.items():
            print(f"  B = {b:3d}  {ms:7.2f}  x{ms / per_member[counts[0]]:.2f}")
        return

    import torch

    torch.set_num_threads(args.threads)
    from lotterycli.config import load_task_config
    from lotterycli.fitting.loop import Fitter
    from lotterycli.fitting.losses import PixelMSE
    from lotterycli.model.lottery_model import LotteryModel

    task_cfg = load_task_config(args.config)
    arch = task_cfg.architecture
    n = args.size
    gen = torch.Generator().manual_seed(0)
    model = LotteryModel(n, n, arch, seed=0, mask_ratio=0.3)
    with torch.no_grad():
        for g in model.latents.grids:
            g.copy_(torch.randn(g.shape, generator=gen))
    keep = torch.rand(n, n, generator=gen) < args.observed
    pixels = torch.nonzero(keep.reshape(-1)).squeeze(1)

    def proxies():
        r, s = model.latents.proxies("soft", 0.3, 1.5)
        (sum(x.sum() for x in r) + sum(x.sum() for x in s)).backward()

    def upsampling():
        model.upsampling(model.latents.scaled()).sum().backward()

    def arm():
        model.arm.rate_bits(model.latents.scaled()).backward()

    with torch.no_grad():
        features = model.upsampling(model.latents.scaled()).reshape(arch.n_levels, -1)

    def modnet():
        a, b, c = model.modnet(features.clone().requires_grad_(), n, n)
        (a.sum() + b.sum() + c.sum()).backward()

    with torch.no_grad():
        modulations = model.modnet(features, n, n)

    def synthesis(chosen):
        def run():
            mods = [m.clone().requires_grad_() for m in modulations]
            if chosen is None:
                model.synthesis(model.coords, mods).sum().backward()
            else:
                part = tuple(m.index_select(1, chosen) for m in mods)
                model.synthesis(model.coords.index_select(1, chosen), part).sum().backward()
        return run

    print(f"{n}x{n}, {args.threads} thread(s), architecture of configs/{args.config}.yaml; forward + backward, median ms:")
    for name, fn in [("quantization proxies", proxies), ("upsampling", upsampling), ("ARM rate", arm),
                     ("ModNet", modnet), ("synthesis, all pixels", synthesis(None)),
                     (f"synthesis, {len(pixels) / n / n:.0%} of pixels", synthesis(pixels))]:
        print(f"  {name:28s} {_median_ms(fn):7.2f}")

    target = torch.rand(3, n, n, generator=gen)
    flat_target = target.reshape(3, -1)[:, pixels]
    everything = torch.arange(n * n)
    every_pixel = PixelMSE(everything, target.reshape(3, -1), n * n)
    runs = [
        ("whole renders", lambda im: torch.mean((im.reshape(3, -1)[:, pixels] - flat_target) ** 2), 1.0, False),
        ("observed pixels only", PixelMSE(pixels, flat_target, n * n), 1.0, False),
        (f"pixel_fraction {args.pixel_fraction:g}", every_pixel, args.pixel_fraction, False),
    ]
    if args.threads >= 2:  # what `lottery compress` runs up to 384x384 (fitting.loop.rate_thread_pays)
        runs.append(("  + rate on 2nd thread", every_pixel, args.pixel_fraction, True))
    for label, distortion, fraction, rate_thread in runs:
        fitter = Fitter(LotteryModel(n, n, arch, seed=0, mask_ratio=0.3), distortion, 6e-4,
                        replace(task_cfg.schedule, steps=10 * args.steps, pixel_fraction=fraction, average_fraction=0.0),
                        rate_thread=rate_thread)
        fitter.advance(5)
        t = time.perf_counter()
        fitter.advance(5 + args.steps)
        print(f"  steps/s, {label:22s} {args.steps / (time.perf_counter() - t):7.2f}")


if __name__ == "__main__":
    main()
