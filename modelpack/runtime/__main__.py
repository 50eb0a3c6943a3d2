"""``python -m modelpack.runtime MODEL_DIR [--port P] [--host H]``: the image's entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from modelpack.runtime.runner import Runner
from modelpack.runtime.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelpack.runtime", description="Serve a model directory."
    )
    parser.add_argument("model_dir", type=Path, help="the model directory (with 1/model.py)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $PORT or 8080)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="largest accepted request body and WebSocket message (default $MODELPACK_MAX_BODY_BYTES or 64 MiB)",
    )
    parser.add_argument(
        "--self-test", action="store_true", help="load the model, run its test() method, exit"
    )
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test(args.model_dir)
    port = args.port
    if port is None:
        env_port = os.environ.get("PORT", "8080")
        if not env_port.isdigit():
            parser.error(f"$PORT must be a number, got {env_port!r}")
        port = int(env_port)
    if not (args.model_dir / "1" / "model.py").is_file():
        print(f"error: {args.model_dir / '1' / 'model.py'} does not exist", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return serve(
        args.model_dir,
        host=args.host,
        port=port,
        access_log=args.access_log,
        max_body_bytes=args.max_body_bytes,
    )


def self_test(model_dir: Path) -> int:
    """The model's own ``test()`` (the Clarifai SDK's local test): 0 when it returns, 1 when it raises."""
    import traceback

    runner = Runner(model_dir)
    runner.load()
    if runner.state != "ready" or runner.instance is None:
        print(f"the model failed to load: {runner.error}", file=sys.stderr)
        return 1
    test = getattr(runner.instance, "test", None)
    if test is None:
        print("the model class defines no test() method", file=sys.stderr)
        return 1
    try:
        result = test()
    except BaseException:  # the model's own assertions and errors
        traceback.print_exc()
        return 1
    print("test() passed" + (f": {result!r}" if result is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
