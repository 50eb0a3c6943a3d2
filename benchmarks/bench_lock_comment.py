"""Benchmark: `modelpack lock` after a comment-only edit of requirements.txt.

bench_lock's model (examples/hello plus numpy, scipy and pandas) is locked once; each round then
adds a comment line, a comment after a requirement and a blank line to a fresh copy of that
directory and its lock, and times `modelpack lock DIR` as a process, two ways:

  * comment edit: as it runs now (the input digest covers the requirement lines, not the file's
    bytes: the lock is reused and uv does not run);
  * as before: the same edit with the lock's input digest made not to match, which is what a
    digest over requirements.txt's bytes saw: the whole input resolved again, preferring the
    existing pins (lines unchanged, so not the added-lines path). The baseline.

The two run in an order that alternates round by round; the ratio is the median over the rounds,
with the lowest and highest round beside it as the noise. Also checks that both locks pin the
same packages. Needs the package index (PyPI, or UV_INDEX_URL / PIP_INDEX_URL). Usage:
    .venv/bin/python benchmarks/bench_lock_comment.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from bench_lock import locked_base, modelpack_lock, timed_rounds

VARIANTS = ("comment edit", "as before")


def prepare(base: Path, target: Path, variant: str) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base, target)
    requirements = target / "requirements.txt"
    text = requirements.read_text(encoding="utf-8").replace("numpy==", "\n# numerics\nnumpy==", 1)
    requirements.write_text(text.replace("scipy==1.15.3", "scipy==1.15.3   # for the solver", 1))
    if variant == "as before":
        lock = target / "requirements.lock"
        lock.write_text(
            re.sub(r"(?m)^# input-digest: .*$", "# input-digest: sha256:" + "0" * 64, lock.read_text())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-lock-comment-") as tmp:
        base = locked_base(tmp)

        def run(model: Path, variant: str) -> float:
            prepare(base, model, variant)
            return modelpack_lock(model)

        timed_rounds(tmp, VARIANTS, args.rounds, run, "as before")


if __name__ == "__main__":
    main()
