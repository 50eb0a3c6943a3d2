"""Writes mlp.safetensors without torch: the weights are a formula, so tests can recompute them.

    python make_weights.py   # from this directory

weight(name, i) = ((i * 7 + offset) % 17 - 8) / 16, as float32, row-major; see WEIGHTS.
"""

import json
import struct
from pathlib import Path

# name -> (shape, offset)
WEIGHTS = {
    "0.weight": ((8, 4), 1),
    "0.bias": ((8,), 3),
    "2.weight": ((3, 8), 5),
    "2.bias": ((3,), 11),
}


def values(shape: tuple[int, ...], offset: int) -> list[float]:
    count = 1
    for size in shape:
        count *= size
    return [((i * 7 + offset) % 17 - 8) / 16 for i in range(count)]


def main() -> None:
    header: dict[str, dict[str, object]] = {}
    data = b""
    for name, (shape, offset) in sorted(WEIGHTS.items()):
        raw = struct.pack(f"<{len(values(shape, offset))}f", *values(shape, offset))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    Path(__file__).with_name("mlp.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)


if __name__ == "__main__":
    main()
