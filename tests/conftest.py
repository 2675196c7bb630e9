import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Registers the supervised family and its label reader, which the tests that load labelled data
# straight from workbench.data need, as the command line's runs get it by resolving their task.
import workbench.supervised  # noqa: E402,F401

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


def run_cli_cases(cases, cwd=None, timeout=600):
    """Run the CLI's `main` for every case in ONE new Python process (`bad_input_driver.py`);
    return one `{"argv", "code", "stdout", "stderr"}` per case, in order.

    A new process pays 8-12 s of TensorFlow import before the CLI does anything, and a bad-input
    case is refused within a second of that, so cases that only check a refusal share one
    process: TensorFlow starts once. Each case is still the real entry point
    (`workbench.run.main`), its exit code and its captured stdout and stderr. `cases` holds argv
    lists, run in `cwd` (the repository by default), or `(argv, cwd)` pairs. Cases that need
    their own environment variables cannot share the process: run those with `run_cli`. One
    test per behaviour still runs in its own interpreter (`run_cli`) as the real-process check.
    """
    pairs = [(list(map(str, case)), str(cwd or REPO)) if isinstance(case, list)
             else (list(map(str, case[0])), str(case[1])) for case in cases]
    driver = subprocess.run([sys.executable, str(REPO / "tests" / "bad_input_driver.py")],
                            cwd=REPO, env=cli_env(), input=json.dumps(pairs),
                            capture_output=True, text=True, timeout=timeout)
    assert driver.returncode == 0, driver.stderr[-3000:]
    line = next(l for l in driver.stdout.splitlines() if l.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    assert len(results) == len(pairs)
    return results


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
