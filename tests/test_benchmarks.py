"""Fast tests of the benchmark harness (no lottery fitting)."""

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch

# `benchmarks` lives at the repository root, which pytest does not put on sys.path by itself.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import bdrate  # noqa: E402
from benchmarks.data import center_crop, crop_box, image_index, kodak_dir, list_images  # noqa: E402
from benchmarks.schema import SCHEMA, SchemaError, sanitize, validate_results  # noqa: E402

LC_R = [0.126, 0.197, 0.520, 0.736, 1.093, 1.429]
LC_D = [28.49, 30.08, 34.53, 36.60, 39.26, 41.18]
VTM_R = [0.029, 0.057, 0.081, 0.113, 0.287, 0.492, 0.877, 1.074, 1.187, 1.433, 1.730]
VTM_D = [24.89, 26.61, 27.54, 28.51, 31.84, 34.28, 37.40, 38.58, 39.18, 40.32, 41.46]


# --------------------------------------------------------------------------- BD-rate

def test_bd_rate_identical_curves_is_zero():
    assert bdrate.bd_rate(LC_R, LC_D, LC_R, LC_D) == pytest.approx(0.0, abs=1e-9)
    assert bdrate.bd_psnr(LC_R, LC_D, LC_R, LC_D) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_ten_percent_more_bits():
    assert bdrate.bd_rate(LC_R, LC_D, [r * 1.1 for r in LC_R], LC_D) == pytest.approx(10.0, abs=1e-6)
    assert bdrate.bd_rate([r * 1.1 for r in LC_R], LC_D, LC_R, LC_D) == pytest.approx(100 / 1.1 - 100, abs=1e-6)


def test_bd_psnr_constant_shift():
    assert bdrate.bd_psnr(LC_R, LC_D, LC_R, [d + 0.5 for d in LC_D]) == pytest.approx(0.5, abs=1e-9)
    assert bdrate.bd_psnr(LC_R, LC_D, LC_R, [d - 1.0 for d in LC_D]) == pytest.approx(-1.0, abs=1e-9)
    # more bits for the same quality = lower PSNR at equal rate
    assert bdrate.bd_psnr(LC_R, LC_D, [r * 1.1 for r in LC_R], LC_D) < 0


def test_bd_rate_unsorted_input_and_no_overlap():
    order = [3, 0, 5, 1, 4, 2]
    r = [LC_R[i] for i in order]
    d = [LC_D[i] for i in order]
    assert bdrate.bd_rate(LC_R, LC_D, r, d) == pytest.approx(0.0, abs=1e-9)
    assert bdrate.bd_rate([0.1, 0.2], [20, 22], [1.0, 2.0], [40, 42]) is None
    assert bdrate.bd_rate([0.1], [20], [0.1, 0.2], [20, 22]) is None


def test_bd_rate_published_lotterycodec_vs_vtm():
    # The LotteryCodec paper: "About -0.7 % BD-rate against VTM-19.1".
    assert bdrate.bd_rate(VTM_R, VTM_D, LC_R, LC_D) == pytest.approx(-0.7, abs=0.1)


def test_center_crop_shape_and_position():
    img = torch.arange(3 * 10 * 12, dtype=torch.float32).reshape(3, 10, 12)
    c = center_crop(img, 4)
    assert c.shape == (3, 4, 4)
    assert crop_box(10, 12, 4) == (3, 4, 4, 4)
    assert torch.equal(c, img[:, 3:7, 4:8])
    # odd margin: the extra pixel goes to the bottom/right; deterministic
    assert crop_box(11, 13, 4) == (3, 4, 4, 4)
    assert torch.equal(center_crop(img, (4, 6)), center_crop(img, (4, 6)))
    assert center_crop(img, (4, 6)).shape == (3, 4, 6)
    # larger than the image: clipped; None: unchanged copy
    assert center_crop(img, 64).shape == (3, 10, 12)
    full = center_crop(img, None)
    assert torch.equal(full, img) and full.data_ptr() != img.data_ptr()


def test_image_list_and_index():
    assert list_images() == [f"kodim0{i}" for i in range(1, 9)]
    assert list_images(2) == ["kodim01", "kodim02"]
    assert list_images(names=["kodim05"]) == ["kodim05"]
    assert image_index("kodim07") == 7


def test_kodak_crop_from_disk():
    if not (kodak_dir() / "kodim01.png").exists():
        pytest.skip(f"Kodak images not found in {kodak_dir()}")
    from benchmarks.data import load_image

    x = load_image("kodim01")
    assert x.shape == (3, 512, 768) and x.dtype == torch.float32
    c = center_crop(x, 256)
    assert c.shape == (3, 256, 256)
    assert torch.equal(c, x[:, 128:384, 256:512])


def test_kodak_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("LOTTERY_KODAK", str(tmp_path))
    assert kodak_dir() == tmp_path
    from benchmarks.data import DataMissing, image_path

    with pytest.raises(DataMissing):
        image_path("kodim01")


# --------------------------------------------------------------------------- results schema

MACHINE = {"cpu_model": "Test CPU", "cores": 2, "torch_version": "2.x", "torch_threads": 2, "device": "cpu",
           "date": "2026-01-01T00:00:00+00:00", "git_commit": "abc123", "python": "3.11", "platform": "Linux"}


def synthetic_results() -> dict:
    comp_points = []
    for img in ("kodim01", "kodim03"):
        for q, (bpp, p) in zip((30, 60, 90), ((0.3, 28.0), (0.6, 31.0), (1.2, 35.0))):
            comp_points.append({"method": "webp", "image": img, "setting": f"q={q}", "bpp": bpp, "psnr": p,
                                "seconds": 0.01, "n_bytes": int(bpp * 128 * 128 / 8)})
        for lam, (bpp, p) in zip((0.008, 0.001), ((0.25, 28.5), (0.9, 34.0))):
            comp_points.append({"method": "lottery", "image": img, "setting": f"lam={lam:g}", "bpp": bpp, "psnr": p,
                                "seconds": 12.0, "n_bytes": int(bpp * 128 * 128 / 8), "decode_seconds": 0.2,
                                "decode_matches_encoder": True, "macs_per_pixel": 3569.0, "steps": 300, "lam": lam,
                                "sizes": {"header": 30, "mask": 100, "arm": 50, "upsampling": 10, "modnet": 60,
                                          "latents": int(bpp * 128 * 128 / 8) - 250}})
    from benchmarks.compress_suite import bd_table, rd_curves
    from benchmarks.restore_suite import summarize_restore
    from benchmarks.suite import REFERENCE

    curves = rd_curves(comp_points)
    rows = []
    for img in ("kodim01", "kodim03"):
        for m, p, s in (("observation", 20.2, 0.0), ("BM3D", 29.0, 1.5), ("lottery K=1", 27.0, 10.0)):
            rows.append({"task": "denoise-s25", "method": m, "image": img, "psnr": p, "ssim": 0.8, "seconds": s,
                         "error": None})
    rows.append({"task": "denoise-s25", "method": "lottery K=2", "image": "kodim01", "psnr": 28.0, "ssim": 0.82,
                 "seconds": 20.0, "error": None, "member_psnr": [27.0, 27.1], "member_psnr_mean": 27.05})
    return copy.deepcopy({
        "schema": SCHEMA, "mode": "quick", "command": "python -m benchmarks --quick", "created": "2026-01-01T00:10:00+00:00",
        "machine": MACHINE, "budget": {"estimated_seconds": 400.0, "limit_seconds": 1020.0, "wall_seconds": 380.0,
                                       "breakdown": {"compress": 60.0, "restore": 300.0, "speed": 40.0}, "notes": []},
        "config": {"images": ["kodim01", "kodim03"]},
        "parts": {
            "compress": {"status": "ok", "reason": None, "notes": [], "machine": MACHINE, "images": ["kodim01", "kodim03"],
                         "crop": 128, "points": comp_points, "curves": curves, "bd_rate": bd_table(comp_points, curves),
                         "reference": REFERENCE},
            "restore": {"status": "ok", "reason": None, "notes": [], "images": ["kodim01", "kodim03"], "crop": 128,
                        "tasks": [{"name": "denoise-s25", "task": "denoise", "sigma255": 25, "scale": None,
                                   "missing_ratio": None}],
                        "rows": rows, "summary": summarize_restore(rows), "grids": {}},
            "speed": {"status": "partial", "reason": None, "notes": ["x"], "torch_threads": 2,
                      "step_rate": [{"height": 256, "width": 256, "steps": 5, "steps_per_second": 8.5, "error": None}],
                      "presets": [{"preset": "fast", "height": 128, "width": 128, "seconds": 14.0, "steps": 300,
                                   "bpp": 0.5, "psnr": 30.0, "error": None}],
                      "decode": {"height": 512, "width": 768, "n_bytes": 20000, "seconds": 4.2, "repeats": 2,
                                 "error": None},
                      "rss": [{"command": "compress", "argv": ["/x/lottery", "compress"], "max_rss_mb": 400.0,
                               "seconds": 30.0, "returncode": 0, "method": "/usr/bin/time -v", "error": None}]},
        },
        "skipped": [], "wall_seconds": 380.0,
    })


def test_schema_accepts_valid_results():
    d = synthetic_results()
    assert validate_results(d) is d
    # survives a JSON round trip (no NaN / inf)
    validate_results(json.loads(json.dumps(sanitize(d), allow_nan=False)))
    # a skipped part needs only its reason
    d2 = copy.deepcopy(d)
    d2["parts"]["restore"] = {"status": "skipped", "reason": "no operators"}
    validate_results(d2)


@pytest.mark.parametrize("breakage", [
    lambda d: d.pop("machine"),
    lambda d: d.__setitem__("mode", "medium"),
    lambda d: d.__setitem__("schema", "other/9"),
    lambda d: d["machine"].pop("git_commit"),
    lambda d: d["parts"]["compress"]["points"][0].__setitem__("bpp", -1.0),
    lambda d: d["parts"]["compress"]["points"][0].__setitem__("psnr", "high"),
    lambda d: d["parts"]["restore"]["rows"][0].__setitem__("task", "deblur"),
    lambda d: d["parts"]["restore"]["rows"][0].pop("ssim"),
    lambda d: d["parts"].__setitem__("bogus", {"status": "ok"}),
    lambda d: d["parts"]["speed"].pop("rss"),
    lambda d: d["parts"]["speed"].__setitem__("status", "fine"),
    lambda d: d["parts"]["compress"]["reference"]["VTM-19.1 (published)"].__setitem__("points", [[1.0]]),
])
def test_schema_rejects_broken_results(breakage):
    d = synthetic_results()
    breakage(d)
    with pytest.raises(SchemaError) as info:
        validate_results(d)
    assert info.value.problems


def test_sanitize_replaces_non_finite():
    assert sanitize({"a": math.inf, "b": [math.nan, 1.0], "c": (1, 2)}) == {"a": None, "b": [None, 1.0], "c": [1, 2]}


def test_bd_table_from_points():
    d = synthetic_results()
    rows = d["parts"]["compress"]["bd_rate"]
    assert [r["anchor"] for r in rows] == ["webp"]
    assert rows[0]["bd_rate_percent"] is not None and rows[0]["bd_rate_percent"] < 0  # lottery above webp here
    assert set(rows[0]["per_image"]) == {"kodim01", "kodim03"}


# --------------------------------------------------------------------------- docs rendering

def test_render_markdown_tables():
    from benchmarks.report import render_markdown

    text = render_markdown(synthetic_results(), {"rd": "img/rd.png"})
    assert "python -m benchmarks --quick" in text
    assert "Test CPU" in text and "abc123" in text
    assert "| method | setting | bpp | PSNR (dB) |" in text
    assert "| anchor | BD-rate | BD-PSNR |" in text
    assert "| webp |" in text
    assert "### denoise-s25" in text and "| method | PSNR (dB) | SSIM | seconds | images |" in text
    assert "| BM3D | 29.00 | 0.8000 | 1.50 | 2 |" in text
    assert "steps/s" in text and "peak RSS" in text and "4.20 s" in text
    assert "published, not measured here" in text
    assert "![rate-distortion curves](img/rd.png)" in text
    # where the bytes go: mean bytes per part at each lambda, fixed = header + mask + networks
    assert "| lambda | header | mask | arm | upsampling | modnet | latents | fixed | total | images |" in text
    assert "| 0.008 | 30 | 100 | 50 | 10 | 60 | 262 | 250 | 512 | 2 |" in text
    assert "worst image" in text and "(kodim0" in text


def test_compress_budget_names_the_preset_of_the_steps_run():
    """A run with --steps 1600 is the fast preset's budget, whatever preset the config names."""
    from benchmarks.report import _compress_budget
    from lotterycli.config import load_task_config

    fast, balanced = (load_task_config("compress", preset=p).steps for p in ("fast", "balanced"))
    assert _compress_budget("balanced", fast) == f"{fast} steps, as preset fast"
    assert _compress_budget("balanced", None) == f"preset balanced ({balanced} steps)"
    assert _compress_budget("balanced", fast + 1) == f"{fast + 1} steps (no preset has this count)"


def test_render_docs_writes_page(tmp_path):
    from benchmarks.report import render_docs

    d = synthetic_results()
    d["parts"]["compress"]["lottery_settings"] = {"preset": "balanced", "steps": 1234, "lambdas": [0.01], "seed": 0}
    written = render_docs(d, tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img", plots=False)
    page = tmp_path / "docs" / "benchmarks.md"
    assert page in written and page.read_text().startswith("<!-- lottery-bench mode=quick")
    assert "- Also:" not in page.read_text()
    # a page per image set and budget: each links the others, saying which images and steps they cover
    other = tmp_path / "docs" / "benchmarks-photos.md"
    d2 = synthetic_results()
    d2["parts"]["compress"]["images"] = ["astronaut", "chelsea"]
    render_docs(d2, other, tmp_path / "docs" / "img2", plots=False)
    assert ("- Also: [benchmarks.md](benchmarks.md): kodim01, kodim03 (128x128 centre crops); "
            "1234 steps (no preset has this count)\n") in other.read_text()
    render_docs(d, page, tmp_path / "docs" / "img", plots=False)
    assert "- Also: [benchmarks-photos.md](benchmarks-photos.md): astronaut, chelsea (128x128" in page.read_text()


def test_render_docs_plots(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (bench extra)")
    from benchmarks.report import render_docs

    written = render_docs(synthetic_results(), tmp_path / "b.md", tmp_path / "img")
    names = {p.name for p in written}
    assert {"bench-quick-rd.png", "bench-quick-psnr-time.png", "b.md"} <= names
    assert "](img/bench-quick-rd.png)" in (tmp_path / "b.md").read_text()


# --------------------------------------------------------------------------- baselines

def _smooth_image(h=32, w=32):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    g = torch.Generator().manual_seed(0)
    return (torch.stack([xx, yy, (xx + yy) / 2]) * 0.8 + 0.1 + 0.03 * torch.randn(3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("codec", ["jpeg", "webp", "avif"])
def test_codec_bpp_increases_with_quality(codec):
    from benchmarks import baselines

    why = baselines.available()[codec]
    if why:
        pytest.skip(why)
    pts = baselines.codec_sweep(_smooth_image(), codec, [10, 50, 95])
    bpps = [p["bpp"] for p in pts]
    assert bpps == sorted(bpps) and bpps[0] < bpps[-1]
    assert pts[-1]["psnr"] > pts[0]["psnr"]
    assert all(p["n_bytes"] * 8 / (32 * 32) == pytest.approx(p["bpp"]) for p in pts)


def test_restoration_baselines_shapes():
    from benchmarks import baselines

    x = _smooth_image(24, 24)
    up, secs = baselines.bicubic_upsample(x[:, ::2, ::2].contiguous(), (24, 24))
    assert up.shape == (3, 24, 24) and secs >= 0 and float(up.min()) >= 0 and float(up.max()) <= 1
    out, secs = baselines.dip_restore(x, lambda a, b: torch.mean((a - b) ** 2), (24, 24), iters=2, channels=8)
    assert out.shape == (3, 24, 24) and secs > 0


def test_classical_baselines_run():
    from benchmarks import baselines

    avail = baselines.available()
    if avail["skimage"]:
        pytest.skip(avail["skimage"])
    x = _smooth_image(24, 24)
    g = torch.Generator().manual_seed(1)
    y = x + 0.1 * torch.randn(x.shape, generator=g)
    out, _ = baselines.nlmeans_denoise(y, 0.1)
    assert out.shape == x.shape
    mask = torch.rand(24, 24, generator=g) > 0.5
    out, _ = baselines.biharmonic_inpaint(x * mask, mask)
    assert out.shape == x.shape
    if not avail["bm3d"]:
        out, _ = baselines.bm3d_denoise(y, 0.1)
        assert out.shape == x.shape


def test_add_restore_tasks_replaces_only_the_rerun_tasks():
    from benchmarks.runner import add_restore_tasks

    def row(task, psnr):
        return {"task": task, "method": "lottery K=1", "image": "kodim01", "psnr": psnr, "ssim": 0.9,
                "seconds": 1.0, "error": None}

    base = {"crop": 256, "images": ["kodim01"], "lottery_settings": {"preset": "balanced"}, "status": "ok",
            "notes": []}
    old = dict(base, tasks=[{"name": "denoise-s25"}, {"name": "inpaint-50"}], grids={"denoise-s25": 1, "inpaint-50": 1},
               rows=[row("denoise-s25", 30.0), row("inpaint-50", 31.0)], seconds=10.0, command="first")
    new = dict(base, tasks=[{"name": "inpaint-50"}], grids={"inpaint-50": 2}, rows=[row("inpaint-50", 31.5)],
               seconds=5.0, command="second")
    merged = add_restore_tasks(new, old)
    assert [(r["task"], r["psnr"]) for r in merged["rows"]] == [("denoise-s25", 30.0), ("inpaint-50", 31.5)]
    assert [t["name"] for t in merged["tasks"]] == ["denoise-s25", "inpaint-50"]
    assert merged["grids"] == {"denoise-s25": 1, "inpaint-50": 2} and merged["seconds"] == 15.0
    assert {s["task"]: s["psnr"] for s in merged["summary"]} == {"denoise-s25": 30.0, "inpaint-50": 31.5}
    assert merged["command"] == "first; second"
    with pytest.raises(ValueError):
        add_restore_tasks(dict(new, images=["kodim02"]), old)


def test_add_restore_images_combines_sittings():
    from benchmarks.runner import add_restore_images

    def row(image, psnr):
        return {"task": "denoise-s25", "method": "lottery K=1", "image": image, "psnr": psnr, "ssim": 0.9,
                "seconds": 1.0, "error": None}

    base = {"crop": 256, "tasks": ["t"], "lottery_settings": {"preset": "balanced"}, "status": "ok", "notes": [],
            "seconds": 10.0, "command": "first"}
    old = dict(base, images=["kodim01", "kodim02"], rows=[row("kodim01", 30.0), row("kodim02", 26.0)], grids={"g": 1})
    new = dict(base, images=["kodim02", "kodim03"], rows=[row("kodim02", 27.0), row("kodim03", 31.0)], grids={"g": 2},
               command="second")
    merged = add_restore_images(new, old)
    assert merged["images"] == ["kodim01", "kodim02", "kodim03"]
    assert [r["image"] for r in merged["rows"]] == ["kodim01", "kodim02", "kodim03"]  # kodim02 from the new run
    assert merged["summary"][0]["psnr"] == pytest.approx((30.0 + 27.0 + 31.0) / 3)
    assert merged["grids"] == {"g": 1} and merged["command"] == "first; second"
    with pytest.raises(ValueError):
        add_restore_images(dict(new, crop=128), old)


def test_compress_part_keeps_each_lottery_file(monkeypatch, tmp_path):
    """`--keep-files DIR`: one decodable file per (image, lambda)."""
    from PIL import Image

    from benchmarks.compress_suite import run_compress
    from benchmarks.suite import Config, Deadline
    from lotterycli import api

    kodak = tmp_path / "kodak"
    kodak.mkdir()
    g = torch.Generator().manual_seed(3)
    pixels = (torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(kodak / "kodim01.png")
    monkeypatch.setenv("LOTTERY_KODAK", str(kodak))
    keep = tmp_path / "files"
    cfg = Config(mode="quick", images=["kodim01"], crop=16, lambdas=[0.01, 0.02], compress_preset="fast",
                 compress_steps=3, codecs=[], keep_files=str(keep))
    part = run_compress(cfg, Deadline(None))
    points = [p for p in part["points"] if p["method"] == "lottery"]
    assert len(points) == 2
    for p in points:
        data = (keep / f"kodim01-{p['setting']}.lottery").read_bytes()
        assert len(data) == p["n_bytes"] == sum(p["sizes"].values())
        assert api.decompress(data).shape == (3, 16, 16)


def _run_module(module: str, *args: str, timeout: float = 300) -> str:
    """`python -m benchmarks.MODULE ARGS` from the repository root; its stdout."""
    import subprocess

    return subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=True).stdout


def test_compare_runs_reports_cost_changes_and_bd_rates(tmp_path):
    """benchmarks.compare_runs on two made-up runs: NEW has 2 % more bytes at the same PSNRs, so
    every J grows and its BD-rate is 2 % worse."""
    def run_json(path, scale):
        webp = [dict(method="webp", image="kodim01", setting=f"q={q}", lam=None, bpp=b, psnr=p)
                for q, b, p in ((10, 0.1, 26.0), (50, 0.5, 31.0), (90, 1.6, 36.0))]
        own = []
        for k, lam in enumerate((0.001, 0.004, 0.016)):
            n_bytes = int(round(9000 / 2 ** k * scale))
            own.append(dict(method="lottery", image="kodim01", setting=f"lam={lam:g}", lam=lam,
                            n_bytes=n_bytes, bpp=8 * n_bytes / 65536, psnr=34.0 - 3 * k))
        path.write_text(json.dumps({"parts": {"compress": {"points": webp + own}}}))
        return path

    new, old = run_json(tmp_path / "new.json", 1.02), run_json(tmp_path / "old.json", 1.0)
    lines = _run_module("compare_runs", str(new), str(old)).splitlines()
    assert sum(line.startswith("kodim01") for line in lines) == 3
    means = [line for line in lines if line.startswith("lambda ")]
    assert len(means) == 3 and all("over 1 images" in line for line in means)
    assert all(float(line.split("change ")[1].split(" %")[0]) > 0 for line in means)
    bd = {line.split(":")[0]: float(line.split("webp ")[1].split(" %")[0]) for line in lines if "BD-rate" in line}
    assert bd["new"] == pytest.approx(100 * (1.02 * (1 + bd["old"] / 100) - 1), abs=0.2)  # 2 % more bits throughout
    (paired,) = [line for line in lines if line.startswith("bits at equal PSNR")]
    assert float(paired.split("kodim01 ")[1].split(" %")[0]) == pytest.approx(2.0, abs=0.1)


def test_tune_assignments_and_report():
    from benchmarks.tune import nested, parse_assignment, report

    assert parse_assignment("schedule.lr=0.01,0.02") == ("schedule.lr", [0.01, 0.02])
    assert parse_assignment("schedule.temperature=[0.3, 0.1]") == ("schedule.temperature", [[0.3, 0.1]])
    assert nested({"schedule.lr": 0.01, "steps": 5, "architecture.arm_hidden": 8}) == {
        "schedule": {"lr": 0.01}, "steps": 5, "architecture": {"arm_hidden": 8}}
    rows = []
    for variant, factor in (("a", 1.0), ("b", 0.9)):
        for image in ("kodim01", "kodim02"):
            rows.append(dict(target="compress", image=image, size=32, setting="lambda=0.004", variant=variant,
                             J=0.01 * factor, bytes=100, psnr=30.0, seconds=1.0))
    text = report(rows)
    assert "== b vs a: mean -10.00 % J over 2 points, 2 better" in text


def test_tune_runs_paired_fits_through_config_files(tmp_path, monkeypatch):
    """Two variants of a 3-step fit on a 16x16 crop of a made-up Kodak image: one result line each,
    the architecture change reaches the file (the header names another architecture)."""
    from PIL import Image

    kodak = tmp_path / "kodak"
    kodak.mkdir()
    g = torch.Generator().manual_seed(3)
    Image.fromarray((torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8).numpy()).save(kodak / "kodim01.png")
    monkeypatch.setenv("LOTTERY_KODAK", str(kodak))
    out = tmp_path / "runs.jsonl"
    text = _run_module("tune", "compress", "--images", "kodim01", "--size", "16", "--steps", "3", "--workers", "1",
                       "--vary", "architecture.modnet_hidden=16,8", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["architecture.modnet_hidden=16", "architecture.modnet_hidden=8"]
    assert rows[1]["sizes"]["header"] > rows[0]["sizes"]["header"]  # a preset architecture takes no header bytes
    assert "== architecture.modnet_hidden=8 vs architecture.modnet_hidden=16" in text
    assert _run_module("tune", "--report", str(out)) == text


def test_profile_step_reports_each_part_and_the_step_rates():
    out = _run_module("profile_step", "--size", "32", "--steps", "3")
    for part in ("ARM rate", "ModNet", "upsampling", "synthesis, all pixels", "whole renders", "observed pixels only",
                 "pixel_fraction 0.5"):
        assert part in out
    rates = [float(line.split()[-1]) for line in out.splitlines() if "steps/s" in line]
    assert len(rates) == 3 and all(r > 0 for r in rates)
    from benchmarks.profile_step import measure_step_rate

    assert measure_step_rate(16, 24, steps=2) > 0


def test_profile_step_times_batched_members_per_member():
    out = _run_module("profile_step", "--size", "16", "--members", "1,3")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("B =")]
    assert [r[2] for r in rows] == ["1", "3"] and rows[0][-1] == "x1.00" and float(rows[1][3]) > 0


def test_arm_stage_prices_every_latent_and_the_distinct_pairs_alike():
    """benchmarks.arm_stage: the ARM stage given every latent once and given the distinct pairs
    reaches the same refit objective (up to float order) on a model with mostly zero latents."""
    from dataclasses import replace

    from benchmarks.arm_stage import every_latent, stage_seconds
    from lotterycli.compression.arm_refit import latent_pairs
    from lotterycli.config import load_task_config
    from lotterycli.model.lottery_model import LotteryModel

    cfg = load_task_config("compress")
    model = LotteryModel(24, 32, cfg.architecture, seed=0, mask_ratio=0.3)
    g = torch.Generator().manual_seed(1)
    model.latents.set_from_integers([torch.round(torch.randn(h, w, generator=g) * 0.2).to(torch.int64)
                                     for h, w in model.latents.shapes])
    schedule = replace(cfg.schedule, arm_refit_steps=4, arm_scratch_steps=3, arm_scratch_widths=(4,))
    every, distinct = every_latent(model), latent_pairs(model)
    assert distinct[1].numel() < every[1].numel() / 2 and float(distinct[2].sum()) == every[1].numel()
    (t1, bits1), (t2, bits2) = stage_seconds(model, every, schedule), stage_seconds(model, distinct, schedule)
    assert t1 > 0 and t2 > 0 and abs(bits1 - bits2) <= 1e-4 * bits1


def test_engine_probe_reports_a_step_of_this_checkout():
    """benchmarks.engine's probe on this tree at a tiny size: rate, dispatched operations, FLOPs,
    and the operations of a GPU's way of the step (counted on the meta device): fewer, since
    that way packs the ARM's grids, and fewer still that are not views."""
    from benchmarks import engine

    row = engine.probe(Path(_ROOT) / "src", 24, 32, steps=2, threads=1)
    assert row["steps_per_second"] > 0 and row["ops_per_step"] > 100 and row["flops_per_step"] > 0
    assert 0 < row["achieved_fraction_of_peak"] < 1
    assert 0 < row["views_per_step"] < row["ops_per_step"]
    assert 0 < row["gpu_way_kernels_per_step"] < row["gpu_way_ops_per_step"] < row["ops_per_step"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc (Linux)")
def test_memory_probes_report_a_peak_that_grows_with_the_pixels_fitted():
    """benchmarks.memory: a whole compression's peak, and a fit's by pixel fraction, above the
    imported package (VmHWM), in a fresh process each."""
    from benchmarks import memory

    small, large = (memory.measure("compress", 1, s, s, steps=2, threads=1) for s in (16, 192))
    assert 0 <= small < large
    assert memory.measure_fraction(1.0, 128, 128, threads=1) > 0


def test_load_part_times_solo_pairs_and_busy_runs(monkeypatch, tmp_path):
    """benchmarks.load.measure: four whole `lottery compress` commands (3 steps, 16x16), each file
    the same."""
    from conftest import save_png, scene

    from benchmarks import load

    png = save_png(tmp_path / "x.png", scene(16, 16))
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1")
    r = load.measure(png, tmp_path, 3, env)
    assert r["solo_s"] > 0 and len(r["pair_s"]) == 2 and r["beside_busy_s"] > 0 and r["same_file"]


def test_the_mosaic_tiles_the_kodak_images_in_order_turning_portrait_ones(tmp_path, monkeypatch):
    """`benchmarks.mosaic`: 768x512 tiles row by row, kodim01 first, repeated; portrait turned."""
    import numpy as np
    from PIL import Image

    from benchmarks import mosaic

    Image.new("RGB", (768, 512), (200, 0, 0)).save(tmp_path / "kodim01.png")
    Image.new("RGB", (512, 768), (0, 200, 0)).save(tmp_path / "kodim02.png")
    monkeypatch.setenv("LOTTERY_KODAK", str(tmp_path))
    out = tmp_path / "m.png"
    mosaic.main([str(out), "--size", "1600x700", "--crop", "1600x600"])
    image = np.asarray(Image.open(out))
    assert image.shape == (600, 1600, 3)
    assert tuple(image[10, 10]) == (200, 0, 0) and tuple(image[10, 800]) == (0, 200, 0)
    assert tuple(image[10, 1580]) == (200, 0, 0) and tuple(image[520, 10]) == (0, 200, 0)
