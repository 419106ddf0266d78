"""Suite-wide settings for parallel runs.

``make test`` runs the suite in two pytest-xdist workers on the 2-core machine (499 s in one
process, about 320 s in two). In a worker:

- idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set before
  torch loads its OpenMP runtime, and inherited by the subprocesses tests start): a
  spinning pool in one worker took the core the other worker was computing on, and slowed
  some tests tenfold;
- torch starts with one thread: two workers of two threads each would oversubscribe the
  cores, and most tests run small tensors. Tests and fixtures that need another thread
  count set it and restore it.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch  # after the OpenMP setting above

    torch.set_num_threads(1)
