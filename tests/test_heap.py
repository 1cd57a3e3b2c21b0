"""Importing lotterycli keeps freed memory in the C heap (lotterycli.heap): a loop that allocates
and frees large buffers, as a fitting step does, stops faulting in fresh pages every round."""

import os
import subprocess
import sys

import pytest

PROBE = """
import resource
import lotterycli
import numpy as np

def round_trip():  # eight 10 MB buffers at once, freed together, as a step's tensors are
    buffers = [np.ones(10 << 18, dtype=np.float32) for _ in range(8)]
    del buffers

for _ in range(3):
    round_trip()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(**env: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, **env})
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the heap is tuned only under glibc (Linux)")
def test_freed_buffers_are_reused_without_new_page_faults():
    untuned = _faults(GLIBC_TUNABLES="")  # a user's own malloc setting: lotterycli leaves malloc alone
    if untuned < 1000:
        pytest.skip(f"this C library's malloc keeps freed memory anyway ({untuned} faults in 10 rounds)")
    tuned = _faults()
    assert tuned < untuned / 10, (tuned, untuned)


def test_a_users_malloc_settings_are_left_alone(monkeypatch):
    from lotterycli import heap

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert heap.keep_freed_memory() is False


def test_the_growth_limit_releases_free_pages_only_when_the_memory_grew(monkeypatch):
    """A fit checks after every step: the free pages go back to the OS when the resident
    memory has grown by more than a quarter (256 MB at least) since the first check, not before;
    the next check then sets the limit again, from what that step needed."""
    from lotterycli import heap

    rss, released = [1 << 30], []
    monkeypatch.setattr(heap, "resident_bytes", lambda: rss[0])

    def release():
        released.append(rss[0])
        rss[0] = 1100 << 20  # what the trim gave back

    monkeypatch.setattr(heap, "release_free_memory", release)
    limit = heap.GrowthLimit()
    limit.check()  # the first check sets the limit: 1 GB + 256 MB
    for grown in (1100 << 20, 1270 << 20):
        rss[0] = grown
        limit.check()
    assert released == []
    rss[0] = 1300 << 20
    limit.check()
    assert released == [1300 << 20]
    rss[0] = 1200 << 20  # the next step's own peak, faulted in anew: it sets the new limit
    limit.check()
    assert released == [1300 << 20] and limit.limit == (1200 << 20) + (300 << 20)
    rss[0] = 1450 << 20
    limit.check()
    assert released == [1300 << 20]


@pytest.mark.parametrize("rate_thread", [False, True])
def test_every_fit_step_checks_the_growth_limit(rate_thread):
    """Not only fits in bands: a whole 256x256 compression's heap grew too (the pixels drawn
    differ in number every step, so its tensors keep changing size; the resident memory of a
    5,000-step fit reached 2.7 GB), so every step of every fit checks the limit."""
    import torch
    from conftest import arch, scene, schedule

    from lotterycli.fitting.loop import Fitter
    from lotterycli.fitting.losses import fit_distortion
    from lotterycli.model.lottery_model import LotteryModel

    torch.manual_seed(0)
    model = LotteryModel(24, 20, arch(), seed=1, mask_ratio=0.3)
    fitter = Fitter(model, fit_distortion(scene(24, 20), 0.5), 0.002, schedule(steps=7), rate_thread=rate_thread)
    assert not fitter.banded

    class Counting:
        checks = 0

        def check(self) -> None:
            self.checks += 1

    fitter.heap_limit = Counting()
    fitter.advance()
    assert fitter.heap_limit.checks == 7
