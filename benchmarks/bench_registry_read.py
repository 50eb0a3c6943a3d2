"""Benchmark reading registry answers under the deadline rule (`modelpack.oci.transfer`, small
reads checked against MODELPACK_REGISTRY_DEADLINE) against requests reading the body itself,
as the client did before the deadline; both check the blob's digest, so the work is equal.

One random blob (64 MiB by default) is pushed to the local registry; each round downloads it
with both readers, alternating which goes first. Prints MiB/s per reader and the
transfer/baseline time ratio per round, then the median and the spread between rounds as the
machine's noise. The blob stays in a `modelpack-bench/` repository, unreferenced (the
registry's garbage collection removes it).

Needs the registry of scripts/setup.sh. Usage:
    python benchmarks/bench_registry_read.py [--registry 127.0.0.1:5000] [--mib 64] [--rounds 6]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
import uuid

import requests

from modelpack.oci.registry import RegistryClient


def baseline_get(session: requests.Session, url: str, digest: str) -> bytes:
    """What `RegistryClient.get_blob` did before: one GET whose body requests reads, then the digest."""
    response = session.get(url, timeout=60)
    response.raise_for_status()
    data = response.content
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    repository = f"modelpack-bench/read-{uuid.uuid4().hex[:8]}"
    data = os.urandom(args.mib << 20)
    ratios: list[float] = []
    with RegistryClient(args.registry) as client, requests.Session() as session:
        blob = client.upload_blob(repository, data)
        url = f"{client.base_url}/v2/{repository}/blobs/{blob.digest}"
        for round_ in range(args.rounds):
            timings: dict[str, float] = {}
            order = ["transfer", "baseline"] if round_ % 2 == 0 else ["baseline", "transfer"]
            for side in order:
                start = time.perf_counter()
                if side == "transfer":
                    got = client.get_blob(repository, blob.digest)
                else:
                    got = baseline_get(session, url, blob.digest)
                timings[side] = time.perf_counter() - start
                assert len(got) == len(data)
            ratio = timings["transfer"] / timings["baseline"]
            ratios.append(ratio)
            speed = {side: args.mib / seconds for side, seconds in timings.items()}
            print(
                f"round {round_ + 1} ({order[0]} first): transfer {speed['transfer']:.0f} MiB/s, "
                f"baseline {speed['baseline']:.0f} MiB/s, time ratio transfer/baseline {ratio:.2f}"
            )
    spread = (max(ratios) - min(ratios)) / 2
    print(f"median ratio {statistics.median(ratios):.2f} (noise: +-{spread:.2f} between rounds; below 1 is faster)")


if __name__ == "__main__":
    main()
