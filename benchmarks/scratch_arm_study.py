"""What `schedule.arm_scratch_widths` does to kept .lottery files: same latents, a narrower ARM.

    python benchmarks/scratch_arm_study.py DIR [--widths 8] [--steps 600] [--lr 0.01]
        [--protocol benchmarks/results/full.json] [--threads 1] [--log FILE]

For each file of DIR (`<image>-lam=<lambda>.lottery`, as `python -m benchmarks --keep-files DIR`
writes them), an ARM of each width is fitted from scratch to the file's latents
(`compress.scratch_arm`), and the encoder's choice is made as `compress.quantize_networks` makes it:
every candidate ARM (the file's own, as its float values, and the new ones) gets its steps searched,
its cost includes the header bytes a non-preset architecture takes, and the cheapest goes in the
file. The file's own ARM keeps its exact integers, so a file whose ARM is kept is the file
re-coded as format v4. Only the ARM changes, so the pixels are the file's (checked).
Prints per file: v4 bytes, each candidate's bytes, the kept one; with `--protocol`, the BD-rates of
the lottery curve re-coded as v4 and with the choice. `--log FILE`: each file's line is appended
to FILE, and files already there are not fitted again (several runs, e.g. side by side on parts
of DIR or as a protocol run writes its files, then one with `--protocol` for the totals).
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script


def choose(data: bytes, widths: list[int], steps: int, lr: float) -> tuple[bytes, bytes, dict[int, int], float]:
    """(file re-coded as v4, the file with the encoder's ARM choice, bytes per candidate width, seconds)."""
    import torch

    from lotterycli.bitstream.container import architecture_bytes, decode_file, encode_file
    from lotterycli.codec.model import decode_payload, model_from_payload
    from lotterycli.compress import _search_steps, install_arm, scratch_arm

    payload = decode_file(data)
    v4 = encode_file(payload)
    model = model_from_payload(payload)
    start = time.perf_counter()
    candidates = [(model.arm, payload.modules["arm"])]
    for w in widths:
        candidates.append((scratch_arm(model, w, steps, lr, payload.seed), None))
    own = model.arm
    best, sizes = None, {}
    for arm, fixed in candidates:
        install_arm(model, arm)
        state = {k: v.detach().clone() for k, v in arm.state_dict().items()}
        # the ARM moves only the rate, so lambda and the distortion drop out: compare bits per pixel
        cost, q = _search_steps(model, "arm", state, None, 1.0, 0.0, 0.0, True)
        cost += 8 * architecture_bytes(model.arch) / model.n_pixels
        q = fixed if fixed is not None else q  # the file's own ARM keeps its integers
        candidate = replace(payload, architecture=model.arch, modules=dict(payload.modules, arm=q))
        sizes[arm.hidden] = len(encode_file(candidate))
        if best is None or cost < best[0]:
            best = (cost, candidate)
    install_arm(model, own)
    chosen = encode_file(best[1])
    if not torch.equal(decode_payload(decode_file(chosen)), decode_payload(payload)):
        raise SystemExit("the chosen file decodes to other pixels")
    return v4, chosen, sizes, time.perf_counter() - start


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--widths", default="8")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--protocol", type=Path, help="results JSON of the run that wrote the files")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log", type=Path, help="append each file's line here; skip files already in it")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    files = sorted(args.dir.glob("*-lam=*.lottery"))
    if not files:
        raise SystemExit(f"no <image>-lam=<lambda>.lottery files in {args.dir}")
    done = {}
    if args.log and args.log.exists():
        for line in args.log.read_text().splitlines():
            if ": v4 " in line and " kept " in line:
                done[line.split(":")[0]] = line
    sizes_v4, sizes_chosen, changes = {}, {}, []
    for f in files:
        image, setting = f.stem.split("-", 1)
        if f.name in done:
            line = done[f.name]
        else:
            v4, chosen, sizes, seconds = choose(f.read_bytes(), widths, args.steps, args.lr)
            cands = ", ".join(f"width {w}: {n} B" for w, n in sizes.items())
            line = (f"{f.name}: v4 {len(v4)} B; {cands}; kept {len(chosen)} B "
                    f"({100 * (len(chosen) / len(v4) - 1):+.2f} %), {seconds:.0f} s; same pixels")
            if args.log:
                with args.log.open("a") as log:
                    log.write(line + "\n")
        n_v4 = int(line.split(": v4 ")[1].split(" B")[0])
        n_kept = int(line.split(" kept ")[1].split(" B")[0])
        sizes_v4[(image, setting)], sizes_chosen[(image, setting)] = n_v4, n_kept
        changes.append(n_kept / n_v4 - 1)
        print(line, flush=True)
    print(f"{len(files)} files: bytes {100 * sum(changes) / len(changes):+.2f} % against v4 on average "
          f"({100 * min(changes):+.2f} to {100 * max(changes):+.2f} %)")
    if args.protocol:
        from benchmarks.recode_study import bd_lines

        for line in bd_lines(args.protocol, [("re-coded as v4", sizes_v4), ("with the ARM choice", sizes_chosen)]):
            print(line)

if __name__ == "__main__":
    main()
