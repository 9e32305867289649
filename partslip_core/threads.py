"""CPU thread budget of a run: torch's intra-op threads, set for a block and restored after."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads (0 = leave as is) and restore the previous setting.

    Measured on the 2-core CI machine under load: torch's default (2 threads) made segment() 5-8x
    slower than 1 thread, because OpenMP workers spin waiting for a descheduled peer.
    """
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count > 0:
            torch.set_num_threads(previous)
