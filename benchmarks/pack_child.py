"""A packing process driven one pack at a time over stdin/stdout, for ``pack_rate.py``.

    PYTHONPATH=<code> python benchmarks/pack_child.py

Each input line is JSON ``{"src", "dst", "indices", "jobs"}``: the child packs, times only
the ``pack`` call, deletes the store (untimed) and answers ``{"seconds": s}``. ``{"rss": true}``
shuts the worker pool down and answers the peak RSS of the child and of its workers. Whichever
``sa1b_pack`` is first on PYTHONPATH is the code measured: this is how one run times the
current packer against an older commit's, round by round.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time


def main() -> int:
    from sa1b_pack import pack

    for line in sys.stdin:
        ask = json.loads(line)
        if ask.get("rss"):
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)  # workers exit: RUSAGE_CHILDREN sees them
            kib = [resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF,
                                                             resource.RUSAGE_CHILDREN)]  # fmt: skip
            answer = {"rss_mb": [k / 1024 for k in kib]}
        else:
            t0 = time.perf_counter()
            report = pack(ask["src"], ask["dst"], ask["indices"], jobs=ask["jobs"], progress=False)
            seconds = time.perf_counter() - t0
            if not report.ok:
                raise SystemExit(f"packing {ask['dst']} failed: {report}")
            shutil.rmtree(ask["dst"])
            answer = {"seconds": seconds}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
