import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=300):
    """Run `python -m workbench.run ARGS` in a subprocess; return the CompletedProcess."""
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run([sys.executable, "-m", "workbench.run", *map(str, args)],
                          cwd=cwd or REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
