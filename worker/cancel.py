"""Stopping a chunk midway: the long stages ask ``should_stop()`` as they go and raise
``Cancelled``.

One output frame can take seconds on a CPU (a ×4 network, a BasicVSR window, a pair to
interpolate), so the stages ask between tiles, windows and in-between times, and, through
forward pre-hooks, before every layer of their networks. The question must be cheap: the
worker answers it from a ``threading.Event`` that a watcher thread sets (worker.jobs).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """The work is no longer wanted (its job was cancelled or deleted) and stopped midway."""


def never() -> bool:
    """The default ``should_stop``: work run offline (``lumiere process``) goes to the end."""
    return False


def check(should_stop: ShouldStop) -> None:
    """Raise ``Cancelled`` if the work should stop."""
    if should_stop():
        raise Cancelled("stopped midway")


@contextlib.contextmanager
def checked_layers(network: nn.Module, should_stop: ShouldStop) -> Iterator[None]:
    """Within the block, :func:`check` before each layer of ``network`` runs in this thread.

    A tile of a big network takes seconds on a CPU; its layers, milliseconds. The hooks are
    removed on leaving, and a thread sharing the (cached) network is not checked.
    """
    if should_stop is never:
        yield
        return
    owner = threading.get_ident()

    def before_layer(module: nn.Module, args: object) -> None:
        if threading.get_ident() == owner:
            check(should_stop)

    hooks = [m.register_forward_pre_hook(before_layer) for m in network.modules()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
