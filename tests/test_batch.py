"""`lottery batch` and resumable fits: inputs and output names, the manifest's skip / redo rules, a
batch or a single fit killed (SIGKILL) and run again, failures that stay local, a Ray cluster.

Tiny images (16-32 px) and a few steps; a compression costs ~2 s here, mostly its quantization
search, so the compressions are few and the reference outputs are made once per module. Rules of
thumb for the killed runs: the reference is run in this process with one thread, the killed run in
a subprocess with one thread per fit, and the run that finishes the work in this process again.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LOTTERY, edges_scene, png_pixels, run_inprocess, save_png, scene

from lotterycli import api
from lotterycli.fitting import checkpoint as checkpoint_module

run = run_inprocess
FIT = ("--preset", "fast", "--steps", "4", "--device", "cpu")
ONE = ("--threads", "1")
RESTORE = ("--task", "denoise", "--sigma", "10", "--preset", "fast", "--steps", "3", "--ensemble", "1",
           "--device", "cpu")
NAMES = ("a", "b", "c")


def make_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / "a.png", scene(32, 32))
    save_png(folder / "b.png", edges_scene(24, 24))
    save_png(folder / "c.png", scene(20, 28))
    return folder


def manifest(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]


def finished(outdir: Path) -> list[dict]:
    return [row for row in manifest(outdir) if row["status"] != "started"]


def leftovers(outdir: Path) -> list[str]:
    """Temporary files and checkpoints: none may remain after a batch that ended."""
    return sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*") if p.name.endswith((".tmp", ".ckpt")))


def lottery_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    env.pop("LOTTERY_DEBUG", None)
    return env


def start_lottery(*args) -> subprocess.Popen:
    cmd = [str(LOTTERY)] if LOTTERY.exists() else [sys.executable, "-c", "from lotterycli.cli import main; main()"]
    return subprocess.Popen(cmd + [str(a) for a in args], env=lottery_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the moment to stop it: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the moment to stop the run")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("batch") / "images")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> dict[str, bytes]:
    """name -> .lottery bytes of an uninterrupted batch (this process, one thread)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    r = run("batch", "compress", images, "-o", out, *FIT, *ONE, "--jobs", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    return {name: (out / f"{name}.lottery").read_bytes() for name in NAMES}


@pytest.fixture(scope="module")
def lottery_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lot") / "one.lottery"
    path.write_bytes(api.compress(scene(24, 24), preset="fast", steps=3, device="cpu").data)
    return path


# -- inputs and names -----------------------------------------------------------------------------------
def test_folder_inputs_sorted_mirrored_and_recursive(tmp_path, lottery_file):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("b.lottery", "a.lottery", "sub/c.lottery", ".hidden.lottery"):
        shutil.copy(lottery_file, src / name)
    (src / "notes.txt").write_text("not an input\n")
    out = tmp_path / "out"
    r = run("batch", "decompress", src, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["outputs"] for row in rows] == [["a.png"], ["b.png"]]  # sorted, no subfolder, no hidden file
    assert all(row["status"] == "done" and row["input_sha256"] and row["config_sha256"] for row in rows)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "manifest.jsonl"]
    decoded = api.decompress(lottery_file.read_bytes()).permute(1, 2, 0).numpy()
    assert (png_pixels(out / "a.png") == decoded).all()
    # --recursive adds the subfolder's file; the two done already are skipped
    rows = api.batch("decompress", [src], out, recursive=True)
    assert [(row["outputs"], row["status"]) for row in rows] == [
        (["a.png"], "skipped"), (["b.png"], "skipped"), (["sub/c.png"], "done")]
    assert (png_pixels(out / "sub" / "c.png") == decoded).all()


def test_a_list_of_paths_on_standard_input(tmp_path, lottery_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "x").mkdir(parents=True)
    for name in ("photos/a.lottery", "photos/x/a.lottery"):
        shutil.copy(lottery_file, tmp_path / name)
    monkeypatch.setattr(sys, "stdin", io.StringIO("photos/a.lottery\n\n./photos/x/a.lottery\n"))
    r = run("batch", "decompress", "-", "-o", "out", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out/photos/a.png").is_file() and (tmp_path / "out/photos/x/a.png").is_file()
    assert [row["input"] for row in finished(tmp_path / "out")] == ["photos/a.lottery", "photos/x/a.lottery"]


def test_two_inputs_for_one_output_are_refused_before_any_work(tmp_path, lottery_file):
    src = tmp_path / "in"
    src.mkdir()
    save_png(src / "x.png", scene(16, 16))
    shutil.copy(src / "x.png", src / "x.jpg")  # -> x.lottery too
    r = run("batch", "compress", src, "-o", tmp_path / "out", *FIT)
    line = r.assert_one_line_error()
    assert "x.lottery" in line and "x.jpg" in line and "x.png" in line
    assert not (tmp_path / "out").exists()
    r = run("batch", "decompress", lottery_file, tmp_path / "nothing.lottery", "-o", tmp_path / "out")
    assert "nothing.lottery: no such file" in r.assert_one_line_error()


def test_a_file_no_batch_wrote_is_not_replaced_without_force(tmp_path, lottery_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "one.png").write_bytes(b"someone's picture")
    r = run("batch", "decompress", lottery_file, "-o", out)
    assert "one.png: already exists and was not written by a batch" in r.assert_one_line_error()
    assert (out / "one.png").read_bytes() == b"someone's picture"
    assert run("batch", "decompress", lottery_file, "-o", out, "--force", "-q").returncode == 0
    assert png_pixels(out / "one.png").shape == (24, 24, 3)


def test_threads_per_fit_follow_the_jobs_asked_for_not_the_inputs_left(tmp_path, lottery_file):
    """A fit's bytes can depend on its thread count: a resumed batch with one input left must give
    it the threads an uninterrupted run would have."""
    from lotterycli import batch

    spec = batch.BatchSpec("decompress", [str(lottery_file)], str(tmp_path / "out"), batch.DecompressOptions(), jobs=2)
    p = batch.plan(spec)
    batch.size_workers(p)
    assert (p.jobs, p.settings.threads) == (1, max(1, batch.planning.cores() // 2))


def test_fewer_fits_at_once_when_the_memory_holds_fewer_of_the_largest_input(tmp_path, monkeypatch):
    """Workers starting together would each see the same free memory: the batch runs only as many
    CPU fits at once as it holds of the largest input (an SR output counts scale^2 pixels), says
    so, and keeps the threads per fit (the same files)."""
    from lotterycli import batch
    from lotterycli.fitting import memory
    from lotterycli.jobs import CompressOptions, RestoreOptions

    src = make_images(tmp_path / "in")
    monkeypatch.delenv("LOTTERY_NO_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.fit_bytes(32, 32, 2))
    spec = batch.BatchSpec("compress", [str(src)], str(tmp_path / "out"), CompressOptions(device="cpu"), jobs=3,
                           threads=1)
    p = batch.plan(spec)
    batch.size_workers(p)
    assert (p.jobs, p.settings.threads) == (2, 1)
    assert p.notes == [f"2 fit(s) at once instead of 3: the largest input's fit (32x32) needs about "
                       f"{memory.size_text(memory.fit_bytes(32, 32))} and {memory.size_text(memory.fit_bytes(32, 32, 2))} "
                       "is free"]
    sr = batch.BatchSpec("restore", [str(src)], str(tmp_path / "sr"), RestoreOptions(task="sr", scale=2, device="cpu"),
                         jobs=3, threads=1)
    p = batch.plan(sr)
    batch.size_workers(p)
    assert p.jobs == 1 and "(64x64)" in p.notes[0]  # 32x32 observed, 64x64 restored
    monkeypatch.setenv("LOTTERY_NO_MEMORY_CHECK", "1")
    p = batch.plan(spec)
    batch.size_workers(p)
    assert (p.jobs, p.notes) == (3, [])
    monkeypatch.delenv("LOTTERY_NO_MEMORY_CHECK")
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.fit_bytes(32, 32, 1))
    res = run("batch", "compress", src, "-o", tmp_path / "cli", "--jobs", "2", *FIT, *ONE)
    assert res.returncode == 0, res.stderr
    assert "1 fit(s) at once instead of 2" in res.stderr  # and the batch ran in this process


def test_image_size_reads_headers_only(tmp_path):
    import numpy as np

    from lotterycli.errors import LotteryError
    from lotterycli.images import image_size

    assert image_size(save_png(tmp_path / "a.png", scene(20, 28))) == (20, 28)
    np.save(tmp_path / "b.npy", np.zeros((3, 12, 9), dtype=np.float32))
    assert image_size(tmp_path / "b.npy") == (12, 9)
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(LotteryError, match="c.png"):
        image_size(tmp_path / "c.png")


def test_batch_compress_fits_images_of_one_size_as_member_batches(tmp_path):
    """With `member_batch: always` (auto: on a GPU) the images of one size are fitted together:
    their files are those `compress_images` gives for the same images (here and in a worker
    process), an image of another size is compressed alone, and a re-run skips them all."""
    import torch

    from lotterycli.compression.member_batches import compress_images
    from lotterycli.config import load_task_config
    from lotterycli.images import read_image

    src = tmp_path / "in"
    src.mkdir()
    g = torch.Generator().manual_seed(2)
    for name in ("a", "b", "c"):
        save_png(src / f"{name}.png", (scene(20, 24) + 0.3 * torch.rand(3, 20, 24, generator=g)).clamp(0, 1))
    save_png(src / "d.png", edges_scene(24, 24))
    whole = (src / "a.png").read_bytes()
    (src / "e.png").write_bytes(whole[: len(whole) // 2])  # the same size in its header, cut short: fails alone
    config = tmp_path / "mb.yaml"
    config.write_text("member_batch: always\n")
    res = run("batch", "compress", src, "-o", tmp_path / "out", "--config", config, *FIT, *ONE, "-q")
    assert res.returncode == 1 and res.stderr.count("error:") == 1 and "e.png" in res.stderr
    rows = {Path(r["input"]).name: r for r in finished(tmp_path / "out")}
    assert [rows[f"{n}.png"].get("batched_with") for n in "abcd"] == [3, 3, 3, None]
    assert rows["e.png"]["status"] == "failed" and not (tmp_path / "out" / "e.lottery").exists()
    (src / "e.png").unlink()
    cfg = load_task_config("compress", preset="fast", config_file=str(config), overrides={"steps": 4})
    torch.set_num_threads(1)
    expected = compress_images([read_image(src / f"{n}.png") for n in "abc"], cfg, device="cpu")
    for n, result in zip("abc", expected):
        assert (tmp_path / "out" / f"{n}.lottery").read_bytes() == result.data
    res = run("batch", "compress", src, "-o", tmp_path / "out", "--config", config, *FIT, *ONE)
    assert res.returncode == 0 and "4 input(s) already done" in res.stderr
    res = run("batch", "compress", src, "-o", tmp_path / "two", "--config", config, *FIT, *ONE, "--jobs", "2", "-q")
    assert res.returncode == 0, res.stderr
    for n in "abcd":
        assert (tmp_path / "two" / f"{n}.lottery").read_bytes() == (tmp_path / "out" / f"{n}.lottery").read_bytes()


# -- skip and redo ----------------------------------------------------------------------------------------
def test_rerun_skips_done_inputs_and_redoes_changed_inputs_and_configs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    save_png(src / "a.png", scene(24, 24))
    save_png(src / "b.png", edges_scene(24, 24))
    out = tmp_path / "out"

    def batch(*extra) -> dict[str, str]:
        r = run("batch", "restore", src, "-o", out, *RESTORE, "--no-bitstream", *ONE, "--json", *extra)
        assert r.returncode == 0, r.stderr
        return {json.loads(line)["input"]: json.loads(line)["status"] for line in r.stdout.splitlines()}

    assert batch() == {str(src / "a.png"): "done", str(src / "b.png"): "done"}
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    lines = len(manifest(out))
    assert batch() == {}  # both skipped: nothing ran, nothing was written
    assert len(manifest(out)) == lines and stamp == {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    save_png(src / "b.png", edges_scene(24, 24).flip(2))  # the input changed
    assert batch() == {str(src / "b.png"): "done"}
    assert batch("--steps", "4") == {str(src / "a.png"): "done", str(src / "b.png"): "done"}  # the config changed
    assert batch("--steps", "4") == {}
    (out / "a.restored.png").unlink()  # an output went missing
    assert batch("--steps", "4") == {str(src / "a.png"): "done"}
    assert len(batch("--steps", "4", "--force")) == 2
    assert leftovers(out) == []


def test_a_corrupt_image_in_the_middle_fails_alone(tmp_path, images, reference):
    src = tmp_path / "in"
    shutil.copytree(images, src)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "out"
    r = run("batch", "compress", src, "-o", out, *FIT, *ONE)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {src / 'b.png'}: not a readable image")
    assert "batch compress: 2 done, 0 skipped, 1 failed" in r.stderr
    assert [(row["input"], row["status"]) for row in finished(out)] == [
        (str(src / "a.png"), "done"), (str(src / "b.png"), "failed"), (str(src / "c.png"), "done")]
    assert not (out / "b.lottery").exists()
    assert all((out / f"{n}.lottery").read_bytes() == reference[n] for n in ("a", "c"))
    r = run("batch", "compress", src, "-o", out, *FIT, *ONE, "--quiet")  # the failed one is tried again
    assert r.returncode == 1 and [row["status"] for row in finished(out)][-1:] == ["failed"]


# -- killed batches and fits --------------------------------------------------------------------------------
def test_a_batch_stopped_or_killed_mid_run_ends_as_an_uninterrupted_one(tmp_path, images, reference):
    out = tmp_path / "out"
    common = ("batch", "compress", images, "-o", out, *FIT, *ONE, "--checkpoint-every", "0", "--quiet")
    args = (*common, "--jobs", "2")
    # SIGTERM once the first input is done: a clean stop, workers and temporary files gone. One
    # worker here, so that the third input is still to do however fast the second one runs
    # (with two, all three could be done before the signal lands, leaving nothing to kill below).
    proc = start_lottery(*common, "--jobs", "1")
    wait_for(lambda: (out / "manifest.jsonl").exists() and any(r["status"] == "done" for r in manifest(out)), proc)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "run the same command again" in err
    assert gone(workers) and not [p for p in out.rglob("*.tmp")]
    # SIGKILL of the driver as soon as the next run's first job has started: its workers die with it
    lines = len(manifest(out))
    proc = start_lottery(*args)
    workers: list[int] = []

    def started_with_workers() -> bool:
        # both in one poll: a test process starved of CPU for a moment could otherwise look for
        # the workers after a fast run had already finished its few jobs and ended
        workers[:] = children(proc.pid) if len(manifest(out)) > lines else []
        return bool(workers)

    wait_for(started_with_workers, proc)
    proc.kill()
    proc.communicate()
    assert gone(workers)
    (out / ".a.lottery.0badc0de.tmp").write_bytes(b"half a file")  # what a kill during a write leaves
    with open(out / "manifest.jsonl", "a") as fh:
        fh.write('{"status": "done", "input": "torn')  # and a kill during an append
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert {n: (out / f"{n}.lottery").read_bytes() for n in NAMES} == reference
    assert leftovers(out) == []
    done = [row for row in finished(out) if row["status"] == "done"]
    assert sorted(row["outputs"][0] for row in done) == [f"{n}.lottery" for n in NAMES]


def _checkpoint_steps(path: Path) -> list[int]:
    import torch

    parts = torch.load(path, weights_only=True)["parts"]
    return [part["step"] for name, part in parts.items() if isinstance(part, dict) and "step" in part]


def test_a_compression_killed_after_a_checkpoint_resumes_to_the_same_file(tmp_path):
    img = save_png(tmp_path / "img.png", scene(32, 32))
    # a lambda at which the mask ratio is screened first (the resume then skips the screening)
    args = ("compress", img, "--preset", "fast", "--steps", "60", "--lambda", "0.016", "--device", "cpu")
    assert run(*args, "-o", tmp_path / "plain.lottery", "-q").returncode == 0
    out = tmp_path / "img.lottery"
    ckpt = tmp_path / "img.lottery.ckpt"
    proc = start_lottery(*args, "-o", out, "--checkpoint-every", "0", "-q")
    wait_for(ckpt.exists, proc)
    time.sleep(0.2)
    proc.kill()
    proc.communicate()
    assert not out.exists() and ckpt.exists()
    (step,) = _checkpoint_steps(ckpt)
    assert 0 < step < 60  # killed mid-fit
    r = run(*args, "-o", out, "--checkpoint-every", "0")
    assert r.returncode == 0, r.stderr
    assert f"resuming the fit at step {step} of 60" in r.stderr
    assert out.read_bytes() == (tmp_path / "plain.lottery").read_bytes()
    assert leftovers(tmp_path) == []


def test_a_restoration_killed_after_a_checkpoint_resumes_to_the_same_files(tmp_path):
    noisy = save_png(tmp_path / "noisy.png", scene(24, 24))
    args = ("restore", noisy, "--task", "denoise", "--sigma", "10", "--preset", "fast", "--steps", "80",
            "--ensemble", "1", "--candidates", "2", "--device", "cpu")
    assert run(*args, "-o", tmp_path / "plain.png", "-q").returncode == 0
    out = tmp_path / "noisy.restored.png"
    ckpt = tmp_path / "noisy.restored.png.ckpt"
    proc = start_lottery(*args, "--checkpoint-every", "0", "-q")
    wait_for(ckpt.exists, proc)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    assert not out.exists() and ckpt.exists()
    steps = _checkpoint_steps(ckpt)
    assert steps and 0 < min(steps) < 80  # killed mid-fit
    r = run(*args, "--checkpoint-every", "0")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert out.read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert (tmp_path / "noisy.restored.lottery").read_bytes() == (tmp_path / "plain.lottery").read_bytes()
    assert leftovers(tmp_path) == []


class Killed(BaseException):
    """A process death, simulated right after a checkpoint's n-th save."""


RESUMABLE = dict(task="denoise", sigma=10.0, preset="fast", steps=12, ensemble=2, candidates=3, workers=2,
                 device="cpu")


@pytest.fixture(scope="module")
def restored(tmp_path_factory) -> tuple[Path, bytes, bytes]:
    """An observation and its uninterrupted restoration (image, .lottery) under RESUMABLE."""
    from lotterycli.jobs import RestoreOptions, restore_file

    folder = tmp_path_factory.mktemp("restored")
    noisy = save_png(folder / "noisy.png", edges_scene(24, 24))
    restore_file(noisy, folder / "plain.png", RestoreOptions(**RESUMABLE))
    return noisy, (folder / "plain.png").read_bytes(), (folder / "plain.lottery").read_bytes()


# 27 saves in all: screening 3 candidates, screened (2 members going on), one member done, both done
@pytest.mark.parametrize("saves", [2, 9, 18, 26])
def test_a_restoration_resumes_from_any_of_its_checkpoints(tmp_path, monkeypatch, restored, saves):
    from lotterycli.jobs import RestoreOptions, restore_file

    noisy, plain_png, plain_lottery = restored
    opts = RESUMABLE
    save = checkpoint_module.Checkpoint.save

    def save_then_die(self, only_if_due: bool = False) -> None:
        save(self, only_if_due)
        if self.saves >= saves:
            raise Killed()

    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        restore_file(noisy, tmp_path / "r.png", RestoreOptions(**opts, checkpoint_every=0))
    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save)
    notes = []
    restore_file(noisy, tmp_path / "r.png", RestoreOptions(**opts, checkpoint_every=0), notify=notes.append)
    assert any("resuming" in n for n in notes)
    assert (tmp_path / "r.png").read_bytes() == plain_png
    assert (tmp_path / "r.lottery").read_bytes() == plain_lottery
    assert leftovers(tmp_path) == []


def test_a_checkpoint_of_another_config_or_input_is_refused(tmp_path, monkeypatch):
    noisy = save_png(tmp_path / "noisy.png", scene(24, 24))
    args = ("restore", noisy, *RESTORE, "--no-bitstream")
    save = checkpoint_module.Checkpoint.save

    def save_then_die(self, only_if_due: bool = False) -> None:
        save(self, only_if_due)
        raise Killed()

    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        from lotterycli.jobs import RestoreOptions, restore_file

        restore_file(noisy, None, RestoreOptions(task="denoise", sigma=10.0, preset="fast", steps=3, ensemble=1,
                                                 device="cpu", bitstream=False, checkpoint_every=0))
    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save)
    ckpt = tmp_path / "noisy.restored.png.ckpt"
    assert ckpt.exists()
    line = run(*args[:-1], "--steps", "4", "--no-bitstream").assert_one_line_error()
    assert line == (f"error: {ckpt}: is the checkpoint of another config; not used "
                    "(delete it, or use --force, to start this fit over)")
    save_png(noisy, scene(24, 24).flip(1))
    assert "checkpoint of another input; not used" in run(*args).assert_one_line_error()
    assert run(*args, "--force", "-q").returncode == 0 and not ckpt.exists()
    ckpt.write_bytes(b"not a checkpoint")
    assert "is not a readable checkpoint" in run(*args, "--force").stderr or not ckpt.exists()


# -- Ray -------------------------------------------------------------------------------------------------------------
def test_ray_round_trip_on_a_local_cluster_gives_the_same_bytes(tmp_path, images, reference):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'lotterycli[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             configure_logging=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        out = tmp_path / "out"
        r = run("batch", "compress", images, "-o", out, *FIT, *ONE, "--ray", "auto", "--json")
        assert r.returncode == 0, r.stderr
        assert {n: (out / f"{n}.lottery").read_bytes() for n in NAMES} == reference
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert sorted(row["outputs"][0] for row in rows) == [f"{n}.lottery" for n in NAMES]
        assert all(row["status"] == "done" and row["input"].startswith(str(images)) for row in rows)
        assert leftovers(out) == []
        rows = api.batch("compress", [images], out, ray="auto", threads=1, preset="fast", steps=4, device="cpu")
        assert [row["status"] for row in rows] == ["skipped"] * 3  # the driver's manifest, resumable
    finally:
        ray.shutdown()


def test_ray_missing_is_one_clear_line(tmp_path, lottery_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    r = run("batch", "decompress", lottery_file, "-o", tmp_path / "out", "--ray")
    assert r.assert_one_line_error() == "error: --ray needs the ray package: pip install 'lotterycli[ray]'"
