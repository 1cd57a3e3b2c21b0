"""The `lottery` command line, run as users run it: the console script in a subprocess.

Fitting runs are few and tiny (32x32, a handful of steps); the shared ones are module-scoped.
Each subprocess pays a torch import (seconds on a busy 2-core box), so the subprocess runs cover
the console-script path itself (exit codes, one-line errors, thread counts, determinism across
processes) and the many remaining cases call `lotterycli.cli.main` in-process (`run`), with the
same argv / exit status / stdout / stderr contract.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import yaml
from conftest import LOTTERY, png_pixels, run_inprocess, run_lottery, save_png, scene
from PIL import Image

from lotterycli import __version__

run = run_inprocess

FIT = ("--preset", "fast", "--steps", "6", "--device", "cpu")


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def listing(directory) -> set[str]:
    return {p.name for p in directory.iterdir()}


def run_binary(*args, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """`lotterycli.cli.main` in this process with binary standard streams, as a pipe gives them:
    (exit status, the bytes written to stdout, stderr text). For `-` as input or output."""
    from lotterycli import cli

    out = io.BytesIO()
    fake_in, fake_out, fake_err = io.TextIOWrapper(io.BytesIO(stdin)), io.TextIOWrapper(out, write_through=True), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
    sys.stdin, sys.stdout, sys.stderr, sys.argv = fake_in, fake_out, fake_err, ["lottery"] + [str(a) for a in args]
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        fake_out.flush()
        data = out.getvalue()
    finally:
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
        fake_out.detach()
    return code, data, fake_err.getvalue()


def png_header_only(path, width: int, height: int):
    """A PNG that is nothing but a signature and an IHDR chunk declaring width x height (RGB, 8 bits)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


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


@pytest.fixture
def passive_omp(monkeypatch):
    """Two-thread subprocesses with sleeping (not spinning) OpenMP workers: on a busy 2-core machine
    spinning workers made each small op wait a time slice (a 5 s compression took 80 s). Only the
    scheduling changes, never a result."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")


def test_two_thread_compression_equals_one_thread_and_decodes_to_its_report(work, passive_omp):
    """With two torch threads the fit runs the rate on a second thread (`Fitter`'s rate_thread):
    the file is byte for byte the one-thread run's (itself repeatable: the `work` fixture's two
    runs), and it decodes to the PSNR the run reported."""
    d = work["dir"]
    res = run_lottery("compress", work["src"], "-o", d / "two.lottery", "--seed", 5, "--json", *FIT, threads=2)
    assert res.returncode == 0, res.stderr
    assert res.json["threads"] == 2
    # the split step sums the same gradients in the same order as the plain one-thread step
    assert (d / "two.lottery").read_bytes() == work["a"].read_bytes()
    assert run("decompress", d / "two.lottery", "-o", d / "two.png", "--quiet").returncode == 0
    assert psnr_u8(png_pixels(d / "two.png"), png_pixels(work["src"])) == pytest.approx(res.json["psnr"], abs=2e-3)


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


def test_decompress_twice_and_across_thread_counts_identical(work, passive_omp):
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
    text = res.stdout
    # a readable table: no raw dict / list reprs
    assert "{" not in text and "}" not in text and "'" not in text, text
    for word in ("32 x 32", "version 5", "compressed image", "seed", "5", "mask ratio", "architecture",
                 "header", "mask", "network: arm", "network: modnet", "network: upsampling", "latents"):
        assert word in text, word
    js = run("info", work["a"], "--json").json
    assert (js["height"], js["width"], js["seed"]) == (32, 32, 5)
    assert (js["format_version"], js["content"], js["frame"]) == (5, "compressed image", 0)
    assert "architecture_preset" in js
    s = js["sizes"]
    assert s["total"] == size == s["header"] + s["mask"] + sum(s["networks"].values()) + s["latents"]
    assert js["bpp"] == pytest.approx(8 * size / 1024)
    # the size breakdown: the total and every part, in bytes
    assert f"{size:,} bytes" in text
    for part in ("header", "mask", "latents"):
        assert f"{s[part]:,} bytes" in text
    for n in s["networks"].values():
        assert f"{n:,} bytes" in text
    # `info -` reads standard input
    code, out, err = run_binary("info", "-", "--json", stdin=work["a"].read_bytes())
    assert code == 0, err
    assert json.loads(out) == js


def test_info_latents_shares_the_latent_bytes_out_by_grid(work):
    """`info --latents` decodes the latents: per grid its size, nonzero values and bytes, which add
    up to the latent section; the image size limit is checked before anything is decoded."""
    from lotterycli.bitstream.container import decode_file

    js = run("info", work["a"], "--latents", "--json").json
    grids = js["latent_grids"]
    payload = decode_file(work["a"].read_bytes())
    assert [(g["level"], g["height"], g["width"]) for g in grids] == [
        (i, *t.shape) for i, t in enumerate(payload.latents)]
    assert [g["nonzero"] for g in grids] == [int(t.count_nonzero()) for t in payload.latents]
    assert sum(g["bytes"] for g in grids) == js["sizes"]["latents"]
    assert all(g["bytes"] == 0 for g in grids if g["nonzero"] == 0)
    text = run("info", work["a"], "--latents").stdout
    assert "grid 0 " in text and f"{grids[0]['height']} x {grids[0]['width']}" in text
    assert "grid 0" not in run("info", work["a"]).stdout
    msg = run("info", work["a"], "--latents", "--max-pixels", "100").assert_one_line_error()
    assert str(work["a"]) in msg and "max-pixels" in msg


def test_a_file_without_a_mask_says_so(work, tmp_path):
    """--mask-ratio 0: the JSON line, the header and `info` say there is no mask; it costs one bit
    of the network section (its count), which `info` rounds to 0 or 1 byte."""
    out = tmp_path / "nomask.lottery"
    res = run("compress", work["src"], "-o", out, "--mask-ratio", "0", "--json", *FIT)
    assert res.returncode == 0, res.stderr
    assert res.json["mask_ratio"] == 0.0
    info = run("info", out)
    assert "no mask, every random weight kept" in info.stdout
    js = run("info", out, "--json").json
    assert js["mask_ratio"] == 0.0 and js["sizes"]["mask"] <= 1


def test_info_on_a_file_that_is_not_a_lottery_file_names_it(work, tmp_path):
    empty = tmp_path / "empty.lottery"
    empty.write_bytes(b"")
    for bad in (work["src"], empty):
        msg = run("info", bad).assert_one_line_error()
        assert str(bad) in msg


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
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
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
    assert str(bad) in run("info", bad).assert_one_line_error()
    assert "missing.lottery" in run("info", tmp_path / "missing.lottery").assert_one_line_error()


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
    res = run_lottery("compress")  # the console script itself
    res.assert_one_line_error()
    assert res.returncode == 2
    for args in (["frobnicate"], ["restore", "x.png"], ["restore", "x.png", "--task", "denoise", "--save-bitstream"]):
        res = run(*args)
        res.assert_one_line_error()
        assert res.returncode == 2


def help_text(*command) -> str:
    """The help as one line (wide, as run_lottery's COLUMNS=200: rich cuts long words in narrow columns)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        res = run(*command, "--help")
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.replace("│", " ").split())


@pytest.mark.parametrize("command, phrase", [
    ("compress", "(default: IMAGE with the .lottery suffix; - writes standard output)"),
    ("decompress", "(default: FILE.png, or FILE.decoded.png if FILE.png exists; - writes standard output)"),
    ("restore", "(default: IMAGE.restored.png; - writes standard output)"),
    ("restore", "(default: denoise estimates it from the image; sr and inpaint 0)"),
])
def test_help_shows_output_defaults(command, phrase):
    """The help's default names survive rich's rendering (square brackets would be read as markup and vanish)."""
    assert phrase in help_text(command)


def test_compress_help_shows_lambda_and_mask_ratio_defaults_and_range():
    from lotterycli.config import task_config_text

    shipped = yaml.safe_load(task_config_text("compress"))
    text = help_text("compress")
    lam = text[text.index("--lambda"):text.index("--mask-ratio")]
    assert "typically 1e-4" in lam and "2e-2" in lam  # a typical range
    assert f"(default: {shipped['lambda']})" in lam
    mask = text[text.index("--mask-ratio"):text.index("--seed")]
    ratios = ", ".join(f"{float(r):g}" for r in [shipped["mask_ratio"], *shipped["mask_ratio_candidates"]])
    expected = (f"0 = no mask (default: {float(shipped['mask_ratio']):g} below lambda "
                f"{float(shipped['screen_min_lambda']):g}, else screened per image among {ratios};")
    assert expected in " ".join(mask.split())
    assert "(default: balanced)" in text and "(default: 0)" in text[text.index("--seed"):]


# -- standard input and output --------------------------------------------------------------------
def test_decompress_stdin_to_stdout_gives_the_png_bytes(work, tmp_path):
    """`lottery decompress - -o - < a.lottery`: the PNG on stdout is byte for byte the one written
    to a file; the result line goes to stderr (nothing with -q)."""
    assert run("decompress", work["a"], "-o", tmp_path / "file.png", "--quiet").returncode == 0
    expected = (tmp_path / "file.png").read_bytes()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(LOTTERY), "decompress", "-", "-o", "-"], input=work["a"].read_bytes(),
                          capture_output=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "32x32" in lines[0], proc.stderr
    code, out, err = run_binary("decompress", "-", "-o", "-", "-q", stdin=work["a"].read_bytes())
    assert (code, out, err) == (0, expected, "")
    assert listing(tmp_path) == {"file.png"}


def test_compress_from_stdin(work, tmp_path):
    out = tmp_path / "out.lottery"
    code, data, err = run_binary("compress", "-", "-o", out, "--seed", 5, "--json", *FIT, stdin=work["src"].read_bytes())
    assert code == 0, err
    assert out.read_bytes() == work["a"].read_bytes()  # the same file as from the path
    summary = json.loads(data)
    assert summary["input"] == "-" and summary["output"] == str(out)
    # without -o there is no name to derive the output's from
    code, data, err = run_binary("compress", "-", *FIT, stdin=work["src"].read_bytes())
    assert code == 1 and data == b"" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: standard input") and "-o" in lines[0], err
    assert listing(tmp_path) == {"out.lottery"}


def test_restore_stdin_to_stdout(tmp_path):
    """`lottery restore - -o -`: the restored PNG on stdout, the result line on stderr, and no
    .lottery file (it would need a name beside the output)."""
    noisy = save_png(tmp_path / "noisy.png", scene(16, 16))
    code, out, err = run_binary("restore", "-", "--task", "denoise", "--sigma", 10, "--steps", 2, "-o", "-",
                                "--device", "cpu", "--json", stdin=noisy.read_bytes())
    assert code == 0, err
    assert out[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (16, 16)
    summary = json.loads(err)
    assert (summary["input"], summary["output"], summary["bitstream"]) == ("-", "-", None)
    assert listing(tmp_path) == {"noisy.png"}


# -- imports, permissions, inputs kept safe --------------------------------------------------------
def test_a_missing_input_is_reported_without_importing_torch(tmp_path):
    code = ("import sys\n"
            "sys.argv = ['lottery', 'compress', 'missing.png']\n"
            "from lotterycli.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch' in sys.modules)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert res.stdout.split() == ["exit", "1", "False"], (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.png" in lines[0], res.stderr


def test_outputs_get_normal_permissions(work, tmp_path):
    """Written atomically through a temporary file, outputs still get the umask's permissions
    (a restored PNG, its .lottery file, a decoded PNG), and no temporary file stays behind."""
    noisy = save_png(tmp_path / "noisy.png", scene(16, 16))
    old = os.umask(0o022)
    try:
        res = run("restore", noisy, "--task", "denoise", "--sigma", 10, "--steps", 1, "-o", tmp_path / "r.png",
                  "--quiet", "--device", "cpu")
        assert res.returncode == 0, res.stderr
        assert oct((tmp_path / "r.png").stat().st_mode & 0o777) == oct(0o644)
        assert oct((tmp_path / "r.lottery").stat().st_mode & 0o777) == oct(0o644)
        os.umask(0o077)
        assert run("decompress", work["a"], "-o", tmp_path / "private.png", "--quiet").returncode == 0
        assert oct((tmp_path / "private.png").stat().st_mode & 0o777) == oct(0o600)
    finally:
        os.umask(old)
    assert listing(tmp_path) == {"noisy.png", "r.png", "r.lottery", "private.png"}


def test_an_input_is_never_an_output(rgb32, tmp_path):
    """Config, mask and image are inputs: never overwritten, even with --force, even through a hard link."""
    config = tmp_path / "c.yaml"
    config.write_text("seed: 3\n")
    mask = tmp_path / "m.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8), mode="L").save(mask)
    link = tmp_path / "link.png"
    os.link(rgb32, link)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    cases = [
        ("compress", rgb32, "--config", config, "-o", config, "--force", *FIT),
        ("restore", rgb32, "--task", "inpaint", "--mask", mask, "-o", mask, "--force", "--steps", 1),
        ("compress", rgb32, "-o", link, "--force", *FIT),
        ("restore", rgb32, "--task", "denoise", "-o", link, "--force", "--steps", 1),
    ]
    for args in cases:
        msg = run(*args).assert_one_line_error()
        assert "input" in msg, msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- seeds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**53 + 1, 2**64 - 1])
def test_large_seeds_are_kept_exactly(seed, tmp_path):
    """Seeds are integers to the last digit: 2**53 + 1 is no float, 2**64 - 1 the largest a file stores."""
    src = save_png(tmp_path / "small.png", scene(16, 16))
    out = tmp_path / "small.lottery"
    res = run("compress", src, "-o", out, "--seed", seed, "--steps", 1, "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert res.json["seed"] == seed and f'"seed": {seed}' in res.stdout
    assert run("info", out, "--json").json["seed"] == seed


def test_seed_above_64_bits_is_refused(rgb32, tmp_path):
    res = run("compress", rgb32, "-o", tmp_path / "x.lottery", "--seed", 2**64, "--steps", 1)
    assert "--seed" in res.assert_one_line_error()
    assert res.returncode == 2 and listing(tmp_path) == {"rgb32.png"}


# -- interruption ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_signal_during_compress_leaves_nothing_behind(signum, code, word, tmp_path):
    save_png(tmp_path / "img.png", scene(64, 64))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("LOTTERY_DEBUG", None)
    proc = subprocess.Popen([str(LOTTERY), "compress", "img.png", "--steps", "1000000", "--device", "cpu", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the handlers are installed before the command imports torch: wait for torch, then a while (on a busy
        # machine the signal may still come during the imports: the outcome must be the same)
        maps = f"/proc/{proc.pid}/maps"
        deadline = time.monotonic() + 60
        while os.path.exists(maps) and time.monotonic() < deadline and proc.poll() is None:
            with open(maps) as fh:
                if "libtorch" in fh.read():
                    break
            time.sleep(0.1)
        time.sleep(2.5 if os.path.exists("/proc/self/maps") else 4.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], err
    assert listing(tmp_path) == {"img.png"}, "no output and no temporary file may be left"


# -- what images are read as ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt, tmp_path):
    from lotterycli.images import read_image

    arr = np.zeros((20, 36, 3), np.uint8)  # 36 wide, 20 high; left half bright
    arr[:, :18] = 200
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    path = tmp_path / f"rot.{fmt.lower()}"
    Image.fromarray(arr).save(path, format=fmt, exif=exif)
    x = read_image(path)
    assert tuple(x.shape) == (3, 36, 20)  # as shown: 20 wide, 36 high
    assert float(x[:, :18].mean()) > 0.7 and float(x[:, 18:].mean()) < 0.1  # the left half is now on top
    res = run("degrade", path, "--task", "denoise", "-o", tmp_path / "shown.png", "--json")
    assert res.returncode == 0, res.stderr
    assert (res.json["width"], res.json["height"]) == (20, 36)


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_animated_image_warns_that_only_the_first_frame_is_used(fmt, tmp_path):
    from lotterycli.images import read_image

    frames = [Image.fromarray(np.full((20, 24, 3), v, np.uint8)) for v in (10, 200, 90)]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="animated image with 3 frames, only the first is used"):
        x = read_image(path)
    assert tuple(x.shape) == (3, 20, 24) and float(x.max()) < 0.1  # the first frame
    res = run("degrade", path, "--task", "denoise", "-o", tmp_path / "first.png")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [f"warning: {path}: animated image with 3 frames, only the first is used"]


@pytest.mark.parametrize("width, height", [(9000, 8000), (12000, 10000)])
def test_a_huge_png_header_is_refused_at_once(width, height, tmp_path):
    """The size comes from the header and is checked before decoding: one line naming --max-pixels,
    no Pillow warning (12000x10000 is past Pillow's own decompression-bomb warning)."""
    big = png_header_only(tmp_path / "big.png", width, height)
    start = time.perf_counter()
    res = run("compress", big, "-o", tmp_path / "big.lottery", "--steps", 1)
    assert time.perf_counter() - start < 5
    msg = res.assert_one_line_error()
    assert "--max-pixels" in msg and f"{width}x{height}" in msg and str(big) in msg
    # --max-pixels raises the limit (this file then fails as the header-only PNG it is)
    res = run("compress", big, "-o", tmp_path / "big.lottery", "--steps", 1, "--max-pixels", 200_000_000)
    msg = res.assert_one_line_error()
    assert "--max-pixels" not in msg and "not a readable image" in msg
    assert listing(tmp_path) == {"big.png"}


def test_a_npy_header_claiming_a_huge_array_is_refused_without_allocating(tmp_path):
    from lotterycli.errors import LotteryError
    from lotterycli.images import read_image

    huge, short = tmp_path / "huge.npy", tmp_path / "short.npy"
    for path, shape in ((huge, (100000, 100000, 3)), (short, (5000, 6000, 3))):  # 120 GB; 360 MB, no data
        with path.open("wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
    tracemalloc.start()
    try:
        with pytest.raises(LotteryError, match="100000x100000"):
            read_image(huge, allow_float=True)
        with pytest.raises(LotteryError, match="truncated"):
            read_image(short, allow_float=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, peak
    msg = run("restore", huge, "--task", "denoise", "--steps", 1).assert_one_line_error()
    assert str(huge) in msg and "100000x100000" in msg
    assert listing(tmp_path) == {"huge.npy", "short.npy"}
