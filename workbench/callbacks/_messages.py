"""Progress messages that follow Keras' interactive-logging setting."""

import logging

import keras


def print_message(message):
    # Same routing as Keras' own callbacks: stdout when interactive logging
    # is on (the default), the Python logger otherwise.
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        logging.getLogger("workbench").info(message)
