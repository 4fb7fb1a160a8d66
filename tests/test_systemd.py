"""The unit files as systemd sees them: `systemd-analyze verify` and `security --offline` (exposure gate)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parents[1] / "systemd"
pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")

# `--threshold` is on a 0..100 scale: ten times the printed exposure level (0.0 best .. 10.0 worst). The unit
# scores 1.3 and the GPU variant, which must see devices, 1.8; the gates leave a little room, no more.
THRESHOLD = 20
THRESHOLD_GPU = 25
# Options added after systemd 249 (JetPack 6 ships 249): none of them may appear.
NEWER_THAN_249 = {"ExitType", "RestrictFileSystems", "ExtensionDirectories", "ReloadSignal", "OpenFile",
                  "LogFilterPatterns", "ImportCredential", "MemoryKSM", "MemoryPressureWatch", "RestartMode",
                  "RestartSteps", "RestartMaxDelaySec", "RootEphemeral", "NFTSet", "SetLoginEnvironment",
                  "CoredumpReceive", "SurviveFinalKillSignal", "PrivatePIDs", "MountImagePolicy",
                  "ExtensionImagePolicy", "DelegateSubgroup", "StateDirectoryQuota", "PrivateBPF"}
NEWER_VALUES = {("Type", "notify-reload"), ("PrivateUsers", "self"), ("ProtectHostname", "private"),
                ("ProtectControlGroups", "private"), ("PrivateTmp", "disconnected")}


def _unit_copy(tmp_path: Path, *, gpu: bool) -> Path:
    """The unit as installed (plus the drop-in appended, which systemd merges the same way), with
    ExecStart pointing at a binary that exists here."""
    text = (UNIT_DIR / "edge-mpc.service").read_text()
    if gpu:
        text += "\n" + (UNIT_DIR / "edge-mpc-gpu.conf").read_text()
    true = shutil.which("true") or "/bin/true"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={true}", text, flags=re.M)
    out = tmp_path / "edge-mpc.service"
    out.write_text(text)
    return out


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_verify_clean(tmp_path, gpu):
    proc = _run("verify", str(_unit_copy(tmp_path, gpu=gpu)))
    # Any warning (unknown key, bad value, missing binary) counts as a failure, not just the exit code.
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@pytest.mark.parametrize("gpu, threshold", [(False, THRESHOLD), (True, THRESHOLD_GPU)], ids=["cpu", "gpu"])
def test_security_exposure(tmp_path, gpu, threshold):
    proc = _run("security", "--offline=yes", f"--threshold={threshold}", "--no-pager",
                str(_unit_copy(tmp_path, gpu=gpu)))
    summary = [line for line in proc.stdout.splitlines() if "Overall exposure" in line]
    print(summary[0] if summary else proc.stdout[-300:])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


def test_required_settings_and_no_options_newer_than_249():
    unit = (UNIT_DIR / "edge-mpc.service").read_text()
    gpu = (UNIT_DIR / "edge-mpc-gpu.conf").read_text()
    for needed in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes",
                   "StateDirectory=edge-mpc", "CacheDirectory=edge-mpc", "CUPY_CACHE_DIR=%C/edge-mpc/cupy",
                   "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                   "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service",
                   "PrivateDevices=yes"):
        assert needed in unit, needed
    for needed in ("PrivateDevices=no", "SupplementaryGroups=video", "DeviceAllow=/dev/nvhost-ctrl-gpu",
                   "DeviceAllow=/dev/nvmap"):
        assert needed in gpu, needed
    for text in (unit, gpu):
        for line in text.splitlines():
            if "=" not in line or line.lstrip().startswith("#"):
                continue
            key, _, value = line.partition("=")
            assert key.strip() not in NEWER_THAN_249, line
            assert (key.strip(), value.strip()) not in NEWER_VALUES, line


def test_installer_stages_unit_dropin_and_config(tmp_path):
    """deploy/install.sh --root: the staged tree has the unit, the GPU drop-in and a loadable config."""
    from controller.daemon.settings import load_config

    script = UNIT_DIR.parent / "deploy" / "install.sh"
    proc = subprocess.run(["bash", str(script), "--root", str(tmp_path), "--no-venv", "--gpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "etc/systemd/system/edge-mpc.service"
    assert unit.read_text() == (UNIT_DIR / "edge-mpc.service").read_text()
    assert (tmp_path / "etc/systemd/system/edge-mpc.service.d/gpu.conf").exists()
    cfg = load_config(tmp_path / "etc/edge-mpc/site.yaml", environ={})
    assert [s.site for s in cfg.sites] == ["office-20"] and cfg.sites[0].model_path.exists()
    assert not (tmp_path / "etc/edge-mpc/site.yaml").stat().st_mode & 0o022  # not writable by others
    again = subprocess.run(["bash", str(script), "--root", str(tmp_path), "--no-venv"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0  # re-running keeps the operator's config
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
