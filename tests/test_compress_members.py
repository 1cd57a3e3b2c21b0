"""Images of one size compressed as member batches (`compression.member_batches`): each image gets
its own mask ratio, file and decoded check, and its result does not depend on its batch beyond
float noise."""

from __future__ import annotations

import pytest
import torch
from conftest import edges_scene, scene

from lotterycli.compression.decoder import decode_bytes
from lotterycli.compression.member_batches import compress_images
from lotterycli.config import load_task_config, with_changes


def _cfg(**overrides):
    cfg = load_task_config("compress", overrides={"steps": 24, "lambda": 4e-3, **overrides})
    return with_changes(cfg, arm_refit_steps=4, arm_scratch_steps=4, eval_every=4)


def _images():
    g = torch.Generator().manual_seed(5)
    noisy = (scene(16, 20) + 0.2 * torch.rand(3, 16, 20, generator=g)).clamp(0, 1)
    return [scene(16, 20), edges_scene(16, 20), noisy]


def test_each_image_gets_its_own_file_and_the_same_fit_alone_or_in_a_batch():
    torch.set_num_threads(1)
    cfg = _cfg()
    together = compress_images(_images(), cfg, device="cpu")
    alone = [compress_images([x], cfg, device="cpu")[0] for x in _images()]
    for a, b in zip(together, alone):
        assert torch.equal(decode_bytes(a.data), a.decoded)  # a real file, decoded
        assert a.n_bytes == len(a.data) and a.steps == 24
        assert a.mask_ratio == b.mask_ratio  # screened on the same numbers
        assert a.fit.best_loss == pytest.approx(b.fit.best_loss, rel=1e-4)
        assert abs(a.psnr - b.psnr) < 0.05 and abs(a.n_bytes - b.n_bytes) <= 0.03 * b.n_bytes
        assert a.decoded.shape == (3, 16, 20)
    assert len({r.data for r in together}) == 3


def test_mask_ratios_are_screened_per_image():
    """Each image goes on with the ratio whose screening cost was lowest for it; a ratio set
    without candidates is kept for every image."""
    torch.set_num_threads(1)
    cfg = _cfg()
    ratios = {cfg.mask_ratio, *cfg.compression.mask_ratio_candidates}
    assert len(ratios) > 1
    results = compress_images(_images(), cfg, device="cpu")
    assert all(r.mask_ratio in ratios for r in results)
    fixed = compress_images(_images()[:2], _cfg(mask_ratio=0.2), device="cpu")
    assert [r.mask_ratio for r in fixed] == [0.2, 0.2]


def test_images_of_one_call_share_their_size():
    with pytest.raises(ValueError, match="share their size"):
        compress_images([scene(16, 20), scene(20, 16)], _cfg(), device="cpu")
    assert compress_images([], _cfg(), device="cpu") == []


def test_api_compress_many_gives_a_file_per_image():
    from lotterycli import api

    torch.set_num_threads(1)
    results = api.compress_many(_images()[:2], preset="fast", steps=6, mask_ratio=0.3, device="cpu")
    assert len(results) == 2
    for r in results:
        assert torch.equal(api.decompress(r.data), r.decoded) and r.mask_ratio == 0.3

