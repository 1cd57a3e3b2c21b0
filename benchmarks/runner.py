"""The protocol: runs its parts, merges their results with an earlier run's, and the command line
(`python -m benchmarks`).

    python -m benchmarks --quick                 smoke scale (< 20 min on 2 CPU cores)
    python -m benchmarks --full                  the protocol (hours on a CPU; budget printed first)
    python -m benchmarks --quick --only compress [--only restore ...]
    python -m benchmarks --results benchmarks/results/protocol.json    re-render docs, no computing
    python -m benchmarks --full --budget         print the plan and its estimated budget, run nothing

Parts:
- compress (`compress_suite`): `lotterycli.api.compress` at several lambdas vs JPEG / WebP / AVIF quality sweeps on
  Kodak centre crops; bpp from real file bytes, PSNR of the decoded image (the lottery file is also
  decoded again by `decompress` and checked bit-exact); BD-rate / BD-PSNR of lottery vs each codec.
- restore (`restore_suite`): kodim01-08 crops, observation by `op.simulate(x, seed=1234 + i)` for kodimNN with i = NN
  (float, not clipped); denoise sigma 15/25/50, inpaint 50 % random pixels, SR x2 / x4 with sigma 5;
  PSNR / SSIM (clamped to [0, 1], vs the 8-bit ground truth) and seconds per image for each method.
- speed (`speed_suite`): fitting steps/s (`benchmarks.profile_step.measure_step_rate`), wall time per preset, decode time of a
  768x512 file, peak RSS of `lottery compress|decompress|restore` subprocesses.
- engine: steps/s, operations per step, arithmetic against the matmul peak and peak memory of this
  checkout beside the baseline commit (`benchmarks.engine`).
- load: one `lottery compress` alone, two side by side, one beside a busy process (`benchmarks.load`).
- batch: images per hour of a shell loop, `lottery batch --jobs 1/2` and `--ray` (`benchmarks.batch`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .budget import estimate_budget, format_budget
from .compress_suite import bd_table, rd_curves, run_compress
from .data import REPO_ROOT, center_crop, list_images, load_image
from .restore_suite import run_restore, summarize_restore
from .schema import SCHEMA, sanitize, validate_results
from .speed_suite import run_speed
from .suite import (
    DOCS_DIR,
    RESULTS_DIR,
    TASKS_BY_NAME,
    Config,
    Deadline,
    error_text,
    full_config,
    log,
    machine_info,
    quick_config,
    resolve_device,
)


def run_engine(cfg: Config, deadline: Deadline) -> dict:
    """benchmarks.engine: this checkout and the baseline commit, at 256x256 and 768x512."""
    from . import engine

    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "baseline": cfg.engine_baseline, "rows": []}
    import tempfile as _tempfile

    with _tempfile.TemporaryDirectory(prefix="lottery-engine-") as tmp:
        trees = {"this checkout": REPO_ROOT / "src"}
        try:
            trees[cfg.engine_baseline] = engine.baseline_tree(cfg.engine_baseline, Path(tmp))
        except Exception as exc:
            part["status"] = "partial"
            part["notes"].append(f"baseline {cfg.engine_baseline} not measured: {error_text(exc)}")
        for width, height in cfg.engine_sizes:
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(cfg.engine_rounds):  # alternate the trees: ratios of one sitting
                for name, src in trees.items():
                    if deadline.passed():
                        part["status"] = "partial"
                        break
                    log(f"engine: {name} at {width}x{height}")
                    try:
                        runs[name].append(engine.probe(src, height, width, cfg.engine_steps, torch.get_num_threads()))
                    except Exception as exc:
                        part["status"] = "partial"
                        part["notes"].append(f"{name} {width}x{height}: {error_text(exc)}")
            for name, rows in runs.items():
                if rows:
                    median = sorted(rows, key=lambda r: r["steps_per_second"])[len(rows) // 2]
                    part["rows"].append({"tree": name, "width": width, "height": height, "threads": torch.get_num_threads(),
                                         "rounds": len(rows), "all_steps_per_second": [r["steps_per_second"] for r in rows],
                                         **median})
    # restoration's member batch (this checkout only): operations per member, member-steps/s
    width, height = cfg.engine_sizes[0]
    part["members"] = []
    for members in cfg.engine_members:
        if deadline.passed():
            part["status"] = "partial"
            break
        log(f"engine: {members} members batched at {width}x{height}")
        try:
            part["members"].append(engine.member_probe(height, width, members, max(3, cfg.engine_steps // 8),
                                                       torch.get_num_threads()))
        except Exception as exc:
            part["status"] = "partial"
            part["notes"].append(f"{members} members batched: {error_text(exc)}")
    return part


def run_load(cfg: Config, deadline: Deadline) -> dict:
    """benchmarks.load on the kodim01 crop."""
    from lotterycli.images import write_png

    from . import load

    with tempfile.TemporaryDirectory(prefix="lottery-load-") as tmp:
        png = Path(tmp) / "crop.png"
        write_png(png, center_crop(load_image("kodim01"), cfg.load_crop))
        runs = [load.measure(png, Path(tmp), cfg.load_steps, dict(os.environ)) for _ in range(cfg.load_repeats)]
    solo = statistics.median(r["solo_s"] for r in runs)
    return {"status": "ok", "reason": None, "notes": [], "crop": cfg.load_crop, "steps": cfg.load_steps, "runs": runs,
            "solo_s": solo, "pair_ratio": statistics.median(max(r["pair_s"]) for r in runs) / solo,
            "beside_busy_ratio": statistics.median(r["beside_busy_s"] for r in runs) / solo,
            "same_file": all(r["same_file"] for r in runs)}


def run_batch(cfg: Config, deadline: Deadline) -> dict:
    """benchmarks.batch: a shell loop, `batch --jobs 1/2` and `batch --ray` on the protocol's crops."""
    from . import batch

    try:
        import ray  # noqa: F401

        has_ray = True
    except ImportError:
        has_ray = False
    result = batch.measure(cfg.batch_steps, cfg.crop or 256, len(cfg.images), has_ray, log=lambda m: log(f"batch: {m}"))
    notes = [] if has_ray else ["the Ray run was skipped: ray is not installed (pip install 'lotterycli[ray]')"]
    return {"status": "ok", "reason": None, "notes": notes, **result}


PART_RUNNERS = {"compress": run_compress, "restore": run_restore, "speed": run_speed, "engine": run_engine,
                "load": run_load, "batch": run_batch}


def _two_sittings(new: dict, old: dict, **merged_fields) -> dict:
    """`new` with `merged_fields`, and the bookkeeping of a part measured in two sittings: seconds
    summed, notes and commands of both, partial if either was."""
    merged = dict(new, **merged_fields, seconds=old.get("seconds", 0.0) + new.get("seconds", 0.0),
                  notes=list(dict.fromkeys(old.get("notes", []) + new.get("notes", []))),
                  command="; ".join(c for c in (old.get("command"), new.get("command")) if c))
    if "partial" in (old.get("status"), new.get("status")):
        merged["status"] = "partial"
    return merged


def add_restore_images(new: dict, old: dict) -> dict:
    """The restore part of a run on more images: `old`'s rows for images not in `new`, then `new`'s.

    For running the protocol's images in several sittings (`--add-images`); tasks, crop and
    settings must match. The image grids of the first sitting are kept.
    """
    same = all(new.get(k) == old.get(k) for k in ("crop", "tasks", "lottery_settings"))
    if not same:
        raise ValueError("--add-images: crop, tasks and lottery settings must match the earlier restore part")
    kept = [r for r in old["rows"] if r["image"] not in new["images"]]
    images = sorted(set(old["images"]) | set(new["images"]))
    return _two_sittings(new, old, rows=kept + new["rows"], images=images, summary=summarize_restore(kept + new["rows"]),
                         grids=old.get("grids") or new.get("grids", {}))


def add_restore_tasks(new: dict, old: dict) -> dict:
    """The restore part with some tasks re-run (`--add-tasks`): `old`'s rows, task list and image
    grids for the tasks not in `new`, then `new`'s. Crop, images and lottery settings must match.

    Why: re-measuring one task after a change to its config (about 30 minutes for inpainting on
    kodim01-08) without re-running the others; the part's command then names both runs.
    """
    same = all(new.get(k) == old.get(k) for k in ("crop", "images", "lottery_settings"))
    if not same:
        raise ValueError("--add-tasks: crop, images and lottery settings must match the earlier restore part")
    names = {t["name"] for t in new["tasks"]}
    rows = [r for r in old["rows"] if r["task"] not in names] + new["rows"]
    tasks = [t for t in old["tasks"] if t["name"] not in names] + new["tasks"]
    grids = {k: v for k, v in (old.get("grids") or {}).items() if k not in names}
    grids.update(new.get("grids") or {})
    return _two_sittings(new, old, rows=rows, tasks=tasks, grids=grids, summary=summarize_restore(rows))


def add_compress_images(new: dict, old: dict) -> dict:
    """The compress part of a run on more images: `old`'s points for images not in `new`, then
    `new`'s, with curves and BD-rates recomputed (settings must match)."""
    if new.get("crop") != old.get("crop") or new.get("lottery_settings") != old.get("lottery_settings"):
        raise ValueError("--add-images: crop and lottery settings must match the earlier compress part")
    kept = [p for p in old["points"] if p["image"] not in new["images"]]
    points = kept + new["points"]
    images = sorted(set(old["images"]) | set(new["images"]))
    curves = rd_curves(points)
    return _two_sittings(new, old, points=points, images=images, curves=curves, bd_rate=bd_table(points, curves))


def run_merge(results: dict, previous: dict, parts: list[str], add_images: bool = False,
              add_tasks: bool = False) -> dict:
    """Add the parts of an earlier results dict of the same mode that were not re-run now.

    add_images: the restore part re-run now covers other images; combine it with the earlier one.
    add_tasks: the restore part re-run now covers some of its tasks; keep the earlier rows of the others.
    """
    if previous.get("mode") != results["mode"]:
        return results
    if add_tasks and "restore" in parts and isinstance(previous.get("parts", {}).get("restore"), dict):
        results["parts"]["restore"] = add_restore_tasks(results["parts"]["restore"], previous["parts"]["restore"])
    if add_images and "restore" in parts and isinstance(previous.get("parts", {}).get("restore"), dict):
        results["parts"]["restore"] = add_restore_images(results["parts"]["restore"], previous["parts"]["restore"])
    if add_images and "compress" in parts and isinstance(previous.get("parts", {}).get("compress"), dict):
        results["parts"]["compress"] = add_compress_images(results["parts"]["compress"], previous["parts"]["compress"])
    for name, p in previous.get("parts", {}).items():
        if name not in parts:
            results["parts"][name] = p
            results["skipped"].extend(s for s in previous.get("skipped", []) if s.get("part") == name)
    results["merged_from_previous"] = sorted(set(previous.get("parts", {})) - set(parts))
    return validate_results(sanitize(results))


def run(cfg: Config, parts: list[str], command: str, previous: dict | None = None) -> dict:
    machine = machine_info(cfg.device)
    budget = estimate_budget(cfg, parts)
    deadline = Deadline(cfg.time_limit_s)
    results: dict[str, Any] = {
        "schema": SCHEMA, "mode": cfg.mode, "command": command, "created": "", "machine": machine,
        "budget": budget, "config": dataclasses.asdict(cfg), "parts": {}, "skipped": [], "wall_seconds": 0.0,
    }
    for name in parts:
        log(f"=== part {name} ===")
        t0 = time.perf_counter()
        try:
            part = PART_RUNNERS[name](cfg, deadline)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            part = {"status": "skipped", "reason": f"crashed: {error_text(exc)}", "notes": []}
        part["machine"] = machine
        part["command"] = command
        part["seconds"] = time.perf_counter() - t0
        results["parts"][name] = part
        if part["status"] == "skipped":
            results["skipped"].append({"part": name, "reason": part["reason"]})
            log(f"part {name} SKIPPED: {part['reason']}")
        else:
            for n in part.get("notes", []):
                if "skipped" in n or "failed" in n:
                    results["skipped"].append({"part": name, "reason": n})
        budget["breakdown_measured"] = {**budget.get("breakdown_measured", {}), name: part["seconds"]}
    results["wall_seconds"] = deadline.elapsed()
    budget["wall_seconds"] = results["wall_seconds"]
    results["created"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    if previous is not None:
        return run_merge(results, previous, parts)
    return validate_results(sanitize(results))


def write_json(d: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(sanitize(d), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def load_json(path: Path) -> dict:
    return validate_results(json.loads(Path(path).read_text()))


def results_path(mode: str) -> Path:
    """Where a run's results go by default: the protocol's (`--full`) or a smoke run's (`--quick`)."""
    return RESULTS_DIR / ("protocol.json" if mode == "full" else "quick.json")


def default_docs_path(mode: str) -> Path:
    """docs/benchmarks.md, except that a quick run never replaces the page of a full run."""
    main = DOCS_DIR / "benchmarks.md"
    if mode == "quick" and main.exists() and "lottery-bench mode=full" in main.read_text(errors="replace")[:2000]:
        return DOCS_DIR / "benchmarks-quick.md"
    return main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke scale, designed for < 20 min on 2 CPU cores")
    mode.add_argument("--full", action="store_true", help="the full protocol (8 images, 256x256, all tasks)")
    p.add_argument("--only", action="append", choices=list(PART_RUNNERS), metavar="PART",
                   help="run only this part (compress, restore, speed, engine, load, batch); repeatable; other parts of an existing "
                        "results file of the same mode are kept")
    p.add_argument("--results", type=Path, metavar="FILE", help="re-render the docs from this results JSON, no computing")
    p.add_argument("--out", type=Path, metavar="FILE", help="results JSON (default benchmarks/results/<mode>.json)")
    p.add_argument("--docs", type=Path, metavar="FILE", help="markdown page (default docs/benchmarks.md)")
    p.add_argument("--img-dir", type=Path, metavar="DIR", help="plot directory (default docs/img)")
    p.add_argument("--no-docs", action="store_true", help="write the JSON only")
    p.add_argument("--budget", action="store_true", help="print the plan and its estimated budget, then exit")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--images", type=int, metavar="N", help="use the first N of kodim01-08")
    p.add_argument("--image-names", metavar="A,B", help="comma-separated image names, e.g. kodim01,kodim05")
    p.add_argument("--crop", type=int, help="centre crop size (0 = full image)")
    p.add_argument("--tasks", metavar="A,B", help=f"restoration tasks, from {','.join(TASKS_BY_NAME)}")
    p.add_argument("--steps", type=int, help="lottery fitting steps for compress and restore (default: mode's)")
    p.add_argument("--lambdas", metavar="L1,L2", help="compression lambdas")
    p.add_argument("--ensembles", metavar="K1,K2", help="restoration ensemble sizes, e.g. 1,4")
    p.add_argument("--presets", metavar="A,B", help="compression presets timed by the speed part (default fast,balanced,best)")
    p.add_argument("--add-images", action="store_true",
                   help="with --only restore or compress: add this run's images to that part already in the results file")
    p.add_argument("--add-tasks", action="store_true",
                   help="with --only restore: this run's tasks replace those tasks' rows in the results file, "
                        "the other tasks' rows are kept")
    p.add_argument("--dip-iters", type=int, help="deep image prior iterations (0 = leave DIP out)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for this process")
    p.add_argument("--keep-files", type=Path, metavar="DIR",
                   help="write each lottery compression point's file to DIR/<image>-lam=<lambda>.lottery")
    p.add_argument("--time-limit", type=float, metavar="MIN", help="skip items still pending after MIN minutes "
                   "(quick default 17, full none)")
    return p


def config_from_args(args) -> Config:
    cfg = full_config() if args.full else quick_config()
    cfg.device = resolve_device(args.device)
    if args.images is not None:
        cfg.images = list_images(args.images)
    if args.image_names:
        cfg.images = [s.strip() for s in args.image_names.split(",") if s.strip()]
    if args.crop is not None:
        cfg.crop = args.crop or None
    if args.tasks:
        names = [s.strip() for s in args.tasks.split(",") if s.strip()]
        bad = [n for n in names if n not in TASKS_BY_NAME]
        if bad:
            raise SystemExit(f"unknown task(s) {bad}; choose from {', '.join(TASKS_BY_NAME)}")
        cfg.tasks = names
    if args.steps is not None:
        cfg.compress_steps = cfg.restore_steps = args.steps
    if args.lambdas:
        cfg.lambdas = [float(s) for s in args.lambdas.split(",")]
    if args.ensembles:
        cfg.ensembles = [int(s) for s in args.ensembles.split(",")]
    if args.dip_iters is not None:
        cfg.dip_iters = args.dip_iters
    if args.presets:
        cfg.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    if args.keep_files is not None:
        cfg.keep_files = str(args.keep_files.resolve())
    if args.time_limit is not None:
        cfg.time_limit_s = args.time_limit * 60 if args.time_limit > 0 else None
    return cfg


def render(d: dict, args) -> None:
    from . import report

    docs = args.docs or default_docs_path(d["mode"])
    img_dir = args.img_dir or (DOCS_DIR / "img")
    written = report.render_docs(d, docs, img_dir, results_path=getattr(args, "_results_path", None))
    for w in written:
        log(f"wrote {w}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.results:
        d = load_json(args.results)
        args._results_path = args.results
        render(d, args)
        return 0
    if not (args.quick or args.full):
        build_parser().print_usage(sys.stderr)
        print("choose --quick or --full (or --results FILE to re-render docs)", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    parts = args.only or list(PART_RUNNERS)
    parts = [p for p in PART_RUNNERS if p in parts]
    budget = estimate_budget(cfg, parts)
    print(format_budget(cfg, budget), file=sys.stderr, flush=True)
    if args.budget:
        return 0
    out = args.out or results_path(cfg.mode)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    d = run(cfg, parts, command.strip())
    if args.only and out.exists():
        # Read the earlier results only now, so two --only runs of different parts started side by
        # side both end up in the file (the later writer keeps the earlier one's part).
        try:
            d = run_merge(d, load_json(out), parts, add_images=args.add_images, add_tasks=args.add_tasks)
        except Exception as exc:
            log(f"not merging with {out}: {error_text(exc)}")
    write_json(d, out)
    log(f"wrote {out}")
    args._results_path = out
    if not args.no_docs:
        render(d, args)
    log(f"done in {d['wall_seconds'] / 60:.1f} min (estimated {budget['estimated_seconds'] / 60:.1f} min)")
    return 0
