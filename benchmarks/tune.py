"""Paired screens of config changes: fit each image with each variant, report the change against
the first variant (the control).

    python -m benchmarks.tune compress --images kodim01,kodim03 --lambdas 0.004,0.016 --steps 1600 \\
        --vary schedule.lr_floor=0.05,0.01 [--set architecture.arm_hidden=16 ...] [--size 256] \\
        [--workers 2] [--out runs.jsonl]
    python -m benchmarks.tune denoise-s25 --images kodak --steps 600 --vary ensemble=1,2,4
    python -m benchmarks.tune compress --variant "architecture.arm_hidden=24 architecture.modnet_hidden=48" \
        --variant "architecture.arm_hidden=16 architecture.modnet_hidden=16"
    python -m benchmarks.tune --report runs.jsonl

Targets: `compress`, or a restoration task of the protocol (denoise-s15/s25/s50, inpaint-50,
sr-x2-s5, sr-x4-s5, with the protocol's observations). `--images`: names (kodim01, astronaut, ...)
or a set (`kodak` = kodim01-08, `photos` = the scikit-image photographs; benchmarks/data.py).
`--size`: centre crops of that side, 0 for whole images. A key is a config key as in
configs/*.yaml, with `schedule.` or `architecture.` in front for those sections; values are YAML.
`--vary KEY=V1,V2` makes one variant per value; `--variant "K1=V1 K2=V2"` one variant that changes
several keys at once. The variants are run in the order given.

Each variant is a config file merged over the task's, so a screen exercises exactly what a user's
`--config` would. Fits run in `--workers` processes of one torch thread each. Compression reports
J = MSE + lambda * bpp of the real file and its decoded pixels, and the change of J against the
control per point (negative = better); restoration the PSNR and its change in dB (positive =
better). Every result line is appended to `--out` (JSON lines) as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import yaml

from lotterycli.config import parse_yaml

from .data import IMAGE_SETS, center_crop, image_index, load_image


def parse_assignment(text: str) -> tuple[str, list]:
    """'schedule.lr=0.01,0.02' -> ('schedule.lr', [0.01, 0.02]); values are YAML ('[0.3, 0.1]' is one value)."""
    if "=" not in text:
        raise SystemExit(f"expected KEY=VALUE[,VALUE...], got {text!r}")
    key, values = text.split("=", 1)
    parsed = parse_yaml(f"[{values}]")
    return key.strip(), parsed


def nested(assignments: dict) -> dict:
    """{'schedule.lr': 0.01, 'steps': 5} -> {'schedule': {'lr': 0.01}, 'steps': 5}."""
    out: dict = {}
    for key, value in assignments.items():
        section, _, name = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name or key] = value
    return out


def image_names(spec: str) -> list[str]:
    names = []
    for part in spec.split(","):
        names += IMAGE_SETS.get(part, [part])
    return names


def _task_and_operator(target: str, x, index: int):
    from lotterycli.restoration.operators import Denoise, Inpaint, SuperResolution

    if target.startswith("denoise-s"):
        return "denoise", Denoise(float(target.split("-s")[1]) / 255)
    if target == "inpaint-50":
        return "inpaint", Inpaint.random(x.shape[-2], x.shape[-1], 0.5, 1234 + index)
    if target.startswith("sr-x"):
        scale, sigma = target[4:].split("-s")
        return "sr", SuperResolution(int(scale), float(sigma) / 255)
    raise SystemExit(f"unknown target {target!r}")


def run_job(job: dict) -> dict:
    """One fit: job = {target, image, size, setting, variant, config (mapping)}."""
    import torch

    torch.set_num_threads(1)
    from lotterycli.config import load_task_config
    from lotterycli.metrics import psnr

    x = center_crop(load_image(job["image"]), job["size"] or None)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(job["config"], fh)
    try:
        start = time.perf_counter()
        row = {k: job[k] for k in ("target", "image", "size", "setting", "variant")}
        row.update(height=int(x.shape[1]), width=int(x.shape[2]))
        if job["target"] == "compress":
            from lotterycli.bitstream.header import describe
            from lotterycli.compression.encoder import compress_image

            cfg = load_task_config("compress", config_file=fh.name)
            r = compress_image(x, cfg, device="cpu")
            mse = 10 ** (-r.psnr / 10)
            row.update(bytes=r.n_bytes, bpp=r.bpp, psnr=r.psnr, J=mse + cfg.lam * r.bpp, lam=cfg.lam,
                       steps=cfg.steps, sizes=describe(r.data)["sizes"])
        else:
            from lotterycli.api import restore_lambda
            from lotterycli.restoration.ensemble import restore_image

            index = image_index(job["image"])
            task, op = _task_and_operator(job["target"], x, index)
            cfg = load_task_config(task, config_file=fh.name)
            y = op.simulate(x, 1234 + index)
            r = restore_image(y, op, cfg, lam=restore_lambda(cfg, op), device="cpu", workers=1)
            row.update(psnr=psnr(r.image, x), member_psnr=[psnr(m, x) for m in r.members], steps=cfg.steps,
                       ensemble=cfg.restoration.ensemble)
        row["seconds"] = time.perf_counter() - start
        return row
    finally:
        os.unlink(fh.name)


def report(rows: list[dict]) -> str:
    """The change of each variant against the first one (the control), per point and on average."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    points = defaultdict(dict)
    for r in rows:
        points[(r["target"], r["image"], r["size"], r["setting"])][r["variant"]] = r
    lines = []
    control = variants[0]
    for variant in variants[1:]:
        changes = []
        for key, by_variant in sorted(points.items()):
            a, b = by_variant.get(control), by_variant.get(variant)
            if a is None or b is None:
                continue
            if "J" in a:
                change, unit = 100 * (b["J"] / a["J"] - 1), "% J"
                detail = f"{a['bytes']}->{b['bytes']} B, {a['psnr']:.2f}->{b['psnr']:.2f} dB"
            else:
                change, unit = b["psnr"] - a["psnr"], "dB"
                detail = f"{a['psnr']:.2f}->{b['psnr']:.2f} dB"
            changes.append(change)
            lines.append(f"{variant} vs {control}: {key[1]} {key[3]}: {change:+.2f} {unit} ({detail}, "
                         f"{a['seconds']:.0f}->{b['seconds']:.0f} s)")
        if changes:
            better = sum(c < 0 for c in changes) if unit == "% J" else sum(c > 0 for c in changes)
            lines.append(f"== {variant} vs {control}: mean {sum(changes) / len(changes):+.2f} {unit} over "
                         f"{len(changes)} points, {better} better")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="compress, or a restoration task such as denoise-s25")
    p.add_argument("--images", default="kodak", help="image names and/or sets (kodak, photos), comma separated")
    p.add_argument("--size", type=int, default=256, help="centre-crop side (0: whole images)")
    p.add_argument("--lambdas", default="0.004", help="compress: lambdas, comma separated")
    p.add_argument("--steps", type=int, help="steps (default: the config's balanced preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a change for every variant")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2", help="variants; the first is the control")
    p.add_argument("--variant", action="append", default=[], metavar="'K1=V1 K2=V2'", help="one variant changing several keys")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, help="append result lines here (JSON lines)")
    p.add_argument("--report", type=Path, help="only print the report of an earlier --out file")
    args = p.parse_args(argv)
    if args.report:
        print(report([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()]))
        return 0
    if not args.target:
        p.error("a target is needed (compress, denoise-s25, ...)")
    base = {k: v[0] for k, v in map(parse_assignment, args.set)}
    if args.steps:
        base["steps"] = args.steps
    variants = []
    for key, values in (parse_assignment(v) for v in args.vary):
        for value in values:
            variants.append((f"{key}={json.dumps(value)}", nested({**base, key: value})))
    for spec in args.variant:
        changes = {k: v[0] for k, v in (parse_assignment(a) for a in spec.split())}
        variants.append((" ".join(f"{k}={json.dumps(v)}" for k, v in changes.items()), nested({**base, **changes})))
    if not variants:
        variants.append(("as configured", nested(base)))
    settings = [f"lambda={v}" for v in args.lambdas.split(",")] if args.target == "compress" else [args.target]
    jobs = []
    for image in image_names(args.images):
        for setting in settings:
            for label, changes in variants:
                config = dict(changes)
                if setting.startswith("lambda="):
                    config["lambda"] = float(setting[7:])
                jobs.append({"target": args.target, "image": image, "size": args.size, "setting": setting,
                             "variant": label, "config": config})
    print(f"{len(jobs)} fits on {args.workers} worker(s)", file=sys.stderr)
    rows = []
    with Pool(args.workers) as pool:
        for row in pool.imap_unordered(run_job, jobs):
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            if args.out:
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    order = {label: i for i, (label, _) in enumerate(variants)}
    rows.sort(key=lambda r: order[r["variant"]])
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
