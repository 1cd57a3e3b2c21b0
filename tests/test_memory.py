"""The memory check before a fit: a fit that cannot fit in the free memory stops at once with a
one-line error, and restoration members side by side are limited to what the memory holds."""

from __future__ import annotations

import pytest
import torch
from conftest import run_inprocess, save_png, scene

from lotterycli.config import load_task_config
from lotterycli.errors import LotteryError
from lotterycli.fitting import memory
from lotterycli.restoration.ensemble import restore_image
from lotterycli.restoration.operators import Denoise

CPU = torch.device("cpu")


def room_for(monkeypatch, fits: int, height: int, width: int) -> None:
    """Make the free memory hold exactly `fits` fits of a height x width image."""
    monkeypatch.delenv("LOTTERY_NO_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.fit_bytes(height, width, fits))


def test_the_estimate_grows_with_pixels_and_members():
    assert memory.fit_bytes(20, 50, 2) - memory.fit_bytes(20, 50, 1) == 1000 * memory.FIT_BYTES_PER_PIXEL
    # a 12-megapixel photograph: tens of GB fitted whole (a loss that needs the whole render),
    # a few fitted in bands of rows
    assert memory.fit_bytes(3000, 4000, banded=False) > 40e9
    assert 4e9 < memory.fit_bytes(3000, 4000) < 12e9
    # up to the banding threshold, whole either way
    assert memory.fit_bytes(1080, 1920) == memory.fit_bytes(1080, 1920, banded=False)


def test_free_memory_is_read_on_linux():
    available = memory.available_bytes()
    if available is None:
        pytest.skip("no /proc/meminfo on this system")
    assert 0 < available < 1 << 50


def test_a_fit_too_large_for_the_free_memory_is_refused(monkeypatch):
    room_for(monkeypatch, 1, 100, 100)
    memory.check_fit_memory(100, 100, CPU)  # fits exactly
    with pytest.raises(LotteryError, match=r"fitting a 101x100 image needs about .* of memory .* available"):
        memory.check_fit_memory(100, 101, CPU)
    memory.check_fit_memory(10**4, 10**4, torch.device("meta"))  # only CPU fits are checked
    monkeypatch.setenv("LOTTERY_NO_MEMORY_CHECK", "1")
    memory.check_fit_memory(100, 101, CPU)  # the escape hatch


def test_members_side_by_side_are_limited_to_the_free_memory(monkeypatch):
    room_for(monkeypatch, 3, 50, 40)
    assert memory.members_at_once(50, 40, CPU, 8) == 3
    assert memory.members_at_once(50, 40, CPU, 2) == 2
    assert memory.members_at_once(50, 40, torch.device("meta"), 8) == 8


def test_compress_command_refuses_an_image_the_memory_cannot_fit(tmp_path, monkeypatch):
    image = save_png(tmp_path / "big.png", scene(32, 48))
    room_for(monkeypatch, 1, 16, 16)
    res = run_inprocess("compress", image, "--steps", 2, "--device", "cpu")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(image) in lines[0] and "48x32 image needs about" in lines[0]
    assert not (tmp_path / "big.lottery").exists()


def test_a_restoration_fits_one_member_at_a_time_when_memory_holds_one(monkeypatch):
    """Two members asked side by side, memory for one: they run one after the other, with the
    result of a one-worker run."""
    x = scene(12, 16)
    op = Denoise(sigma=0.1)
    y = op.simulate(x, 0)
    cfg = load_task_config("denoise", overrides={"steps": 6, "ensemble": 2, "candidates": 0, "seed": 1})
    torch.set_num_threads(1)
    alone = restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=1)
    room_for(monkeypatch, 1, 12, 16)
    limited = restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=2)
    assert torch.equal(limited.image, alone.image)
    room_for(monkeypatch, 0, 12, 16)
    with pytest.raises(LotteryError, match="16x12 image needs about"):
        restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=2)


def test_a_large_image_is_budgeted_as_fitted_in_bands(monkeypatch):
    """A 12-megapixel fit under a per-pixel loss is fitted in bands: the memory that holds it in
    bands is far from enough for the same fit whole (super-resolution's loss needs the whole render)."""
    monkeypatch.delenv("LOTTERY_NO_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.fit_bytes(3000, 4000))
    memory.check_fit_memory(3000, 4000, CPU)
    with pytest.raises(LotteryError, match="4000x3000 image needs about"):
        memory.check_fit_memory(3000, 4000, CPU, banded=False)
    assert memory.members_at_once(3000, 4000, CPU, 4) == 1
