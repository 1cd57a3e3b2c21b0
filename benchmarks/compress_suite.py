"""The compression part: lottery at several lambdas against JPEG, WebP and AVIF quality sweeps;
bpp from real file bytes, PSNR of the decoded image, BD-rate of lottery against each codec."""


from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from . import baselines as B
from . import bdrate
from .data import center_crop, load_image
from .suite import REFERENCE, Config, Deadline, error_text, import_api, log, mean_of


def rd_curves(points: list[dict]) -> dict[str, list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        if p.get("bpp") is None or p.get("psnr") is None:
            continue
        groups.setdefault((p["method"], p["setting"]), []).append(p)
    curves: dict[str, list[dict]] = {}
    for (method, setting), ps in groups.items():
        curves.setdefault(method, []).append({
            "setting": setting, "bpp": mean_of(p["bpp"] for p in ps), "psnr": mean_of(p["psnr"] for p in ps),
            "seconds": mean_of(p.get("seconds") for p in ps), "n": len(ps), "images": sorted(p["image"] for p in ps),
        })
    for c in curves.values():
        c.sort(key=lambda r: r["bpp"])
    return curves


def bd_table(points: list[dict], curves: dict, test: str = "lottery") -> list[dict]:
    rows = []
    if test not in curves:
        return rows
    images = sorted({p["image"] for p in points if p["method"] == test})
    for anchor in [m for m in curves if m != test]:
        # Mean curves over the images that both methods have, so the averages are comparable.
        both = [img for img in images if any(p["image"] == img and p["method"] == anchor for p in points)]
        sub = [p for p in points if p["image"] in both and p["method"] in (anchor, test)]
        cv = rd_curves(sub)
        row = {"anchor": anchor, "test": test, "bd_rate_percent": None, "bd_psnr_db": None, "psnr_range": None,
               "per_image": {}, "images": both}
        if anchor in cv and test in cv:
            a, t = cv[anchor], cv[test]
            ra, pa = [r["bpp"] for r in a], [r["psnr"] for r in a]
            rt, pt = [r["bpp"] for r in t], [r["psnr"] for r in t]
            row["bd_rate_percent"] = bdrate.bd_rate(ra, pa, rt, pt)
            row["bd_psnr_db"] = bdrate.bd_psnr(ra, pa, rt, pt)
            rng = bdrate.overlap(pa, pt)
            row["psnr_range"] = list(rng) if rng else None
        for img in both:
            pa_ = [p for p in points if p["image"] == img and p["method"] == anchor and p["psnr"] is not None]
            pt_ = [p for p in points if p["image"] == img and p["method"] == test and p["psnr"] is not None]
            try:
                row["per_image"][img] = bdrate.bd_rate([p["bpp"] for p in pa_], [p["psnr"] for p in pa_],
                                                      [p["bpp"] for p in pt_], [p["psnr"] for p in pt_])
            except ValueError:
                row["per_image"][img] = None
        row["per_image_mean"] = mean_of(row["per_image"].values())
        rows.append(row)
    return rows


def _file_sizes(data: bytes) -> dict[str, int]:
    """Bytes per part of a .lottery file: header (with its CRC), mask, arm, upsampling, modnet, latents."""
    from lotterycli.bitstream.header import describe

    sizes = describe(data)["sizes"]
    return {"header": sizes["header"], "mask": sizes["mask"], **sizes["networks"], "latents": sizes["latents"]}


def run_compress(cfg: Config, deadline: Deadline) -> dict:
    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "images": cfg.images, "crop": cfg.crop,
                            "points": [], "curves": {}, "bd_rate": [], "reference": REFERENCE,
                            "codec_settings": {c: B.CODEC_SETTINGS[c] for c in cfg.codecs},
                            "lottery_settings": {"preset": cfg.compress_preset, "steps": cfg.compress_steps,
                                                 "lambdas": cfg.lambdas, "seed": 0}}
    avail = B.available()
    crops = {name: center_crop(load_image(name), cfg.crop) for name in cfg.images}
    for codec in cfg.codecs:
        if avail.get(codec):
            part["notes"].append(f"{codec} skipped: {avail[codec]}")
            continue
        for name, x in crops.items():
            for r in B.codec_sweep(x, codec):
                r = dict(r)
                part["points"].append({"method": codec, "image": name, "setting": f"q={r['quality']}", **r})
    log(f"compress: codec sweeps done ({len(part['points'])} points)")

    api, why = import_api()
    if api is None:
        part["status"] = "partial"
        part["notes"].append(f"lottery points skipped: {why}")
        log(f"compress: SKIP lottery: {why}")
    else:
        from lotterycli.images import to_uint8

        for name, x in crops.items():
            gt8 = to_uint8(x)
            h, w = x.shape[-2:]
            for lam in cfg.lambdas:
                setting = f"lam={lam:g}"
                if deadline.passed():
                    part["status"] = "partial"
                    part["notes"].append(f"lottery {name} {setting} skipped: time budget exhausted")
                    continue
                log(f"compress: lottery {name} {setting} (preset {cfg.compress_preset}, steps {cfg.compress_steps})")
                try:
                    t0 = time.perf_counter()
                    res = api.compress(x, preset=cfg.compress_preset, lam=lam, steps=cfg.compress_steps, seed=0,
                                       device=cfg.device)
                    wall = time.perf_counter() - t0
                    data = bytes(res.data)
                    if cfg.keep_files is not None:
                        Path(cfg.keep_files).mkdir(parents=True, exist_ok=True)
                        (Path(cfg.keep_files) / f"{name}-{setting}.lottery").write_bytes(data)
                    t1 = time.perf_counter()
                    dec = api.decompress(data)
                    dec_s = time.perf_counter() - t1
                    from lotterycli.metrics import psnr

                    pt = {
                        "method": "lottery", "image": name, "setting": setting, "lam": lam,
                        "n_bytes": len(data), "bpp": 8.0 * len(data) / (h * w), "psnr": psnr(dec, gt8),
                        "seconds": float(res.seconds), "wall_seconds": wall, "decode_seconds": dec_s,
                        "decode_matches_encoder": bool(torch.equal(dec.cpu(), res.decoded.cpu())),
                        "reported_bpp": float(res.bpp), "reported_psnr": float(res.psnr),
                        "macs_per_pixel": float(res.macs_per_pixel), "steps": int(res.steps),
                        "sizes": _file_sizes(data),
                    }
                    part["points"].append(pt)
                    log(f"compress:   -> {pt['bpp']:.3f} bpp, {pt['psnr']:.2f} dB, {pt['seconds']:.1f} s, "
                        f"decode {dec_s:.2f} s, bit-exact {pt['decode_matches_encoder']}")
                except Exception as exc:
                    part["status"] = "partial"
                    part["notes"].append(f"lottery {name} {setting} failed: {error_text(exc)}")
                    log(f"compress:   FAILED {error_text(exc)}")
                    traceback.print_exc(file=sys.stderr)
    part["curves"] = rd_curves(part["points"])
    part["bd_rate"] = bd_table(part["points"], part["curves"])
    return part


