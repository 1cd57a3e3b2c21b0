"""The package as a whole: its import graph, and a wheel installed into a fresh environment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import save_png, scene

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "lotterycli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: lotterycli modules it imports}, counting imports anywhere in the file (a lazy import
    inside a function is still a dependency)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for c in candidates:
                if c in modules and c != name:
                    deps.add(c)
        graph[name] = deps
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


# Each layer may import only the layers listed (and lotterycli.errors, files, heap: process-wide
# utilities that import nothing of the package); the data flows
# image -> operator -> fit -> quantize -> bitstream, with the model under all of them.
ALLOWED = {
    "lotterycli.model": {"lotterycli.model"},
    "lotterycli.bitstream": {"lotterycli.bitstream", "lotterycli.model"},
    "lotterycli.fitting": {"lotterycli.fitting", "lotterycli.model"},
    "lotterycli.compression": {"lotterycli.compression", "lotterycli.fitting", "lotterycli.model",
                               "lotterycli.bitstream", "lotterycli.config", "lotterycli.metrics"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_is_below_them(layer):
    allowed = ALLOWED[layer] | {"lotterycli.errors", "lotterycli.files", "lotterycli.heap", "lotterycli"}
    for module, deps in import_graph().items():
        if module == layer or module.startswith(layer + "."):
            for dep in deps:
                top = ".".join(dep.split(".")[:2])
                assert top in allowed, f"{module} imports {dep}"


def test_the_header_reader_and_the_cli_module_import_no_torch():
    code = ("import sys; import lotterycli.bitstream.header, lotterycli.cli, lotterycli.jobs; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """A wheel built from this checkout, installed into a fresh virtual environment whose other
    packages (torch, typer, ...) come from this one's site-packages (no download, and none of this
    checkout's own source: the editable install's path hooks are not loaded there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("lotterycli-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # the console script: pip --target does not write one, so make the one `pip install` would
    script = venv / "bin" / "lottery"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom lotterycli.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return venv


def test_a_wheel_installed_in_a_fresh_environment_runs_every_command(installed_wheel, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOTTERY_DEBUG")}
    env["OMP_NUM_THREADS"] = "1"
    lottery = str(installed_wheel / "bin" / "lottery")

    def run(*args: str) -> str:
        proc = subprocess.run([lottery, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    where = subprocess.run([str(installed_wheel / "bin" / "python"), "-c",
                            "import lotterycli, lotterycli.configs; print(lotterycli.__file__, lotterycli.configs.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where, where  # the installed copy, not this checkout
    save_png(tmp_path / "img.png", scene(24, 24))
    assert run("--version").startswith("lottery ")
    run("compress", "img.png", "--steps", "3", "-q")
    run("decompress", "img.lottery", "-o", "back.png", "-q")
    assert "bytes" in run("info", "img.lottery")
    run("degrade", "img.png", "--task", "denoise", "--sigma", "25", "-o", "noisy.png", "-q")
    run("restore", "noisy.png", "--task", "denoise", "--steps", "3", "--ensemble", "1", "-q")
    assert (tmp_path / "noisy.restored.png").exists() and (tmp_path / "noisy.restored.lottery").exists()
    assert np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "back.png")).shape == (24, 24, 3)
