"""What every kernel shares: the jit options and the status codes kernels return."""

from __future__ import annotations

import numba as nb

OK = 0
ERR_BAD_CHAR = -1
ERR_TRUNCATED = -2
ERR_NEGATIVE = -3
ERR_OVERFLOW = -4
ERR_OUT_TOO_SMALL = -5
ERR_SUM = -6
ERR_SHAPE = -7

MAX_RUN = 0xFFFFFFFF
MAX_GROUPS = 12  # 60 bits: far beyond any uint32 delta, and no int64 shift overflow

jit = nb.njit(cache=True, nogil=True)
jit_parallel = nb.njit(cache=True, nogil=True, parallel=True)
