"""Keeping TensorFlow's and LiteRT's native log lines out of the CLI's output.

TensorFlow's C++ runtime, the TFLite converter and the LiteRT interpreter write notices straight to
file descriptor 2, where no Python-level logging setting reaches. The CLI asks for quiet by setting
`TF_CPP_MIN_LOG_LEVEL=3` (unless `--debug`); these helpers honour that same switch.
"""

import contextlib
import os
import sys


def native_logs_muted():
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "3"


@contextlib.contextmanager
def quiet_native_output(enabled=None):
    """Mute file descriptor 2 for the duration, when the quiet switch (or `enabled`) is on."""
    if enabled is None:
        enabled = native_logs_muted()
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
