"""The protocol's estimated running time per part, printed before it runs (`--budget`)."""


from __future__ import annotations

from .suite import STEP_SECONDS_256, TASKS_BY_NAME, Config, preset_steps


def step_seconds(h: int, w: int) -> float:
    return max(0.012, STEP_SECONDS_256 * h * w / 65536)


def estimate_budget(cfg: Config, parts: list[str]) -> dict:
    """Seconds per part on 2 CPU cores (step times scaled by pixels); a rough plan."""
    c = cfg.crop or 512
    side_h, side_w = (c, c) if cfg.crop else (512, 768)
    n_img = len(cfg.images)
    notes = []
    est: dict[str, float] = {}
    # Per-file cost beyond the fitting steps (parameter quantisation, entropy coding, decode self-check):
    # ~5 s at 64x64 and ~100 s at 768x512 measured on a loaded 2-core machine; halved here.
    def overhead(h: int, w: int) -> float:
        return 3.0 + 8.0 * h * w / 65536

    fit_overhead = overhead(side_h, side_w)
    if "compress" in parts:
        steps = cfg.compress_steps
        if steps is None:
            steps, known = preset_steps(cfg.compress_preset, "compress")
            if not known:
                notes.append(f"compress: preset {cfg.compress_preset!r} assumed to run {steps} steps")
        fit = steps * step_seconds(side_h, side_w) + fit_overhead
        est["compress"] = n_img * (len(cfg.lambdas) * fit + 2.0 * len(cfg.codecs))
    if "restore" in parts:
        steps = cfg.restore_steps
        if steps is None:
            steps, known = preset_steps(cfg.restore_preset, "denoise")
            if not known:
                notes.append(f"restore: preset {cfg.restore_preset!r} assumed to run {steps} steps per member")
        px = side_h * side_w / 65536
        dip_iter = max(0.004, 0.21 * px * (cfg.dip_channels / 64) ** 2)
        per_img = 0.0
        for name in cfg.tasks:
            t = TASKS_BY_NAME[name]
            members = max(cfg.ensembles)  # one run of the largest K (smaller K are its prefixes)
            per_img += members * steps * step_seconds(side_h, side_w) + len(cfg.ensembles) * 2.0
            per_img += cfg.dip_iters * dip_iter
            per_img += {"denoise": 8.0 * px + 1.0, "inpaint": 1.0 * px, "sr": 6.0 * px}[t["task"]]
        est["restore"] = n_img * per_img
    if "speed" in parts:
        s = sum(steps * step_seconds(h, w) * 1.5 + 5 for h, w, steps in cfg.step_rate_sizes)
        for p in cfg.presets:
            steps, _ = preset_steps(p, "compress")
            s += steps * step_seconds(cfg.preset_crop, cfg.preset_crop) + overhead(cfg.preset_crop, cfg.preset_crop)
        dsteps = cfg.decode_steps if cfg.decode_steps is not None else preset_steps("fast")[0]
        s += dsteps * step_seconds(512, 768) + overhead(512, 768) + cfg.decode_repeats * 6
        s += 2 * cfg.rss_steps * step_seconds(cfg.rss_crop, cfg.rss_crop) + overhead(cfg.rss_crop, cfg.rss_crop) + 3 * 8
        est["speed"] = s
    if "engine" in parts:
        est["engine"] = sum(2 * (cfg.engine_steps + 20) * step_seconds(h, w) + 20 for w, h in cfg.engine_sizes)
        w0, h0 = cfg.engine_sizes[0]  # member batches: ~1.5x a single step's time per member on a CPU
        est["engine"] += sum(1.5 * b * (cfg.engine_steps // 8 + 7) * step_seconds(h0, w0) + 10 for b in cfg.engine_members)
    if "load" in parts:
        est["load"] = cfg.load_repeats * 5 * (cfg.load_steps * step_seconds(cfg.load_crop, cfg.load_crop) + 15)
    if "batch" in parts:
        steps = cfg.batch_steps or preset_steps("fast")[0]
        est["batch"] = 3.5 * len(cfg.images) * (steps * step_seconds(cfg.crop or 256, cfg.crop or 256) + 15)
    total = sum(est.values())
    return {"estimated_seconds": total, "breakdown": est, "notes": notes,
            "limit_seconds": cfg.time_limit_s, "wall_seconds": None}


def format_budget(cfg: Config, budget: dict) -> str:
    lines = [f"Benchmark plan ({cfg.mode}): {len(cfg.images)} images {', '.join(cfg.images)}, "
             f"crop {cfg.crop or 'full'}, device {cfg.device}"]
    for part, s in budget["breakdown"].items():
        lines.append(f"  {part:9s} ~{s / 60:6.1f} min")
    lines.append(f"  estimated total ~{budget['estimated_seconds'] / 60:.1f} min on 2 CPU cores "
                 "(rough step times; faster on a GPU, slower on a loaded machine)")
    if cfg.time_limit_s:
        lines.append(f"  hard budget: items still pending after {cfg.time_limit_s / 60:.0f} min are skipped and recorded")
    for n in budget["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


