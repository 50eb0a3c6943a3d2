"""The `modelpack` executable and `python -m modelpack`.

A standby process (`modelpack standby start`) is asked first: it has modelpack loaded and runs
the command in a fresh fork, which saves Python's start and the imports. When none answers, or
MODELPACK_STANDBY=off, the command runs in this process. Only the standard library and the
small `modelpack.standby` client load before that choice.
"""

from __future__ import annotations

import os
import sys

from modelpack.standby.client import call


def run() -> None:
    if os.environ.get("MODELPACK_STANDBY", "").lower() not in ("off", "0", "no", "false"):
        code = call(sys.argv[1:])
        if code is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    from modelpack.cli import run as run_here  # loaded only when this process runs the command

    run_here()


if __name__ == "__main__":
    run()
