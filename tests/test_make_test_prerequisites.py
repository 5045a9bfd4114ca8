"""`make test` says what it needs first, and stops at once with the install command when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from igw_tools.localbroker import free_port

ROOT = Path(__file__).resolve().parent.parent


def _machine_without_services(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has bash and apt-get (a stub that fails if run) but no Redis or Prometheus,
    and whose REDIS_URL names a closed port: a Debian machine where neither is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "timeout", "id"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    stub = bin_dir / "apt-get"
    stub.write_text("#!/bin/sh\necho 'apt-get must not run here' >&2\nexit 1\n")
    stub.chmod(0o755)
    return {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}",
        # Not root, as far as installing goes: only say what to run.
        "IGW_INSTALL_SERVICES": "0",
    }


def test_make_test_fails_at_once_with_the_install_command(tmp_path: Path) -> None:
    """Without Redis and Prometheus, `make test` stops within seconds, before any setup, naming the apt-get command."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    started = time.monotonic()
    result = subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), "test", "VENV=" + str(tmp_path / "no-venv")],
        env=_machine_without_services(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert took < 10, output
    assert output.index("make test needs Redis") < output.index("cannot start without")
    assert "sudo apt-get install -y redis-server prometheus" in output
    assert "sudo systemctl start redis-server" in output
    assert "apt-get must not run here" not in output
    assert not (tmp_path / "no-venv").exists(), "the venv was being built: the check did not come first"


@pytest.mark.redis
def test_ensure_services_passes_where_everything_runs() -> None:
    """With Redis answering and Prometheus installed (this machine, after the suite's own check), it exits 0."""
    environ = {**os.environ, "IGW_INSTALL_SERVICES": "0"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-services")],  # noqa: S607 - bash from the PATH, as make runs it
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout


def test_make_run_passes_args_to_igw_dev(tmp_path: Path) -> None:
    """`make run ARGS=...` hands the flags to igw dev (the "port in use" message tells you to use them)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [make, "--no-print-directory", "-n", "-C", str(ROOT), "run", "ARGS=--port 18080 --kafka-port 19092"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "/bin/igw dev --port 18080 --kafka-port 19092" in result.stdout
