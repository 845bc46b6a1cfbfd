"""`make demo`, last step: check a packed store against its source tars, then a short benchmark.

    python benchmarks/demo_readback.py STORE SRC [--check 3] [--results DIR]

The round trip is the library's own ``verify(source=SRC)`` (every image's JPEG bytes and
annotation JSON rebuilt from the store, field for field) and a few samples' masks decoded
against pycocotools; the short benchmark is `make bench`'s ``masks`` question, smoke-sized, on
this store. Exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import harness as h
import numpy as np
from masks import masks
from pycocotools import mask as mask_util

from sa1b_pack import open_store, verify


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store", type=Path)
    p.add_argument("src", type=Path, help="folder of the sa_NNNNNN.tar shards packed into it")
    p.add_argument("--check", type=int, default=3, help="random samples decoded by pycocotools")
    p.add_argument("--results", type=Path, help="also write JSON results here")
    args = p.parse_args(argv)
    env = h.environment()
    print(f"$ {env['command']}\n# {env['cpu_model']}; allocator: {env['allocator']}")
    store = open_store(args.store)
    print(f"len(store) = {len(store)}, shards {store.shards}")
    problems = verify(args.store, source=args.src, progress=False)
    for i in sorted(random.Random(0).sample(range(len(store)), min(args.check, len(store)))):
        s = store[i]
        coco = [s.rle(j) for j in range(len(s))]
        same = not coco or np.array_equal(s.masks(), mask_util.decode(coco).transpose(2, 0, 1))
        print(f"  store[{i}] (image_id {s.image_id}, {len(s)} masks): masks "
              + ("bit-exact with pycocotools" if same else "DIFFER from pycocotools"))  # fmt: skip
        problems += [] if same else [f"store[{i}]: masks differ from pycocotools"]
    if problems:
        print("round trip FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("round trip OK: verify --source found every image equal to its tar members\n")
    with tempfile.TemporaryDirectory(prefix="sa1b-demo-") as tmp:
        rows = masks(h.Ctx([], args.store, Path(tmp), smoke=True)).rows
    print(f"short benchmark (make bench's masks question, smoke-sized), page cache warm:\n"
          f"{h.text_table(rows)}")  # fmt: skip
    if args.results is not None:
        path = h.write_json(args.results / f"demo_readback-{h.run_name()}.json",
                            {"environment": env, "rows": rows})  # fmt: skip
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
