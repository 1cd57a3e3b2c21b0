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
    # METHOD.md: "About -0.7 % BD-rate against VTM-19.1".
    assert bdrate.bd_rate(VTM_R, VTM_D, LC_R, LC_D) == pytest.approx(-0.7, abs=0.1)


def test_pchip_matches_scipy():
    interp = pytest.importorskip("scipy.interpolate", reason="scipy not installed (bench extra)")
    x = [0.0, 1.0, 2.5, 3.0, 5.0, 6.0]
    y = [0.0, 2.0, 1.5, 4.0, 4.2, 7.0]
    ours, ref = bdrate.Pchip(x, y), interp.PchipInterpolator(x, y)
    q = [i * 0.13 for i in range(47)]
    assert max(abs(a - b) for a, b in zip(ours(q), ref(q))) < 1e-12
    assert ours.integrate(0.3, 5.7) == pytest.approx(float(ref.integrate(0.3, 5.7)), abs=1e-12)


# --------------------------------------------------------------------------- data

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
                                "decode_matches_encoder": True, "macs_per_pixel": 3569.0, "steps": 300})
    from benchmarks.runner import REFERENCE, _bd_table, _curves, summarize_restore

    curves = _curves(comp_points)
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
                         "crop": 128, "points": comp_points, "curves": curves, "bd_rate": _bd_table(comp_points, curves),
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


def test_render_docs_writes_page(tmp_path):
    from benchmarks.report import render_docs

    d = synthetic_results()
    written = render_docs(d, tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img", plots=False)
    page = tmp_path / "docs" / "benchmarks.md"
    assert page in written and page.read_text().startswith("<!-- lottery-bench mode=quick")


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


def test_step_profile_script_runs_and_reports_the_step_rates():
    """benchmarks/step_profile.py (docs/tuning.md quotes it) at a tiny size: every part and the three rates."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "step_profile.py"), "--size", "32", "--steps", "3"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for part in ("ARM rate", "ModNet", "upsampling", "synthesis, all pixels", "whole renders", "observed pixels only",
                 "pixel_fraction 0.5"):
        assert part in out
    rates = [float(line.split()[-1]) for line in out.splitlines() if "steps/s" in line]
    assert len(rates) == 3 and all(r > 0 for r in rates)
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "step_profile.py"), "--size", "32", "--steps", "3",
                          "--threads", "2"], capture_output=True, text=True, timeout=120, check=True).stdout
    rates = [float(line.split()[-1]) for line in out.splitlines() if "steps/s" in line]
    assert "rate on 2nd thread" in out and len(rates) == 4 and all(r > 0 for r in rates)


def test_step_rate_script_reports_a_rate_for_a_source_tree():
    """benchmarks/step_rate.py (docs/tuning.md quotes it) at a tiny size, importing this tree's src."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "step_rate.py"), "--src", str(root),
                          "--size", "24x16", "--steps", "2", "--repeats", "2", "--threads", "1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.startswith(str(root)) and out.strip().endswith("steps/s")
    rates = [float(v) for v in out.split(": ")[-1].replace(" steps/s", "").split(", ")]
    assert len(rates) == 2 and all(r > 0 for r in rates)


def test_quantize_study_script_compares_both_searches(tmp_path):
    """benchmarks/quantize_study.py (docs/tuning.md quotes it) on a tiny crop: one line holding the
    per-module and the per-tensor file of the same fit, each with a size breakdown."""
    import json
    import subprocess

    if not (kodak_dir() / "kodim01.png").exists():
        pytest.skip(f"Kodak images not found in {kodak_dir()}")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "q.jsonl"
    subprocess.run([sys.executable, str(root / "benchmarks" / "quantize_study.py"), str(out), "--images", "1",
                    "--lams", "0.02", "--steps", "3", "--crop", "24", "--workers", "1"],
                   capture_output=True, text=True, timeout=120, check=True)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["img"] == 1 and row["crop"] == 24 and row["lam"] == 0.02
    for name in ("module", "tensor"):
        r = row[name]
        assert r["bytes"] == r["header"] + r["mask"] + sum(r["networks"].values()) + r["latents"]
        assert r["psnr"] > 10 and r["cost"] > 0
    assert all(len(set(s.values())) == 1 for s in row["module"]["shifts"].values())
    assert set(row["tensor"]["shifts"]["arm"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    assert row["v1_header_extra"] > 0



@pytest.fixture(scope="module")
def tiny_lottery_file(tmp_path_factory) -> Path:
    """A 24x40 noise image compressed with 20 steps (nonzero latents), written as a .lottery file."""
    from PIL import Image

    from lotterycli import api
    from lotterycli.images import read_image

    folder = tmp_path_factory.mktemp("tiny")
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(40, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(folder / "img.png")
    result = api.compress(read_image(folder / "img.png"), preset="fast", steps=20, lam=1e-4, seed=0, device="cpu")
    (folder / "img.lottery").write_bytes(result.data)
    return folder / "img.lottery"


def _run_script(name: str, *args: str) -> str:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(root / "benchmarks" / name), *args],
                          capture_output=True, text=True, timeout=120, check=True).stdout


def test_band_study_script_codes_each_band_height(tiny_lottery_file):
    """benchmarks/band_study.py (docs/format.md quotes it) on a tiny file: one line per band height,
    fewer wavefronts with bands, the file's own height at +0.00 %."""
    out = _run_script("band_study.py", str(tiny_lottery_file), "--bands", "0,8", "--repeats", "1", "--threads", "1")
    lines = [line for line in out.splitlines() if "wavefronts" in line]
    assert len(lines) == 2 and "(+0.00 %)" in lines[0] and "latent decode median" in lines[1]
    steps = [int(line.split(", ")[1].split()[0]) for line in lines]
    assert steps[1] < steps[0]


def test_mask_stats_script_reports_each_layer(tiny_lottery_file):
    """benchmarks/mask_stats.py (docs/tuning.md quotes it): both code lengths and four layers' counts,
    the per-layer one never above the global one (a finer model of the same bits)."""
    out = _run_script("mask_stats.py", str(tiny_lottery_file))
    (line,) = out.splitlines()
    whole = float(line.split("one ratio ")[1].split(" B")[0])
    per_layer = float(line.split("per layer ")[1].split(" B")[0])
    assert 0 < per_layer <= whole
    assert len(line.split("kept per layer: ")[1].split(", ")) == 4


def test_arm_refit_study_writes_each_refit_of_one_fit(tmp_path):
    """benchmarks/arm_refit_study.py (docs/tuning.md quotes it) on a tiny crop: one line per refit
    setting of the same fit, all with the fit's PSNR (the refit moves only the rate)."""
    import json

    if not (kodak_dir() / "kodim01.png").exists():
        pytest.skip(f"Kodak images not found in {kodak_dir()}")
    out = tmp_path / "r.jsonl"
    _run_script("arm_refit_study.py", str(out), "--images", "1", "--lams", "0.02", "--steps", "4", "--crop", "24",
                "--refits", "0,6:0.005", "--workers", "1")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["refit_steps"], r["crop"]) for r in rows] == [(0, 24), (6, 24)]
    assert rows[0]["psnr"] == rows[1]["psnr"] and rows[0]["fit_s"] == rows[1]["fit_s"]
    assert rows[1]["objective_bits"] <= rows[0]["objective_bits"]
    assert all(r["bytes"] > r["arm_bytes"] > 0 for r in rows)


def test_refit_bd_script_reads_a_study_and_a_protocol(tmp_path):
    """benchmarks/refit_bd.py on made-up lines: BD-rates against the protocol's anchor, the
    same-fit byte change, and the refit-0 points beside the protocol's."""
    import json

    study = tmp_path / "s.jsonl"
    lines = []
    for k, lam in enumerate((0.001, 0.004, 0.016)):
        for steps, shrink in ((0, 1.0), (300, 0.9)):
            n_bytes = int(4000 / (k + 1) * shrink)
            lines.append(dict(img=1, lam=lam, refit_steps=steps, refit_lr=0.005, bytes=n_bytes,
                              bpp=n_bytes * 8 / 65536, psnr=34.0 - 3 * k))
    study.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    webp = [dict(method="webp", image="kodim01", setting=f"q={q}", bpp=b, psnr=p)
            for q, b, p in ((10, 0.2, 28.0), (50, 0.5, 31.0), (90, 1.0, 35.0))]
    own = [dict(method="lottery", image="kodim01", setting="lam=0.004", n_bytes=2000, bpp=0.24, psnr=31.0)]
    protocol = tmp_path / "full.json"
    protocol.write_text(json.dumps({"parts": {"compress": {"points": webp + own}}}))
    out = _run_script("refit_bd.py", str(study), "--protocol", str(protocol))
    assert "lambdas: lam=0.001, lam=0.004, lam=0.016" in out and "images with every lambda: kodim01;" in out
    assert "kodim01 lam=0.004: study 2000 B" in out and "protocol 2000 B" in out
    refit0 = next(line for line in out.splitlines() if line.startswith("refit 0:"))
    refit = next(line for line in out.splitlines() if line.startswith("refit 300"))
    bd0 = float(refit0.split("webp ")[1].split(" %")[0])
    bd1 = float(refit.split("webp ")[1].split(" %")[0])
    assert bd1 < bd0 and "mean -9.99 %" in refit


def test_time_refit_script_reports_seconds_and_a_lower_objective(tiny_lottery_file):
    """benchmarks/time_refit.py (docs/tuning.md quotes it): the refit never raises its objective."""
    out = _run_script("time_refit.py", str(tiny_lottery_file), "--steps", "5", "--threads", "1")
    (line,) = out.splitlines()
    assert line.startswith("24x40, 5 steps, 1 thread(s): ")
    before, after = (float(v) for v in line.split("objective ")[1].split(" bits")[0].split(" -> "))
    assert after <= before


def test_compress_part_keeps_each_lottery_file(monkeypatch, tmp_path):
    """`--keep-files DIR` (re-coding studies read them): one decodable file per (image, lambda)."""
    from PIL import Image

    from benchmarks.runner import Config, Deadline, run_compress
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
        assert len(data) == p["n_bytes"]
        assert api.decompress(data).shape == (3, 16, 16)


def test_recode_study_rewrites_kept_files_with_the_same_pixels(monkeypatch, tmp_path):
    """benchmarks/recode_study.py (docs/tuning.md quotes it): v4 files written as v3 grow, decode
    to the same pixels, and the BD-rates are computed with both sizes."""
    from PIL import Image

    from benchmarks.runner import Config, Deadline, run_compress

    kodak = tmp_path / "kodak"
    kodak.mkdir()
    g = torch.Generator().manual_seed(4)
    Image.fromarray((torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8).numpy()).save(kodak / "kodim01.png")
    monkeypatch.setenv("LOTTERY_KODAK", str(kodak))
    keep = tmp_path / "files"
    cfg = Config(mode="quick", images=["kodim01"], crop=16, lambdas=[0.002, 0.01, 0.05], compress_preset="fast",
                 compress_steps=3, codecs=["jpeg"], keep_files=str(keep))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"parts": {"compress": run_compress(cfg, Deadline(None))}}))
    out = _run_script("recode_study.py", str(keep), "--version", "3", "--protocol", str(results))
    lines = out.splitlines()
    assert sum("-> v3" in line and line.endswith("same pixels") for line in lines) == 3
    growth = [float(line.split("(")[1].split(" %")[0]) for line in lines if "-> v3" in line]
    assert all(g > 0 for g in growth)  # v3 headers alone are 18 bytes longer
    assert lines[-2].startswith("files as written: BD-rate vs") and lines[-1].startswith("re-coded as v3: BD-rate vs")


def test_scratch_arm_study_keeps_the_cheaper_arm_with_the_same_pixels(tiny_lottery_file, tmp_path):
    """benchmarks/scratch_arm_study.py (docs/tuning.md quotes it): one line per file, each
    candidate width priced, the kept file never larger than the file re-coded as v4."""
    import shutil

    folder = tmp_path / "kept"
    folder.mkdir()
    shutil.copy(tiny_lottery_file, folder / "kodim01-lam=0.0001.lottery")
    out = _run_script("scratch_arm_study.py", str(folder), "--widths", "4", "--steps", "5")
    line = out.splitlines()[0]
    assert line.startswith("kodim01-lam=0.0001.lottery: v4 ") and "width 4: " in line and line.endswith("same pixels")
    v4 = int(line.split("v4 ")[1].split(" B")[0])
    kept = int(line.split("kept ")[1].split(" B")[0])
    assert kept <= v4
    log = tmp_path / "study.log"
    log.write_text(line.replace(f"kept {kept} B", f"kept {kept - 1} B") + "\n")  # an earlier run's line
    again = _run_script("scratch_arm_study.py", str(folder), "--widths", "4", "--steps", "5", "--log", str(log))
    assert f"kept {kept - 1} B" in again.splitlines()[0]  # read back, not fitted again


def test_arm_share_study_lists_each_file_with_its_share_and_outcome(tiny_lottery_file, tmp_path):
    """benchmarks/arm_share_study.py (docs/tuning.md quotes it): the share compress computes, the
    coded ARM bytes, and the scratch-ARM outcome read from a study log."""
    import shutil

    from lotterycli.bitstream.header import describe

    folder = tmp_path / "kept"
    folder.mkdir()
    shutil.copy(tiny_lottery_file, folder / "kodim01-lam=0.0001.lottery")
    log = tmp_path / "study.log"
    log.write_text("kodim01-lam=0.0001.lottery: v4 900 B; width 16: 900 B, width 8: 850 B; kept 850 B (-5.56 %), 3 s; same pixels\n")
    line = _run_script("arm_share_study.py", str(folder), "--log", str(log)).splitlines()[1]
    name, share, arm_bytes, latent_bytes = line.split()[:4]
    sizes = describe(tiny_lottery_file.read_bytes())["sizes"]
    assert name == "kodim01-lam=0.0001.lottery" and 0.0 <= float(share) < 1.0  # this tiny file's ARM may quantize to zeros
    assert int(arm_bytes) == sizes["networks"]["arm"] and int(latent_bytes) == sizes["latents"]
    assert line.endswith("kept, -5.56 %")


def test_decode_profile_and_compress_stages_scripts_report_their_parts(tiny_lottery_file, tmp_path):
    """benchmarks/decode_profile.py and benchmarks/compress_stages.py (docs/tuning.md quotes both)."""
    from lotterycli.images import write_png

    lines = _run_script("decode_profile.py", str(tiny_lottery_file), "--repeats", "2", "--threads", "1").splitlines()
    assert len(lines) == 2 and all(line.startswith("total ") and "latent loop" in line and "synthesis" in line for line in lines)
    image = tmp_path / "img.png"
    write_png(image, torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0)))
    out = _run_script("compress_stages.py", str(image), "--steps", "4", "--threads", "1").splitlines()
    assert out[0].startswith(f"{image}: 4 steps") and out[0].endswith(" dB")
    stages = [line.split(":")[0].strip() for line in out[1:]]
    assert stages[0] == "set-up" and stages[-2:] == ["quantize networks", "encode + decode"]
    assert "soft" in stages and "arm refit" in stages


def test_compare_runs_script_reports_cost_changes_and_bd_rates(tmp_path):
    """benchmarks/compare_runs.py on two made-up runs: NEW has 2 % more bytes at the same PSNRs, so
    every J grows; OLD re-sized from a scratch-study log shrinks further and its BD-rate improves."""
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
    out = _run_script("compare_runs.py", str(new), str(old))
    lines = out.splitlines()
    assert sum(line.startswith("kodim01") for line in lines) == 3
    means = [line for line in lines if line.startswith("lambda ")]
    assert len(means) == 3 and all("over 1 images" in line for line in means)
    assert all(float(line.split("change ")[1].split(" %")[0]) > 0 for line in means)
    bd = {line.split(":")[0]: float(line.split("webp ")[1].split(" %")[0]) for line in lines if "BD-rate" in line}
    assert bd["new"] == pytest.approx(100 * (1.02 * (1 + bd["old"] / 100) - 1), abs=0.2)  # 2 % more bits throughout

    log = tmp_path / "scratch.log"
    log.write_text("kodim01-lam=0.016.lottery: v4 2250 B; width 16: 2250 B, width 8: 1800 B; kept 1800 B (-20.00 %), 9 s; same pixels\n")
    out2 = _run_script("compare_runs.py", str(new), str(old), "--old-sizes", str(log))
    row = next(line for line in out2.splitlines() if line.startswith("kodim01") and " 0.016 " in line)
    assert row.split()[2] == "1800"
    bd2 = float(next(line for line in out2.splitlines() if line.startswith("old:")).split("webp ")[1].split(" %")[0])
    assert bd2 < bd["old"]


def test_tuning_vs_protocol_script_compares_each_line_with_the_protocol_point(tmp_path):
    """benchmarks/tuning_vs_protocol.py: a control line equal to the protocol gives J +0.00 %; a line
    with 10 % more bits at the same PSNR gives a positive change; a crop the protocol lacks is named."""
    own = dict(method="lottery", image="kodim03", setting="lam=0.004", lam=0.004, n_bytes=2308,
               bpp=8 * 2308 / 65536, psnr=30.76)
    protocol = tmp_path / "full.json"
    protocol.write_text(json.dumps({"parts": {"compress": {"points": [own]}}}))
    lines = [dict(img=3, lam=0.004, bpp=own["bpp"], psnr=30.76),
             dict(img=3, lam=0.004, sched={"latent_lr_scale": 0.67}, bpp=own["bpp"] * 1.1, psnr=30.76),
             dict(img=5, lam=0.004, bpp=0.5, psnr=28.0)]
    results = tmp_path / "out.jsonl"
    results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = _run_script("tuning_vs_protocol.py", str(results), "--protocol", str(protocol))
    assert "mean (control): J +0.00 % over 1 points" in out
    changed = next(x for x in out.splitlines() if x.startswith("mean latent_lr_scale=0.67"))
    assert float(changed.split("J ")[1].split(" %")[0]) > 0
    assert "kodim05 lam=0.004: not in" in out


def test_tuning_compare_script_against_control_and_longest(tmp_path):
    """benchmarks/tuning_compare.py: a change is compared with the control of its crop, lambda and
    steps (10 % more bits at the same PSNR: J up); --against longest compares each step count
    with the longest fit of the same crop, lambda and change (that fit: +0.00 %)."""
    base = dict(img=3, lam=0.004, psnr=30.0, s=10.0)
    lines = [dict(base, steps=800, bpp=0.30), dict(base, steps=1600, bpp=0.25),
             dict(base, steps=1600, bpp=0.275, sched={"rate_row_stride": 2}),
             dict(base, img=1, steps=1600, bpp=0.5, sched={"rate_row_stride": 2})]
    results = tmp_path / "out.jsonl"
    results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = _run_script("tuning_compare.py", str(results))
    changed = next(x for x in out.splitlines() if x.startswith("mean rate_row_stride=2"))
    assert float(changed.split("J ")[1].split(" %")[0]) > 0 and "over 1 points (0 better)" in changed
    assert "kodim01 lam=0.004 rate_row_stride=2: no control line at 1600 steps" in out
    out = _run_script("tuning_compare.py", str(results), "--against", "longest")
    means = {int(x.split()[1]): float(x.split("J ")[1].split(" %")[0]) for x in out.splitlines() if x.startswith("mean")}
    assert means[800] > 0 and means[1600] == 0.0
