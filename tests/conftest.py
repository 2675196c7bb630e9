import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra):
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(*args, cwd=None, timeout=300, env=None):
    """Run `python -m workbench.run ARGS` in a subprocess; return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "workbench.run", *map(str, args)],
                          cwd=cwd or REPO, env=cli_env(**(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def start_cli(*args, log, env=None):
    """Start the CLI in the background, output to the file `log`; return the Popen."""
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "workbench.run", *map(str, args)], cwd=REPO,
                            env=cli_env(**(env or {})), stdout=handle, stderr=subprocess.STDOUT)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cli():
    return run_cli
