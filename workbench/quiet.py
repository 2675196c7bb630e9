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


def configure_environment(debug=False):
    """Process set-up for every workbench process (the CLI, the federation's apps): TensorFlow's
    C++ and Python logs muted unless `debug`, and TensorFlow and Keras imported with file
    descriptor 2 muted, so their start-up notices stay out of the output."""
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_native_output(not debug):
        import tensorflow as tf  # noqa: F401
        import keras  # noqa: F401
    if not debug:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
