"""The restoration part: denoising, inpainting and super-resolution of Kodak crops by lottery
ensembles and classical baselines; PSNR, SSIM and seconds per image."""


from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import baselines as B
from .data import REPO_ROOT, center_crop, image_index, load_image
from .suite import RESULTS_DIR, TASKS_BY_NAME, Config, Deadline, error_text, image_metrics, import_api, log, mean_of


def _make_operator(spec: dict, x: torch.Tensor, seed: int):
    from lotterycli.restoration.operators import Denoise, Inpaint, SuperResolution

    sigma = spec["sigma255"] / 255.0
    if spec["task"] == "denoise":
        return Denoise(sigma=sigma)
    if spec["task"] == "sr":
        return SuperResolution(scale=spec["scale"], sigma=sigma)
    return Inpaint.random(x.shape[-2], x.shape[-1], spec["missing_ratio"], seed=seed, sigma=sigma)


def _observed_mask(op, y: torch.Tensor) -> torch.Tensor:
    m = getattr(op, "mask", None)
    if isinstance(m, torch.Tensor):
        return m.bool()
    return op.forward(torch.ones_like(y)) > 0.5


def _display_observation(spec: dict, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    y = y.detach().cpu().float().clamp(0, 1)
    if spec["task"] == "sr":
        y = torch.nn.functional.interpolate(y[None], size=size, mode="nearest")[0]
    return y


def _save_tile(img: torch.Tensor, path: Path) -> str:
    from lotterycli.images import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, img.detach().cpu().float().clamp(0, 1))
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _baseline_methods(spec: dict, cfg: Config, op, y: torch.Tensor, size: tuple[int, int]) -> list[tuple[str, Callable]]:
    sigma = spec["sigma255"] / 255.0
    avail = B.available()
    methods: list[tuple[str, Callable | str]] = []
    if spec["task"] == "denoise":
        methods.append(("BM3D", (lambda: B.bm3d_denoise(y, sigma)) if not avail["bm3d"] else avail["bm3d"]))
        methods.append(("NL-means", (lambda: B.nlmeans_denoise(y, sigma)) if not avail["skimage"] else avail["skimage"]))
    elif spec["task"] == "inpaint":
        mask = _observed_mask(op, y)
        methods.append(("biharmonic", (lambda: B.biharmonic_inpaint(y, mask)) if not avail["skimage"] else avail["skimage"]))
    else:
        methods.append(("bicubic", lambda: B.bicubic_upsample(y, size)))
        methods.append(("BM3D+bicubic", (lambda: B.bm3d_then_bicubic(y, sigma, size)) if not avail["bm3d"] else avail["bm3d"]))
    if cfg.dip_iters > 0:  # --dip-iters 0 leaves the (slow) deep image prior out
        methods.append((f"DIP ({cfg.dip_iters} it)", lambda: B.dip_restore(
            y, op.loss, size, iters=cfg.dip_iters, channels=cfg.dip_channels, seed=0, device=cfg.device)))
    return methods


def run_restore(cfg: Config, deadline: Deadline) -> dict:
    tasks = [TASKS_BY_NAME[n] for n in cfg.tasks]
    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "images": cfg.images, "crop": cfg.crop,
                            "tasks": tasks, "rows": [], "summary": [], "grids": {},
                            "lottery_settings": {"preset": cfg.restore_preset, "steps": cfg.restore_steps,
                                                 "lam": cfg.restore_lam, "ensembles": cfg.ensembles, "seed": 0},
                            "protocol": "y = op.simulate(x, seed=1234 + i) for kodim<i>; float observation, not "
                                        "clipped; metrics on the output clamped to [0, 1] vs the 8-bit ground truth"}
    try:
        import lotterycli.restoration.operators  # noqa: F401
    except Exception as exc:
        return {"status": "skipped", "reason": f"cannot import lotterycli.restoration.operators ({error_text(exc)})", "notes": []}
    api, why = import_api()
    if api is None:
        part["status"] = "partial"
        part["notes"].append(f"lottery rows skipped: {why}")
        log(f"restore: SKIP lottery: {why}")
    tiles_root = RESULTS_DIR / "tiles" / cfg.mode
    for idx, name in enumerate(cfg.images):
        i = image_index(name)
        x = center_crop(load_image(name), cfg.crop)
        size = (x.shape[-2], x.shape[-1])
        for spec in tasks:
            op = _make_operator(spec, x, seed=1234 + i)
            y = op.simulate(x, seed=1234 + i)
            grid = idx == cfg.grid_image
            tiles: list[dict] = []

            def record(method: str, img: torch.Tensor | None, seconds: float | None, extra: dict | None = None,
                       error: str | None = None):
                row = {"task": spec["name"], "method": method, "image": name, "psnr": None, "ssim": None,
                       "seconds": seconds, "error": error}
                if img is not None:
                    row.update(image_metrics(img, x))
                    if grid:
                        slug = "".join(ch if ch.isalnum() else "_" for ch in method).strip("_").lower()
                        tiles.append({"label": method, "path": _save_tile(
                            img, tiles_root / spec["name"] / f"{len(tiles) + 1:02d}_{slug}.png")})
                row.update(extra or {})
                part["rows"].append(row)
                if error is None:
                    log(f"restore: {name} {spec['name']:12s} {method:16s} {row['psnr'] or float('nan'):6.2f} dB "
                        f"SSIM {row['ssim'] or float('nan'):.4f} {seconds or 0:7.1f} s")
                else:
                    log(f"restore: {name} {spec['name']:12s} {method:16s} FAILED {error}")

            if grid:
                tiles.append({"label": "observation", "path": _save_tile(
                    _display_observation(spec, y, size), tiles_root / spec["name"] / "00_observation.png")})
            if spec["task"] in ("denoise", "inpaint"):
                # The observation itself, as a reference row (not added to the grid twice).
                m = image_metrics(y, x)
                part["rows"].append({"task": spec["name"], "method": "observation", "image": name,
                                     "seconds": 0.0, "error": None, **m})

            for method, fn in _baseline_methods(spec, cfg, op, y, size):
                if isinstance(fn, str):
                    part["notes"].append(f"{method} skipped: {fn}")
                    continue
                if deadline.passed():
                    part["status"] = "partial"
                    part["notes"].append(f"{name} {spec['name']} {method} skipped: time budget exhausted")
                    continue
                try:
                    img, secs = fn()
                    record(method, img, secs)
                except Exception as exc:
                    part["status"] = "partial"
                    record(method, None, None, error=error_text(exc))

            if api is not None:
                _restore_ensembles(api, spec, cfg, op, y, x, deadline, part, name, record)
            if grid:
                tiles.append({"label": "ground truth", "path": _save_tile(x, tiles_root / spec["name"] / "99_ground_truth.png")})
                part["grids"][spec["name"]] = tiles
    part["summary"] = summarize_restore(part["rows"])
    return part


def _restore_ensembles(api, spec, cfg, op, y, x, deadline, part, name, record) -> None:
    """Fit the largest ensemble once; report K = k for every k asked as its first k members.

    Members use seeds seed, seed+1, ..., so without screening the first k members of a K-member
    run are exactly a k-member run (same fits), combined the same way. With screening (a preset's
    `candidates`), they are the first k of the K kept members: the K=max row is what the preset
    gives; a real k-member run would keep its own k best candidates. One run of max(K) members
    instead of sum(K).
    Members may run side by side (restore's default on a CPU), so the time reported for K = k is
    the pro-rata share k / K of the whole run's time.
    """
    from lotterycli.restoration.ensemble import blend_classical, combine

    k_max = max(cfg.ensembles)
    if deadline.passed():
        part["status"] = "partial"
        part["notes"].append(f"{name} {spec['name']} lottery skipped: time budget exhausted")
        return
    try:
        t0 = time.perf_counter()
        res = api.restore(y, op, preset=cfg.restore_preset, steps=cfg.restore_steps,
                          ensemble=k_max, lam=cfg.restore_lam, seed=0, device=cfg.device)
        wall = time.perf_counter() - t0
    except Exception as exc:
        part["status"] = "partial"
        for k in cfg.ensembles:
            record(f"lottery K={k}", None, None, error=error_text(exc))
        traceback.print_exc(file=sys.stderr)
        return
    members = [image_metrics(m, x)["psnr"] for m in res.members]
    note = "lottery K=k rows are the first k members of one K=max run; their time is k/max of that run's"
    if note not in part["notes"]:
        part["notes"].append(note)
    from lotterycli.config import load_task_config

    task_cfg = load_task_config(spec["task"]).restoration
    if getattr(res, "classical_image", None) is not None and task_cfg.classical_blend > 0:
        blend_note = (f"{spec['name']} rows: the result mixes {task_cfg.classical_blend:.0%} of the classical estimate "
                      f"into the members' mean (classical_blend); 'ensemble' in the member line means that result")
        if blend_note not in part["notes"]:
            part["notes"].append(blend_note)
    for k in sorted(cfg.ensembles):
        image = blend_classical(combine(res.members[:k], task_cfg.combine), getattr(res, "classical_image", None),
                                task_cfg.classical_blend)
        record(f"lottery K={k}", image, float(res.seconds) * k / k_max,
               {"wall_seconds": wall * k / k_max, "member_psnr": members[:k], "member_psnr_mean": mean_of(members[:k]),
                "lam": getattr(res, "lam", None), "member_seeds": list(getattr(res, "seeds", []))[:k],
                "screened_out_seeds": list(getattr(res, "dropped_seeds", []))})


def summarize_restore(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("error") or r.get("psnr") is None:
            continue
        groups.setdefault((r["task"], r["method"]), []).append(r)
    return [{"task": t, "method": m, "psnr": mean_of(r["psnr"] for r in rs), "ssim": mean_of(r["ssim"] for r in rs),
             "seconds": mean_of(r["seconds"] for r in rs), "n": len(rs)} for (t, m), rs in groups.items()]


