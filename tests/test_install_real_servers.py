"""devtools/install_real_servers.sh, which both quick-start commands run first: once the servers
are installed it must not touch apt again (each run of ./dialog-local would otherwise spend
half a minute in apt-get update and install)."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "devtools", "install_real_servers.sh")


def checked_paths():
    with open(SCRIPT, encoding="utf-8") as handle:
        text = handle.read()
    block = re.search(r"binaries=\((.*?)\)", text, re.S).group(1)
    return block.split()


def test_installed_servers_are_not_installed_again(tmp_path):
    paths = checked_paths()
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        pytest.skip("not installed here: %s" % ", ".join(missing))
    calls = tmp_path / "apt-calls"
    for tool in ("apt-get", "dpkg"):
        fake = tmp_path / tool
        fake.write_text("#!/bin/sh\necho \"$0 $*\" >> %s\nexit 0\n" % calls)
        fake.chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (tmp_path, os.environ.get("PATH", "")))
    result = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stderr
    assert not calls.exists(), calls.read_text()
