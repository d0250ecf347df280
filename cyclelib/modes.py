"""Networks switched to eval mode for a block of code, each module's own mode restored after it."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(*nets: nn.Module) -> Iterator[None]:
    """Put ``nets`` in eval mode (dropout off, BatchNorm's running statistics) for the block, and
    give every module in them back the mode it had, also when the block raises.

    Each module's mode is restored, not the top module's applied to all: ``net.train(True)``
    would also switch on a frozen classifier held inside ``net`` (kept in eval mode on purpose)."""
    before = [(module, module.training) for net in nets for module in net.modules()]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for module, training in before:
            module.training = training
