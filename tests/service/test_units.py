"""The systemd units and launchd agent: shipped, verified, and installed per user."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from kamictl import _units
from tests.conftest import REPO, run_kamictl, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SYSTEMD_DIR = REPO / "systemd"


def _install_systemd_analyze() -> str:
    """systemd-analyze, installed with apt-get (Debian's `systemd` package) if missing."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if not shutil.which("apt-get"):
        return "systemd-analyze is not installed and there is no apt-get to install it with"
    if os.geteuid() != 0:
        return "systemd-analyze is not installed; `apt-get install systemd` needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "systemd"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    found = shutil.which("systemd-analyze")
    if found:
        return found
    return f"`apt-get install systemd` failed: {(done.stderr or done.stdout).strip()[-500:]}"


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    result = _install_systemd_analyze()
    if not result.startswith("/"):
        pytest.skip(f"cannot verify the units: {result}")
    return result


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    # systemd-analyze --user resolves %t and RuntimeDirectory= from XDG_RUNTIME_DIR.
    path = short_tempdir("xdg")
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def verify(analyze: str, runtime: Path, *units: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    done = subprocess.run(
        [analyze, "--user", "verify", *map(str, units)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # Warnings (unknown keys, bad values) go to stderr without failing: they count too.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_shipped_files_are_the_generic_templates() -> None:
    shipped = {p.name: p.read_bytes() for p in SYSTEMD_DIR.iterdir()}
    assert shipped == _units.generic_files(), (
        "systemd/ is out of date: regenerate it with `python -m kamictl._units systemd`"
    )


def test_systemd_analyze_accepts_the_shipped_units(systemd_analyze: str, runtime_dir: Path) -> None:
    verify(
        systemd_analyze, runtime_dir, SYSTEMD_DIR / "kamid.service", SYSTEMD_DIR / "kamid.socket"
    )


def test_systemd_analyze_catches_a_broken_unit(
    systemd_analyze: str, runtime_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "kamid.service"
    text = (SYSTEMD_DIR / "kamid.service").read_text()
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))
    with pytest.raises(AssertionError, match="notifyy"):
        verify(systemd_analyze, runtime_dir, broken)


def test_the_shipped_plist_is_a_launchd_agent() -> None:
    agent = plistlib.loads((SYSTEMD_DIR / "dev.kami.kamid.plist").read_bytes())
    assert agent["Label"] == "dev.kami.kamid"
    assert agent["ProgramArguments"][-1] == "--foreground"
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["RunAtLoad"] is True


def test_install_service_writes_systemd_units_for_this_user(
    kami_home: Path, systemd_analyze: str, runtime_dir: Path
) -> None:
    dest = kami_home / "units"
    done = run_kamictl(kami_home, "daemon", "install-service", "--systemd", "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    assert "systemctl --user enable --now kamid.socket" in done.stdout
    assert "systemctl --user reload kamid" in done.stdout
    service = (dest / "kamid.service").read_text()
    assert f"ExecStart={sys.executable} -m kamid --foreground" in service
    assert f"Environment=KAMI_HOME={kami_home}" in service
    assert f"ReadWritePaths={kami_home}" in service
    socket = (dest / "kamid.socket").read_text()
    assert f"ListenStream={kami_home}/run/kamid.sock" in socket
    verify(systemd_analyze, runtime_dir, dest / "kamid.service", dest / "kamid.socket")


def test_install_service_without_kami_home_uses_the_xdg_directories(tmp_path: Path) -> None:
    home = short_tempdir("h")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAMI_", "XDG_"))}
        env.update(HOME=str(home), XDG_RUNTIME_DIR="/run/user/4242")
        done = subprocess.run(
            [sys.executable, "-m", "kamictl", "daemon", "install-service", "--systemd"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        service = (home / ".config/systemd/user/kamid.service").read_text()
        writable = f"{home}/.local/share/kami {home}/.cache/kami {home}/.local/state/kami"
        assert f"ReadWritePaths={writable}" in service
        assert "KAMI_HOME" not in service
        socket = (home / ".config/systemd/user/kamid.socket").read_text()
        assert "ListenStream=/run/user/4242/kami/kamid.sock" in socket
        # systemd refuses to start when a ReadWritePaths= directory is missing.
        assert all((home / d).is_dir() for d in (".local/share/kami", ".cache/kami"))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_install_service_writes_a_launchd_agent(kami_home: Path) -> None:
    dest = kami_home / "agents"
    done = run_kamictl(kami_home, "daemon", "install-service", "--launchd", "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    assert "launchctl bootstrap gui/$(id -u)" in done.stdout
    agent = plistlib.loads((dest / "dev.kami.kamid.plist").read_bytes())
    assert agent["ProgramArguments"] == [sys.executable, "-m", "kamid", "--foreground"]
    assert agent["EnvironmentVariables"] == {"KAMI_HOME": str(kami_home)}
    assert agent["StandardErrorPath"] == str(kami_home / "logs" / "kamid.stderr")


def test_install_service_keeps_a_file_the_operator_changed(kami_home: Path) -> None:
    dest = kami_home / "units"
    args = ("daemon", "install-service", "--systemd", "--dest", str(dest))
    assert run_kamictl(kami_home, *args).returncode == 0
    again = run_kamictl(kami_home, *args)  # identical: fine
    assert again.returncode == 0, again.stderr
    (dest / "kamid.service").write_text("# mine\n")
    refused = run_kamictl(kami_home, *args)
    assert refused.returncode == 2
    assert "already exist with other content" in refused.stderr
    assert "--force" in refused.stderr
    assert (dest / "kamid.service").read_text() == "# mine\n"
    assert run_kamictl(kami_home, *args, "--force").returncode == 0
    assert (dest / "kamid.service").read_text().startswith("# kamid as a systemd user service")
