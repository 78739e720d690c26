"""`scripts/test` runs the infrastructure checks or fails: a `scripts/check-infra` that lost its run
bit (a checkout on a filesystem without modes, a commit through a tool that drops them) must not
turn into a green run that silently skipped them.

The script is run as written, in a scratch copy of `scripts/`, with `cargo`, `moto_server` and
`curl` replaced by stubs on PATH, so only its own control flow is under test.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from gdfwd_infra import REPO

STUBS = {
    "cargo": "#!/bin/sh\nexit 0\n",
    "moto_server": "#!/bin/sh\nexec sleep 30\n",
    "curl": "#!/bin/sh\nexit 0\n",
}


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _run_scripts_test(tmp_path: Path, check_infra_executable: bool) -> subprocess.CompletedProcess:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy2(REPO / "scripts" / "test", scripts / "test")
    marker = tmp_path / "check-infra-ran"
    check = scripts / "check-infra"
    check.write_text(f"#!/bin/sh\ntouch {marker}\n")
    if check_infra_executable:
        check.chmod(0o755)
    else:
        check.chmod(0o644)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STUBS.items():
        _executable(bin_dir / name, text)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [str(scripts / "test")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_check_infra_without_its_run_bit_fails_the_run(tmp_path: Path) -> None:
    out = _run_scripts_test(tmp_path, check_infra_executable=False)
    assert out.returncode != 0, out.stderr
    assert "scripts/check-infra is missing or not executable" in out.stderr
    assert not (tmp_path / "check-infra-ran").exists()


def test_an_executable_check_infra_is_run(tmp_path: Path) -> None:
    out = _run_scripts_test(tmp_path, check_infra_executable=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "check-infra-ran").exists()


def test_the_scripts_are_committed_executable() -> None:
    for name in ("scripts/test", "scripts/check-infra"):
        assert os.access(REPO / name, os.X_OK), f"{name} is not executable"
        if (REPO / ".git").exists():
            mode = subprocess.run(
                ["git", "ls-files", "-s", name], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.split(" ", 1)[0]
            assert mode == "100755", f"{name} is recorded as {mode!r} in git"
