"""The `lottery` command line, run as users run it: the console script in a subprocess.

Fitting runs are few and tiny (32x32, a handful of steps); the shared ones are module-scoped.
Each subprocess pays a torch import (seconds on a busy 2-core box), so the subprocess runs cover
the console-script path itself (exit codes, one-line errors, thread counts, determinism across
processes) and the many remaining cases call `lotterycli.cli.main` in-process (`run`), with the
same argv / exit status / stdout / stderr contract.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import png_pixels, run_inprocess, run_lottery, save_png, scene
from lotterycli import __version__

run = run_inprocess

FIT = ("--preset", "fast", "--steps", "6", "--device", "cpu")


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def listing(directory) -> set[str]:
    return {p.name for p in directory.iterdir()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One 32x32 image compressed twice (same seed), the first also decompressed."""
    d = tmp_path_factory.mktemp("cli")
    src = save_png(d / "img.png", scene(32, 32))
    first = run_lottery("compress", src, "-o", d / "a.lottery", "--seed", 5, "--json", *FIT)
    second = run("compress", src, "-o", d / "b.lottery", "--seed", 5, "--quiet", *FIT)
    return {"dir": d, "src": src, "first": first, "second": second, "a": d / "a.lottery", "b": d / "b.lottery"}


# -- compress / decompress ----------------------------------------------------------------------
def test_compress_json_line(work):
    res = work["first"]
    assert res.returncode == 0, res.stderr
    summary = res.json  # exactly one line, valid JSON
    assert {"bytes", "bpp", "psnr"} <= set(summary)
    size = work["a"].stat().st_size
    assert summary["bytes"] == size
    assert summary["bpp"] == pytest.approx(size * 8 / (32 * 32), abs=1e-4)
    assert (summary["width"], summary["height"], summary["seed"], summary["steps"]) == (32, 32, 5, 6)
    assert summary["output"] == str(work["a"])
    assert 1000 < summary["macs_per_pixel"] < 10000
    assert 5 < summary["psnr"] < 60


def test_same_input_and_seed_give_identical_files(work):
    assert work["second"].returncode == 0, work["second"].stderr
    assert work["a"].read_bytes() == work["b"].read_bytes()


def test_two_thread_compression_is_repeatable_and_decodes_to_its_report(work):
    """With two torch threads the fit runs the rate on a second thread (`Fitter`'s rate_thread):
    two runs give the same file as each other and as a one-thread run, and it decodes to the PSNR
    the run reported."""
    d = work["dir"]
    runs = [run_lottery("compress", work["src"], "-o", d / f"two{i}.lottery", "--seed", 5, "--json", *FIT, threads=2)
            for i in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].json["threads"] == 2
    assert (d / "two0.lottery").read_bytes() == (d / "two1.lottery").read_bytes()
    # the split step sums the same gradients in the same order as the plain one-thread step
    assert (d / "two0.lottery").read_bytes() == work["a"].read_bytes()
    assert run("decompress", d / "two0.lottery", "-o", d / "two0.png", "--quiet").returncode == 0
    assert psnr_u8(png_pixels(d / "two0.png"), png_pixels(work["src"])) == pytest.approx(runs[0].json["psnr"], abs=2e-3)


def test_quiet_prints_nothing_on_stderr(work):
    assert work["second"].stderr == ""


def test_decompress_matches_self_check(work):
    d = work["dir"]
    res = run("decompress", work["a"], "-o", d / "a1.png", "--json")
    assert res.returncode == 0, res.stderr
    out = res.json
    assert (out["width"], out["height"]) == (32, 32)
    decoded = png_pixels(d / "a1.png")
    assert decoded.shape == (32, 32, 3)
    reported = work["first"].json["psnr"]
    assert psnr_u8(decoded, png_pixels(work["src"])) == pytest.approx(reported, abs=2e-3)


def test_decompress_twice_and_across_thread_counts_identical(work):
    d = work["dir"]
    r1 = run_lottery("decompress", work["a"], "-o", d / "t1.png", "--quiet", threads=1)
    r2 = run_lottery("decompress", work["a"], "-o", d / "t2.png", "--quiet", threads=2)
    r3 = run("decompress", work["a"], "-o", d / "t3.png", "--quiet")
    assert (r1.returncode, r2.returncode, r3.returncode) == (0, 0, 0), (r1.stderr, r2.stderr, r3.stderr)
    assert r1.stderr == "" and r2.stderr == ""  # --quiet: nothing on stderr (the result line stays on stdout)
    p1 = (d / "t1.png").read_bytes()
    assert p1 == (d / "t2.png").read_bytes() == (d / "t3.png").read_bytes()


def test_decompress_default_name_never_clobbers_original(work, tmp_path):
    src = shutil.copy(work["src"], tmp_path / "pic.png")
    shutil.copy(work["a"], tmp_path / "pic.lottery")
    original = (tmp_path / "pic.png").read_bytes()
    res = run("decompress", tmp_path / "pic.lottery", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pic.decoded.png").exists()
    # the second time pic.decoded.png exists: refused without --force, overwritten with it
    again = run("decompress", tmp_path / "pic.lottery")
    again.assert_one_line_error()
    forced = run("decompress", tmp_path / "pic.lottery", "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "pic.png").read_bytes() == original, "--force must not overwrite the original image"
    assert listing(tmp_path) == {"pic.png", "pic.lottery", "pic.decoded.png"}
    # without pic.png around, the default is pic.png
    (tmp_path / "pic.png").unlink()
    (tmp_path / "pic.decoded.png").unlink()
    assert run("decompress", tmp_path / "pic.lottery", "--quiet").returncode == 0
    assert listing(tmp_path) == {"pic.lottery", "pic.png"}
    del src


def test_info(work):
    res = run("info", work["a"])
    assert res.returncode == 0, res.stderr
    size = work["a"].stat().st_size
    for word in ("format_version", "height", "width", "seed", "sizes", "mask", "latents", "total"):
        assert word in res.stdout
    assert str(size) in res.stdout
    js = run("info", work["a"], "--json").json
    assert (js["height"], js["width"], js["seed"]) == (32, 32, 5)
    s = js["sizes"]
    assert s["total"] == size == s["header"] + s["mask"] + sum(s["networks"].values()) + s["latents"]
    assert js["bpp"] == pytest.approx(8 * size / 1024)


def test_version():
    res = run_lottery("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"lottery {__version__}"


def test_odd_size_round_trip(odd_png, tmp_path):
    out = tmp_path / "odd.lottery"
    res = run("compress", odd_png, "-o", out, "--json", *FIT)
    assert res.returncode == 0, res.stderr
    assert (res.json["width"], res.json["height"]) == (37, 53)
    dec = run("decompress", out, "-o", tmp_path / "odd.dec.png", "--json")
    assert dec.returncode == 0, dec.stderr
    pixels = png_pixels(tmp_path / "odd.dec.png")
    assert pixels.shape == (53, 37, 3)
    assert psnr_u8(pixels, png_pixels(odd_png)) == pytest.approx(res.json["psnr"], abs=2e-3)


@pytest.mark.parametrize("fixture, word", [("gray_png", "grayscale"), ("rgba_png", "alpha"), ("gray16_png", "16-bit")])
def test_other_modes_accepted_with_warning(request, fixture, word, tmp_path):
    src = request.getfixturevalue(fixture)
    res = run("compress", src, "-o", tmp_path / "x.lottery", "--json", "--steps", "2", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    warnings = [l for l in res.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and word in warnings[0], res.stderr
    assert (tmp_path / "x.lottery").exists()
    assert res.json["width"] == 24


def test_16bit_colour_png_warns_or_refuses(rgb16_png, tmp_path):
    res = run("compress", rgb16_png, "-o", tmp_path / "x.lottery", "--steps", "2", "--device", "cpu")
    if res.returncode == 0:
        assert "16-bit" in res.stderr and res.stderr.startswith("warning:")
        assert (tmp_path / "x.lottery").exists()
    else:
        assert "16-bit" in res.assert_one_line_error()


def test_force_overwrites_and_quiet(work, tmp_path):
    src = shutil.copy(work["src"], tmp_path / "img.png")
    target = tmp_path / "img.lottery"
    target.write_bytes(b"old content")
    refused = run("compress", src, *FIT)
    assert "already exists" in refused.assert_one_line_error()
    assert target.read_bytes() == b"old content"
    forced = run("compress", src, "--force", "--quiet", "--seed", "5", *FIT)
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr == ""
    assert target.read_bytes() == work["a"].read_bytes()  # default name: IMAGE with .lottery suffix
    assert listing(tmp_path) == {"img.png", "img.lottery"}


# -- errors -------------------------------------------------------------------------------------
def corrupt_variants(data: bytes) -> dict[str, bytes]:
    mid = len(data) // 2
    flipped = bytearray(data)
    flipped[mid] ^= 0x40
    magic = bytearray(data)
    magic[0] ^= 0xFF
    version = bytearray(data)
    version[4] = (version[4] + 1) % 256
    return {
        "truncated": data[: len(data) - 17],
        "header_only": data[:20],
        "empty": b"",
        "flipped": bytes(flipped),
        "magic": bytes(magic),
        "version": bytes(version),
        "appended": data + b"\0\0",
    }


@pytest.mark.parametrize("kind", ["truncated", "header_only", "empty", "flipped", "magic", "version", "appended"])
def test_decompress_bad_files(work, tmp_path, kind):
    bad = tmp_path / "bad.lottery"
    bad.write_bytes(corrupt_variants(work["a"].read_bytes())[kind])
    before = listing(tmp_path)
    res = run("decompress", bad, "-o", tmp_path / "out.png")
    msg = res.assert_one_line_error()
    assert listing(tmp_path) == before
    if kind == "magic":
        assert "magic" in msg
    if kind == "version":
        assert "version" in msg
    if kind in ("truncated", "header_only"):
        assert "truncated" in msg


def test_info_reads_the_header_without_importing_torch(work):
    """`lottery info` in a batch loop should not pay seconds for the torch import per file."""
    code = ("import sys\n"
            "from lotterycli.cli import main\n"
            f"sys.argv = ['lottery', 'info', {str(work['a'])!r}, '--json']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sizes"]["total"] == work["a"].stat().st_size


def test_info_bad_file(work, tmp_path):
    bad = tmp_path / "bad.lottery"
    bad.write_bytes(corrupt_variants(work["a"].read_bytes())["magic"])
    run("info", bad).assert_one_line_error()
    run("info", tmp_path / "missing.lottery").assert_one_line_error()


def test_decompress_missing_file(tmp_path):
    msg = run_lottery("decompress", tmp_path / "nope.lottery").assert_one_line_error()
    assert "nope.lottery" in msg
    assert listing(tmp_path) == set()


@pytest.mark.parametrize(
    "case",
    ["missing", "text", "tiny", "steps0", "lambda", "maskratio", "device", "badyaml", "unknownkey", "dir"],
)
def test_compress_bad_inputs(case, rgb32, text_png, tiny_png, tmp_path):
    args = {
        "missing": [tmp_path / "missing.png"],
        "text": [text_png],
        "tiny": [tiny_png],
        "steps0": [rgb32, "--steps", "0"],
        "lambda": [rgb32, "--lambda", "-1"],
        "maskratio": [rgb32, "--mask-ratio", "2"],
        "device": [rgb32, "--device", "tpu"],
        "badyaml": [rgb32, "--config", tmp_path / "bad.yaml"],
        "unknownkey": [rgb32, "--config", tmp_path / "unknown.yaml"],
        "dir": [tmp_path / "adir"],
    }[case]
    (tmp_path / "bad.yaml").write_text("steps: [1, 2\n")
    (tmp_path / "unknown.yaml").write_text("schedule:\n  warp: 9\n")
    (tmp_path / "adir").mkdir()
    before = listing(tmp_path)
    res = run("compress", *args, "-o", tmp_path / "out.lottery")
    msg = res.assert_one_line_error()
    assert listing(tmp_path) == before, "no output file may be left behind"
    expect = {"steps0": "--steps", "lambda": "--lambda", "maskratio": "--mask-ratio", "device": "--device",
              "badyaml": "YAML", "unknownkey": "schedule.warp", "tiny": "16", "missing": "missing.png"}
    if case in expect:
        assert expect[case] in msg
    if case in ("steps0", "lambda", "maskratio", "device"):
        assert res.returncode == 2  # bad usage
    else:
        assert res.returncode == 1


def test_output_equal_to_input_refused_even_with_force(rgb32):
    original = rgb32.read_bytes()
    for out in (rgb32, rgb32.parent / "." / rgb32.name):
        res = run("compress", rgb32, "-o", out, "--force", *FIT)
        assert "input" in res.assert_one_line_error()
        assert rgb32.read_bytes() == original


def test_output_directory_missing(rgb32, tmp_path):
    res = run("compress", rgb32, "-o", tmp_path / "no" / "such" / "x.lottery", *FIT)
    assert "does not exist" in res.assert_one_line_error()


def test_usage_errors_are_one_line():
    for args in (["compress"], ["frobnicate"], ["restore", "x.png"]):
        res = run_lottery(*args)
        res.assert_one_line_error()
        assert res.returncode == 2


@pytest.mark.parametrize("command, phrase", [
    ("compress", "(default: IMAGE with .lottery suffix)"),
    ("decompress", "(default: FILE.png, or FILE.decoded.png if FILE.png exists)"),
    ("restore", "(default: IMAGE.restored.png)"),
    ("restore", "(denoise: estimated if not given; sr: 0)"),
])
def test_help_shows_output_defaults(command, phrase):
    """The help's default names survive rich's rendering (square brackets would be read as markup and vanish)."""
    res = run(command, "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.replace("│", " ").split())
    assert phrase in text
