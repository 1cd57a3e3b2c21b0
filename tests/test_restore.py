"""Zero-shot restoration: `lottery degrade`, `lottery restore`, the library API, combine.

Images are 32x32 and fits are short; the quality tests use the library API with a fixed seed
and ask for a clear margin over the baseline, not for a particular PSNR.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import edges_scene, png_pixels, run_inprocess, save_png, scene
from PIL import Image

from lotterycli.api import restore
from lotterycli.config import load_task_config, with_changes
from lotterycli.errors import LotteryError
from lotterycli.images import read_image
from lotterycli.metrics import psnr
from lotterycli.restoration.ensemble import blend_classical, combine, restore_image
from lotterycli.restoration.masks import read_mask
from lotterycli.restoration.operators import Denoise, Inpaint, SuperResolution
from lotterycli.restoration.resize import bicubic_downsample, upsample_bicubic
from lotterycli.restoration.side_by_side import default_workers

run = run_inprocess
QUICK = ("--preset", "fast", "--device", "cpu")


def listing(directory) -> set[str]:
    return {p.name for p in directory.iterdir()}


def with_restoration(cfg, **changes):
    """`cfg` (frozen) with some of its restoration settings changed."""
    return replace(cfg, restoration=replace(cfg.restoration, **changes))


@pytest.fixture
def clean(tmp_path):
    return save_png(tmp_path / "clean.png", scene(32, 32))


# -- degrade ------------------------------------------------------------------------------------
def test_degrade_denoise_png_and_float(clean, tmp_path):
    x = read_image(clean)
    res = run("degrade", clean, "--task", "denoise", "--sigma", 25, "--seed", 3, "-o", tmp_path / "noisy.png", "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["output"] == str(tmp_path / "noisy.png")
    res = run("degrade", clean, "--task", "denoise", "--sigma", 25, "--seed", 3, "-o", tmp_path / "noisy.png", "--float", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "noisy.npy").exists(), "--float writes a .npy beside the requested name"
    y = np.load(tmp_path / "noisy.npy")
    assert y.dtype == np.float32 and y.shape == (32, 32, 3)
    expected = Denoise(sigma=25 / 255).simulate(x, 3)
    assert np.array_equal(y, expected.permute(1, 2, 0).numpy())
    noise = y - x.permute(1, 2, 0).numpy()
    assert abs(noise.std() * 255 - 25) < 3
    assert y.min() < 0 or y.max() > 1, "the float observation is not clipped"
    png = png_pixels(tmp_path / "noisy.png")
    assert np.array_equal(png, np.floor(np.clip(y, 0, 1).astype(np.float64) * 255 + 0.5).astype(np.uint8))
    # another seed gives other noise
    run("degrade", clean, "--task", "denoise", "--sigma", 25, "--seed", 4, "-o", tmp_path / "other.npy", "--quiet")
    assert not np.array_equal(np.load(tmp_path / "other.npy"), y)


def test_degrade_sr_writes_low_resolution(clean, tmp_path):
    res = run("degrade", clean, "--task", "sr", "--scale", 2, "-o", tmp_path / "low.png", "--json")
    assert res.returncode == 0, res.stderr
    assert (res.json["width"], res.json["height"]) == (16, 16)
    low = png_pixels(tmp_path / "low.png")
    assert low.shape == (16, 16, 3)
    ref = bicubic_downsample(read_image(clean), 2).clamp(0, 1)
    assert np.abs(low.astype(float) / 255 - ref.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


def test_degrade_inpaint_writes_image_and_mask(clean, tmp_path):
    out = tmp_path / "holes.png"
    res = run("degrade", clean, "--task", "inpaint", "--missing-ratio", 0.5, "--seed", 1, "-o", out, "--json")
    assert res.returncode == 0, res.stderr
    mask_path = tmp_path / "holes.mask.png"
    assert res.json["mask"] == str(mask_path)
    assert listing(tmp_path) == {"clean.png", "holes.png", "holes.mask.png"}
    mask = read_mask(mask_path)
    assert mask.shape == (32, 32)
    assert int((~mask).sum()) == 512  # exactly round(0.5 * 32 * 32) missing
    img = png_pixels(out)
    assert (img[~mask.numpy()] == 0).all()
    assert np.array_equal(img[mask.numpy()], png_pixels(clean)[mask.numpy()])


@pytest.mark.parametrize(
    "args, words",
    [
        (["--task", "sr", "--scale", "5"], "scale"),
        (["--task", "sr"], "scale"),
        (["--task", "inpaint"], "--missing-ratio"),
    ],
)
def test_degrade_bad_options(clean, tmp_path, args, words):
    before = listing(tmp_path)
    msg = run("degrade", clean, *args, "-o", tmp_path / "out.png").assert_one_line_error()
    assert words in msg
    assert listing(tmp_path) == before


def test_degrade_sr_size_not_divisible(odd_png, tmp_path):
    before = listing(tmp_path)
    msg = run("degrade", odd_png, "--task", "sr", "--scale", 2, "-o", tmp_path / "low.png").assert_one_line_error()
    assert "divisible" in msg
    assert listing(tmp_path) == before


# -- restore through the CLI --------------------------------------------------------------------
@pytest.fixture
def noisy(clean, tmp_path):
    assert run("degrade", clean, "--task", "denoise", "--sigma", 25, "--seed", 7, "-o", tmp_path / "noisy.png", "--quiet").returncode == 0
    return tmp_path / "noisy.png"


def test_restore_cli_reference_ensemble_and_bitstream(clean, noisy, tmp_path):
    out = tmp_path / "restored.png"
    res = run("restore", noisy, "--task", "denoise", "--sigma", 25, "--steps", 40, "--ensemble", 2, "--seed", 1,
              "--reference", clean, "-o", out, "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    s = res.json
    assert s["output"] == str(out) and out.exists()
    assert (s["steps"], s["ensemble"], s["seed"], s["sigma_estimated"]) == (40, 2, 1, False)
    assert len(s["member_psnr"]) == 2 and len(s["member_ssim"]) == 2
    assert 0 < s["ssim"] <= 1
    restored = png_pixels(out)
    ref = png_pixels(clean)
    noisy_px = png_pixels(noisy)
    p_out = 10 * np.log10(255.0**2 / np.mean((restored.astype(float) - ref) ** 2))
    p_obs = 10 * np.log10(255.0**2 / np.mean((noisy_px.astype(float) - ref) ** 2))
    assert p_out == pytest.approx(s["psnr"], abs=0.1)  # the reported number is the written image's
    assert p_out > p_obs + 1.0, f"restoration {p_out:.2f} dB vs noisy {p_obs:.2f} dB"
    # the ensemble mean is at least as good as its weaker member
    assert s["psnr"] >= min(s["member_psnr"]) - 0.05
    # the best member's model is written as OUTPUT.lottery by default, and decompress reads it
    bitstream = tmp_path / "restored.lottery"
    assert s["bitstream"] == str(bitstream) and bitstream.exists()
    holds = s["bitstream_holds"]  # says what the file holds: one member's render, not the result
    assert "best member" in holds and "not the ensemble" in holds
    assert any(f"(seed {seed})" in holds for seed in s["member_seeds"])
    dec = run("decompress", bitstream, "-o", tmp_path / "member.png", "--json")
    assert dec.returncode == 0, dec.stderr
    member = png_pixels(tmp_path / "member.png")
    assert member.shape == (32, 32, 3)
    p_member = 10 * np.log10(255.0**2 / np.mean((member.astype(float) - ref) ** 2))
    assert p_member > p_obs, "the saved best member is a restoration too"


def test_restore_no_bitstream_writes_only_the_image(noisy, tmp_path):
    before = listing(tmp_path)
    res = run("restore", noisy, "--task", "denoise", "--sigma", 25, "--steps", 2, "--no-bitstream", "-o",
              tmp_path / "plain.png", "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    assert (res.json["bitstream"], res.json["bitstream_holds"]) == (None, None)
    assert listing(tmp_path) == before | {"plain.png"}
    # the result line names the .lottery file when there is one
    res = run("restore", noisy, "--task", "denoise", "--sigma", 25, "--steps", 2, "-o", tmp_path / "with.png", *QUICK)
    assert res.returncode == 0, res.stderr
    assert f"{tmp_path / 'with.lottery'} holds the best member's render" in res.stdout
    assert listing(tmp_path) == before | {"plain.png", "with.png", "with.lottery"}


def test_restore_inpaint_bitstream_decodes_to_the_image_size(tmp_path):
    """Inpainting members fit in their own frames (member_transforms); the best member's file says
    it holds a restoration member and decodes to a picture of the image's size."""
    clean = save_png(tmp_path / "wide.png", scene(24, 40))
    assert run("degrade", clean, "--task", "inpaint", "--missing-ratio", 0.3, "--seed", 2, "-o", tmp_path / "h.png",
               "--quiet").returncode == 0
    res = run("restore", tmp_path / "h.png", "--task", "inpaint", "--mask", tmp_path / "h.mask.png", "--steps", 3,
              "--ensemble", 2, "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    s = res.json
    bits = tmp_path / "h.restored.lottery"
    assert s["bitstream"] == str(bits) and bits.exists()
    assert "best member" in s["bitstream_holds"]
    info = run("info", bits, "--json").json
    assert info["content"] == "restoration member"
    assert (info["width"], info["height"]) == (40, 24) and info["frame"] in (0, 1)  # members 0 and 1: frames 0, 1
    assert "restoration member" in run("info", bits).stdout
    dec = run("decompress", bits, "-o", tmp_path / "member.png", "--json")
    assert dec.returncode == 0, dec.stderr
    assert (dec.json["width"], dec.json["height"]) == (40, 24)
    assert png_pixels(tmp_path / "member.png").shape == (24, 40, 3)


def test_restore_cli_estimates_sigma_and_reads_float(clean, tmp_path):
    run("degrade", clean, "--task", "denoise", "--sigma", 25, "--seed", 2, "-o", tmp_path / "obs.npy", "--quiet")
    res = run("restore", tmp_path / "obs.npy", "--task", "denoise", "--steps", 3, "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    s = res.json
    assert s["sigma_estimated"] is True
    assert 15 < s["sigma"] < 35
    assert s["output"] == str(tmp_path / "obs.restored.png")
    assert png_pixels(tmp_path / "obs.restored.png").shape == (32, 32, 3)
    # without --json the estimate is announced on stderr
    res = run("restore", tmp_path / "obs.npy", "--task", "denoise", "--steps", 3, "-o", tmp_path / "b.png", *QUICK)
    assert res.returncode == 0 and "estimated noise level" in res.stderr


def test_restore_cli_sr_and_inpaint_shapes(clean, tmp_path):
    run("degrade", clean, "--task", "sr", "--scale", 2, "-o", tmp_path / "low.png", "--quiet")
    res = run("restore", tmp_path / "low.png", "--task", "sr", "--scale", 2, "--steps", 3, "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    assert png_pixels(tmp_path / "low.restored.png").shape == (32, 32, 3)
    assert res.json["bitstream"] == str(tmp_path / "low.restored.lottery")  # the x2 render, written by default
    assert run("info", tmp_path / "low.restored.lottery", "--json").json["width"] == 32
    run("degrade", clean, "--task", "inpaint", "--missing-ratio", 0.3, "-o", tmp_path / "h.png", "--quiet")
    res = run("restore", tmp_path / "h.png", "--task", "inpaint", "--mask", tmp_path / "h.mask.png", "--steps", 3,
              "--reference", clean, "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    assert png_pixels(tmp_path / "h.restored.png").shape == (32, 32, 3)
    assert "psnr" in res.json and len(res.json["member_psnr"]) == 1
    # configs/inpaint.yaml mixes in the biharmonic fill: the JSON names both parts' PSNRs
    assert res.json["classical_blend"] > 0 and {"ensemble_psnr", "classical_psnr"} <= set(res.json)


def test_restore_sr_from_small_observation(tmp_path):
    # an 8x8 observation is fine for x2 super-resolution: the result is 16x16
    small = save_png(tmp_path / "small.png", scene(8, 8))
    res = run("restore", small, "--task", "sr", "--scale", 2, "--steps", 2, "--json", *QUICK)
    assert res.returncode == 0, res.stderr
    assert png_pixels(tmp_path / "small.restored.png").shape == (16, 16, 3)
    # but a result below 16x16 is refused clearly
    tiny = save_png(tmp_path / "tiny.png", scene(6, 6))
    msg = run("restore", tiny, "--task", "sr", "--scale", 2, "--steps", 2, *QUICK).assert_one_line_error()
    assert "16" in msg


@pytest.mark.parametrize("case", ["scale5", "noscale", "inpaint_nomask", "mask_missing", "mask_size",
                                  "scale_for_denoise", "mask_for_denoise", "reference_size"])
def test_restore_bad_inputs(case, clean, noisy, tmp_path):
    Image.fromarray(np.full((20, 24), 255, np.uint8), mode="L").save(tmp_path / "wrong.mask.png")
    save_png(tmp_path / "ref16.png", scene(16, 16))
    args = {
        "scale5": ["--task", "sr", "--scale", "5"],
        "noscale": ["--task", "sr"],
        "inpaint_nomask": ["--task", "inpaint"],
        "mask_missing": ["--task", "inpaint", "--mask", tmp_path / "absent.png"],
        "mask_size": ["--task", "inpaint", "--mask", tmp_path / "wrong.mask.png"],
        "scale_for_denoise": ["--task", "denoise", "--scale", "2"],
        "mask_for_denoise": ["--task", "denoise", "--mask", tmp_path / "wrong.mask.png"],
        "reference_size": ["--task", "denoise", "--sigma", "25", "--reference", tmp_path / "ref16.png"],
    }[case]
    before = listing(tmp_path)
    res = run("restore", noisy, *args, "--steps", 2, *QUICK)
    msg = res.assert_one_line_error()
    assert res.returncode == 1
    assert listing(tmp_path) == before, "no output may be left behind"
    words = {"scale5": "scale", "noscale": "--scale", "inpaint_nomask": "--mask", "mask_missing": "absent.png",
             "mask_size": "mask", "scale_for_denoise": "--scale", "mask_for_denoise": "--mask",
             "reference_size": "reference"}[case]
    assert words in msg


# -- combine ------------------------------------------------------------------------------------
def test_combine_mean_and_median():
    a = torch.tensor([[0.0, 1.0], [0.2, 0.9]])
    b = torch.tensor([[0.5, 0.0], [0.4, 0.1]])
    c = torch.tensor([[1.0, 0.3], [0.3, 0.5]])
    assert torch.allclose(combine([a, b, c], "mean"), (a + b + c) / 3)
    assert torch.equal(combine([a, b, c], "median"), torch.tensor([[0.5, 0.3], [0.3, 0.5]]))
    assert torch.equal(combine([a]), a)
    # median is robust to one outlier member, the mean is not
    outlier = torch.full_like(a, 100.0)
    assert float(combine([a, a, outlier], "median").max()) <= 1.0
    assert float(combine([a, a, outlier], "mean").max()) > 30


def test_restore_workers_option_is_checked(noisy, tmp_path):
    before = listing(tmp_path)
    res = run("restore", noisy, "--task", "denoise", "--workers", "0", "--steps", 2, *QUICK)
    assert "--workers" in res.assert_one_line_error()
    assert res.returncode == 2 and listing(tmp_path) == before


def test_concurrent_members_equal_sequential_single_thread():
    """Members fitted in threads compute what they compute one after another on one thread."""
    x = scene(20, 20)
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, 3)
    cfg = load_task_config("denoise", overrides={"steps": 12, "ensemble": 3})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = restore_image(y, op, cfg, lam=3e-3, device="cpu", workers=1)
        torch.set_num_threads(2)
        three = restore_image(y, op, cfg, lam=3e-3, device="cpu", workers=3)
        assert torch.get_num_threads() == 2  # restored after the concurrent fits
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one.members, three.members):
        assert torch.equal(a, b)
    assert torch.equal(one.image, three.image)
    assert not torch.equal(one.members[0], one.members[1])  # members really differ (own seeds)
    assert default_workers(4, torch.device("cpu")) == min(4, torch.get_num_threads())
    assert default_workers(1, torch.device("cpu")) == 1


def test_screening_keeps_the_candidates_with_the_lowest_loss():
    """--candidates C > K: C seeds run the first steps, the K with the lowest loss go on."""
    x = scene(20, 20)
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, 3)
    cfg = load_task_config("denoise", overrides={"steps": 20, "ensemble": 2, "candidates": 4, "seed": 5})
    cfg = with_restoration(cfg, screen_fraction=0.25)  # 5 screening steps
    res = restore_image(y, op, cfg, lam=3e-3, device="cpu", workers=2)
    assert len(res.members) == len(res.fits) == 2 and len(res.screen_losses) == 4
    ranked = sorted(range(4), key=lambda k: res.screen_losses[k])
    assert res.seeds == sorted(5 + k for k in ranked[:2])
    assert res.dropped_seeds == sorted(5 + k for k in ranked[2:])
    assert all(f.steps == 20 for f in res.fits)
    # deterministic, and a kept member is exactly the member an unscreened run with its seed makes
    again = restore_image(y, op, cfg, lam=3e-3, device="cpu", workers=1)
    assert again.seeds == res.seeds and torch.equal(again.image, res.image)
    solo_cfg = load_task_config("denoise", overrides={"steps": 20, "ensemble": 1, "seed": res.seeds[0]})
    solo = restore_image(y, op, solo_cfg, lam=3e-3, device="cpu", workers=1)
    assert torch.equal(solo.members[0], res.members[0])


def test_restore_cli_candidates_option(noisy, tmp_path):
    res = run("restore", noisy, "--task", "denoise", "--sigma", 25, "--steps", 10, "--ensemble", 1,
              "--candidates", 3, "--json", "-o", tmp_path / "out.png", *QUICK)
    assert res.returncode == 0, res.stderr
    assert len(res.json["member_seeds"]) == 1 and len(res.json["screened_out_seeds"]) == 2
    assert sorted(res.json["member_seeds"] + res.json["screened_out_seeds"]) == [0, 1, 2]
    bad = run("restore", noisy, "--task", "denoise", "--candidates", -1, "--steps", 2, *QUICK)
    assert "--candidates" in bad.assert_one_line_error() and bad.returncode == 2


def test_dihedral_frames_invert_and_differ():
    from lotterycli.model.frames import dihedral

    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    seen = set()
    for k in range(8):
        t = dihedral(x, k)
        assert tuple(t.shape) == ((2, 5, 3) if k & 4 else (2, 3, 5))
        assert torch.equal(dihedral(t, k, inverse=True), x)
        seen.add((tuple(t.shape), tuple(t.flatten().tolist())))
    assert len(seen) == 8  # eight different frames
    assert torch.equal(dihedral(x, 1), x.flip(-1)) and torch.equal(dihedral(x, 4), x.transpose(-1, -2))


def test_member_transforms_fit_each_candidate_in_its_frame():
    """member_transforms: candidate k fits in frame k mod 8 on a (possibly transposed) model and its
    render is mapped back; members then differ from the untransformed ones (except frame 0). Asking
    for a bitstream changes no member: the file records the best member's frame, and the decoder
    undoes it (the decoded picture has the image's own size and orientation)."""
    from lotterycli.bitstream.container import encode_file
    from lotterycli.compression.decoder import decode_bytes

    x = scene(12, 20)
    op = Inpaint.random(12, 20, 0.5, seed=2)
    y = op.simulate(x, 0)
    cfg = load_task_config("inpaint", overrides={"steps": 8, "ensemble": 1, "candidates": 0, "seed": 4})
    cfg = with_restoration(cfg, ensemble=6, member_transforms=False)  # frames 0-5, 4 and 5 transposed (20x12 models)
    plain = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1)
    cfg = with_restoration(cfg, member_transforms=True)
    framed = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1)
    assert framed.payload is None  # no bitstream asked for
    assert all(tuple(m.shape) == (3, 12, 20) for m in framed.members)
    assert torch.equal(framed.members[0], plain.members[0])
    assert all(not torch.equal(a, b) for a, b in zip(framed.members[1:], plain.members[1:]))
    assert all(torch.equal(m[:, op.mask], y[:, op.mask]) for m in framed.members)
    assert psnr(framed.image, x) > psnr(y, x) + 5
    # members keep their frames when a .lottery file is asked for; the file says which
    with_file = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1, bitstream=True)
    assert all(torch.equal(a, b) for a, b in zip(with_file.members, framed.members))
    assert torch.equal(with_file.image, framed.image)
    payload = with_file.payload
    assert payload is not None and payload.restoration
    assert payload.frame == with_file.best_member % 8 and payload.seed == with_file.seeds[with_file.best_member]
    assert (payload.height, payload.width) == ((20, 12) if payload.frame & 4 else (12, 20))
    decoded = decode_bytes(encode_file(payload))  # (with these seeds the best is member 4: a transposed frame)
    assert decoded.dtype == torch.uint8 and tuple(decoded.shape) == (3, 12, 20)
    # the decoded render is the best member's picture (observed pixels aside, the member is that render)
    member = with_file.members[with_file.best_member]
    assert psnr(decoded.float() / 255, member) > 20


def test_inpainting_members_synthesise_only_the_observed_pixels_for_the_same_result(monkeypatch):
    """Inpainting's loss reads the observed pixels alone, so members render only those on most
    steps (`Operator.loss_pixels`); in every frame (transposed ones on a non-square image too) the
    members equal those of whole-image fits."""
    x = scene(12, 20)
    op = Inpaint.random(12, 20, 0.5, seed=3)
    y = op.simulate(x, 0)
    assert torch.equal(op.loss_pixels(y), op.mask)
    assert bool(Denoise(0.1).loss_pixels(y).all()) and SuperResolution(2, 0.0).loss_pixels(y) is None
    cfg = load_task_config("inpaint", overrides={"steps": 12, "ensemble": 1, "candidates": 0, "seed": 1})
    cfg = with_changes(with_restoration(cfg, ensemble=8, member_transforms=True), average_every=2)
    partial = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1)
    monkeypatch.setattr(Inpaint, "loss_pixels", lambda self, y: None)
    whole = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1)
    for a, b in zip(partial.members, whole.members):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    assert [f.best_step for f in partial.fits] == [f.best_step for f in whole.fits]


def test_denoising_members_as_pixel_losses_equal_plain_fits_and_can_draw_pixels(monkeypatch):
    """Denoising's loss goes to the fit as a PixelMSE over every pixel: with pixel_fraction 1 the
    members equal plain fits; with 0.5 each step renders a random half (different members, still
    far better than the noisy input)."""
    x = scene(16, 20)
    op = Denoise(0.1)
    y = op.simulate(x, 0)
    cfg = load_task_config("denoise", overrides={"steps": 40, "ensemble": 2})
    as_pixels = restore_image(y, op, with_changes(cfg, pixel_fraction=1.0), lam=5e-3, device="cpu", workers=1)
    drawn = restore_image(y, op, with_changes(cfg, pixel_fraction=0.5), lam=5e-3, device="cpu", workers=1)
    monkeypatch.setattr(Denoise, "loss_pixels", lambda self, y: None)
    plain = restore_image(y, op, with_changes(cfg, pixel_fraction=1.0), lam=5e-3, device="cpu", workers=1)
    for a, b in zip(as_pixels.members, plain.members):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(drawn.members, plain.members))
    assert psnr(drawn.image, x) > psnr(y, x) + 3


def test_classical_blend_mixes_the_biharmonic_fill_into_the_result():
    """classical_blend w: result = (1 - w) * ensemble + w * biharmonic fill; known pixels stay exact;
    operators without a classical estimate give the ensemble unchanged."""
    x = scene(20, 20)
    op = Inpaint.random(20, 20, 0.5, seed=2)
    y = op.simulate(x, 0)
    cfg = load_task_config("inpaint", overrides={"steps": 8, "ensemble": 2, "candidates": 0})
    cfg = with_restoration(cfg, classical_blend=0.3)
    res = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1)
    fill = op.classical_estimate(y)
    assert torch.equal(res.classical_image, fill) and torch.equal(fill[:, op.mask], y[:, op.mask])
    assert torch.allclose(res.image, (0.7 * res.ensemble_image + 0.3 * fill).clamp(0, 1), atol=1e-6)
    assert torch.equal(res.image[:, op.mask], y[:, op.mask])
    cfg = with_restoration(cfg, classical_blend=0.0)
    plain = restore_image(y, op, cfg, lam=6e-4, device="cpu", workers=1)
    assert plain.classical_image is None and torch.equal(plain.image, plain.ensemble_image)
    assert torch.equal(plain.ensemble_image, res.ensemble_image)  # the blend does not change the fits
    assert Denoise(0.1).classical_estimate(y) is None
    assert torch.equal(blend_classical(x, None, 0.5), x)


# -- quality through the library API -------------------------------------------------------------
def test_denoise_improves_psnr():
    x = scene(32, 32)
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, 1)
    res = restore(y, op, preset="fast", steps=60, seed=0, device="cpu")
    assert res.image.shape == x.shape and len(res.members) == 1
    assert float(res.image.min()) >= 0 and float(res.image.max()) <= 1
    base = psnr(y.clamp(0, 1), x)
    assert psnr(res.image, x) > base + 2.0, (psnr(res.image, x), base)


def test_inpaint_half_missing_improves_psnr():
    x = scene(32, 32)
    op = Inpaint.random(32, 32, 0.5, seed=0)
    y = op.simulate(x, 0)
    res = restore(y, op, preset="fast", steps=60, seed=0, device="cpu")
    m = op.mask
    # better than the observation, and than filling the holes with the observed mean colour
    mean_fill = torch.where(m, y, y[:, m].mean(dim=1)[:, None, None])
    out = psnr(res.image, x)
    assert out > psnr(y, x) + 10
    assert out > psnr(mean_fill, x) + 3
    # noiseless mask (configs/inpaint.yaml keep_observed): the known pixels are kept exactly,
    # in the combined image and in each member
    assert torch.equal(res.image[:, m], y[:, m])
    assert all(torch.equal(member[:, m], y[:, m]) for member in res.members)


def test_sr_x2_beats_bicubic():
    x = edges_scene(32, 32)
    op = SuperResolution(scale=2)
    y = op.simulate(x, 0)
    res = restore(y, op, preset="fast", steps=150, seed=0, device="cpu")
    assert res.image.shape == (3, 32, 32)
    bicubic = upsample_bicubic(y, 2).clamp(0, 1)
    assert psnr(res.image, x) > psnr(bicubic, x) + 0.5, (psnr(res.image, x), psnr(bicubic, x))
    # consistent with the observation
    assert psnr(op.forward(res.image), y) > 28


def test_restore_api_rejects_mismatched_observation():
    op = Inpaint.random(32, 32, 0.5, seed=0)
    with pytest.raises(LotteryError, match="mask"):
        restore(torch.zeros(3, 24, 24), op, preset="fast", steps=1, device="cpu")


def test_kodak_crop_denoise(kodak):
    """On a real photo crop (Kodak; skipped when the set is absent) denoising still helps."""
    files = sorted(kodak.glob("*.png"))
    x_full = read_image(files[len(files) // 2])
    assert x_full.shape[0] == 3 and sorted(x_full.shape[1:]) == [512, 768]
    h, w = x_full.shape[1:]
    x = x_full[:, h // 2 - 16 : h // 2 + 16, w // 2 - 16 : w // 2 + 16].contiguous()
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, 0)
    res = restore(y, op, preset="fast", steps=60, seed=0, device="cpu")
    assert psnr(res.image, x) > psnr(y.clamp(0, 1), x) + 1.0


def test_a_saved_member_can_have_its_arm_refitted_without_changing_its_render():
    """schedule.arm_refit_steps also applies to the member a restoration saves as a .lottery file
    (off in the restoration configs): its latents and render stay, only the ARM may change."""
    from lotterycli.bitstream.container import decode_file, encode_file
    from lotterycli.model.exact_render import render_payload

    x = scene(16, 20)
    op = Denoise(0.1)
    y = op.simulate(x, 0)
    cfg = load_task_config("denoise", overrides={"steps": 8, "ensemble": 1, "candidates": 0, "seed": 2})
    assert cfg.schedule.arm_refit_steps == 0
    plain = restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=1, bitstream=True)
    refit = restore_image(y, op, with_changes(cfg, arm_refit_steps=8), lam=5e-3, device="cpu", workers=1,
                          bitstream=True)
    a, b = plain.payload, refit.payload
    assert (a.frame, a.restoration) == (0, True)
    assert all(torch.equal(p, q) for p, q in zip(a.latents, b.latents))
    assert torch.equal(render_payload(decode_file(encode_file(a))), render_payload(decode_file(encode_file(b))))
    assert torch.equal(plain.image, refit.image)
    arm_a, arm_b = a.modules["arm"], b.modules["arm"]
    assert any(not torch.equal(arm_a.tensors[k], arm_b.tensors[k]) for k in arm_a.tensors) or \
        arm_a.tensor_shifts() != arm_b.tensor_shifts()  # the refit did run


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_batched_members_give_the_members_of_separate_fits(task):
    """`member_batch: always` (what a GPU does by default) fits the candidates as member batches,
    one per frame shape, screens them the same way and gives the same members as fitting them one
    by one, up to float order; the bitstream is the best member's, as usual."""
    x = scene(12, 20)
    if task == "inpaint":
        op = Inpaint.random(12, 20, 0.5, seed=2)
        overrides = {"steps": 12, "ensemble": 1, "candidates": 0, "seed": 4}
    else:
        op = SuperResolution(2, 0.02)
        overrides = {"steps": 12, "ensemble": 1, "candidates": 0, "seed": 4}
    y = op.simulate(x, 0)
    cfg = load_task_config(task, overrides=overrides)
    # every pixel each step (the batched loop has no pixel draws), frames 0-5 (4 and 5 transposed)
    cfg = with_changes(with_restoration(cfg, ensemble=3, candidates=6, member_transforms=True,
                                        screen_fraction=0.5), pixel_fraction=1.0, average_every=2)
    torch.set_num_threads(1)
    single = restore_image(y, op, with_restoration(cfg, member_batch="never"), lam=6e-4, device="cpu", workers=1,
                           bitstream=True)
    batched = restore_image(y, op, with_restoration(cfg, member_batch="always"), lam=6e-4, device="cpu",
                            bitstream=True)
    assert batched.seeds == single.seeds and batched.dropped_seeds == single.dropped_seeds
    assert batched.screen_losses == pytest.approx(single.screen_losses, rel=1e-4)
    assert batched.best_member == single.best_member
    for a, b in zip(batched.members, single.members):
        assert tuple(a.shape) == (3, 12, 20) and torch.allclose(a, b, atol=1e-3)
    assert batched.payload is not None and batched.payload.frame == single.payload.frame
    assert batched.payload.seed == single.payload.seed


def test_member_batch_setting():
    from lotterycli.fitting.device import use_member_batch

    cpu, cuda = "cpu", "cuda"
    assert not use_member_batch("auto", cpu, 4, False) and use_member_batch("auto", cuda, 4, False)
    assert use_member_batch("always", cpu, 4, False) and not use_member_batch("never", cuda, 4, False)
    assert not use_member_batch("always", cpu, 1, False)  # one member: nothing to batch
    assert not use_member_batch("always", cuda, 4, True)  # checkpoints: members one by one


def test_restore_command_fits_a_member_batch_when_configured(tmp_path, monkeypatch):
    """`member_batch: always` in a --config file reaches the fit through the command line (which
    always hands the restorer a checkpoint it may resume from), except while checkpoints are saved."""
    import lotterycli.restoration.member_batches as member_batches

    made = []
    real = member_batches.BatchedFitter
    monkeypatch.setattr(member_batches, "BatchedFitter", lambda *a, **k: made.append(1) or real(*a, **k))
    noisy = save_png(tmp_path / "noisy.png", Denoise(sigma=25 / 255).simulate(scene(16, 16), 1).clamp(0, 1))
    config = tmp_path / "batch.yaml"
    config.write_text("member_batch: always\n")
    common = ("restore", noisy, "--task", "denoise", "--sigma", 25, "--steps", 4, "--ensemble", 2,
              "--config", config, "--device", "cpu", "-q")
    res = run(*common, "-o", tmp_path / "a.png")
    assert res.returncode == 0, res.stderr
    assert len(made) == 1  # one batch of both members
    res = run(*common, "-o", tmp_path / "b.png", "--checkpoint-every", 0)
    assert res.returncode == 0, res.stderr
    assert len(made) == 1  # saving checkpoints: members one by one


def test_member_batches_split_to_what_the_device_holds(monkeypatch):
    """With room for two members per batch, six candidates fit as three batches and give the same
    members as one batch of six (each member's numbers do not depend on its batch)."""
    import lotterycli.restoration.member_batches as member_batches

    x = scene(12, 12)
    op = Denoise(sigma=0.1)
    y = op.simulate(x, 0)
    cfg = load_task_config("denoise", overrides={"steps": 6, "ensemble": 3, "candidates": 6, "seed": 2})
    cfg = with_restoration(cfg, member_batch="always", screen_fraction=0.5)
    made = []
    real = member_batches.BatchedFitter
    monkeypatch.setattr(member_batches, "BatchedFitter", lambda batch, *a, **k: made.append(batch.n_members) or real(batch, *a, **k))
    assert member_batches.batch_capacity(torch.device("meta"), 10**5, 10**5) > 64  # no limit off a CPU or GPU
    whole = restore_image(y, op, cfg, lam=5e-3, device="cpu")
    monkeypatch.setattr(member_batches, "batch_capacity", lambda device, height, width: 2)
    split = restore_image(y, op, cfg, lam=5e-3, device="cpu")
    assert made == [6, 2, 2, 2]
    assert split.seeds == whole.seeds
    for a, b in zip(split.members, whole.members):
        assert torch.allclose(a, b, atol=1e-4)


def test_screened_out_candidates_report_dropped_in_both_ways_of_fitting():
    """Each candidate's progress ends with "dropped" at the screening step when it is screened
    out, and at the last step when it is kept, batched or not."""
    x = scene(12, 12)
    op = Denoise(sigma=0.1)
    y = op.simulate(x, 0)
    cfg = load_task_config("denoise", overrides={"steps": 8, "ensemble": 2, "candidates": 4, "seed": 3})
    cfg = with_changes(cfg, pixel_fraction=1.0)  # as the batched loop: every pixel each step
    ends = {}
    for way in ("never", "always"):
        seen: dict[int, list] = {}

        def on_member(k, count, seen=seen):
            seen[k] = []
            return seen[k].append

        result = restore_image(y, op, with_restoration(cfg, member_batch=way, screen_fraction=0.5), lam=5e-3,
                               device="cpu", workers=1, on_member=on_member)
        ends[way] = {k: (infos[-1].stage, infos[-1].step) for k, infos in seen.items()}
        for seed in result.dropped_seeds:
            assert ends[way][seed - 3] == ("dropped", 4)
        for seed in result.seeds:
            assert ends[way][seed - 3] == ("hard", 8)
    assert ends["never"] == ends["always"]
