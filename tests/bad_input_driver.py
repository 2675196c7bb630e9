"""Runs the CLI's `main` for each case in a JSON list (argv, working directory) in this one
process and prints, per case, the exit code and what went to stdout and stderr, as JSON.

Starting TensorFlow once for the whole list keeps the many bad-input cases cheap; each case is
still the CLI's real entry point, output and exit code. Tests call it through
`conftest.run_cli_cases`. An exception that escapes `main` is recorded as Python would report it
(its traceback on stderr, exit code 1) and the next case runs."""

import contextlib
import io
import json
import os
import sys
import traceback


def main():
    cases = json.loads(sys.stdin.read())
    from workbench.run import main as cli_main

    results = []
    for argv, cwd in cases:
        os.chdir(cwd)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv)
            except SystemExit as exit_:
                code = exit_.code
            except Exception:
                traceback.print_exc()
                code = 1
        results.append({"argv": argv, "code": code, "stdout": out.getvalue(),
                        "stderr": err.getvalue()})
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
