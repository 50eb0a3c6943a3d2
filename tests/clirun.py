"""The installed `modelpack` command in a subprocess, as a user runs it, for the tests that check
what the command line does (exit status, one-line errors, --json output).

`tests/` is on sys.path under pytest (`pythonpath` in pyproject.toml): `from clirun import ...`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection, Mapping

# the package-index variables; a test that names its own index drops the host's (`without=`)
INDEX_VARIABLES = ("UV_INDEX_URL", "PIP_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL")


def run_modelpack(
    *args: str,
    env: Mapping[str, str] | None = None,
    without: Collection[str] = (),
    stdin: str | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess[str]:
    """`python -m modelpack ARGS` from `/`, where the source tree is not importable (the installed
    package answers): the test's environment less the names in `without`, plus `env`. The exit
    status is the caller's to check."""
    base = {name: value for name, value in os.environ.items() if name not in without}
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**base, **(env or {})},
        cwd="/",
        timeout=timeout,
        check=False,
    )
