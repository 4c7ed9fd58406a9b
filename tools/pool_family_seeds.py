#!/usr/bin/env python
"""Pool the seeds of family benches run in parts (yolo_kd/bench/pool.py):

    python tools/pool_family_seeds.py docs/bench/families_pets.md /work/bench-runs/pets2/families.md

Prints, per pair and row, the pooled gain over the baseline and the paired difference from the built-in.
"""

import sys

from yolo_kd.bench.pool import pool_files


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python tools/pool_family_seeds.py families.md [families.md ...]", file=sys.stderr)
        return 2
    try:
        print(pool_files(argv), end="")
    except (OSError, ValueError) as e:
        print(f"pool_family_seeds: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
