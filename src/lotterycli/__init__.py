"""lottery: zero-shot image restoration and neural image compression with random networks."""

import os as _os
import sys as _sys

__version__ = "0.2.0"

# OpenMP threads that wait for work sleep instead of spinning (GNU OpenMP, torch's CPU backend,
# spins by default). A fit runs thousands of small parallel operations; with another busy process
# on the cores, spinning threads burn the time slices the working ones need: two compressions side
# by side took 13x their solo time instead of 2.2x (`python -m benchmarks.load`). It must be set
# before torch loads its OpenMP runtime; an explicit OMP_WAIT_POLICY is left as it is.
if "torch" not in _sys.modules and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Freed tensors stay in the C heap for the next step instead of going back to the OS (`heap`).
from .heap import keep_freed_memory as _keep_freed_memory  # noqa: E402

_keep_freed_memory()
