"""pgqueuer 1.x import path for the worker-factory helpers of ``pgq run``.

``load_factory("module:function")`` imports a factory (the working directory is put on the
import path first, as ``pgq run`` does); ``validate_factory_result`` checks that calling it
gave an async context manager, the form 1.x requires. Our ``pgq run`` and
:func:`pgqueuer.run` also accept factories that return a manager directly.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from pgqueuer.supervisor import FactoryError
from pgqueuer.supervisor import load_factory as _load_path

__all__ = ["FactoryError", "load_factory", "validate_factory_result"]


def load_factory(factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """The factory itself when it is callable, else the callable ``module:attribute`` names.

    Raises :class:`FactoryError` (a ``ValueError``) when the path cannot be imported or does
    not name a callable.
    """
    if callable(factory):
        return factory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return _load_path(factory)


def validate_factory_result(result: object) -> AbstractAsyncContextManager[Any]:
    """Return ``result`` if it is an async context manager, else raise ``TypeError``.

    The message shows the ``@asynccontextmanager`` form to use instead.
    """
    if isinstance(result, AbstractAsyncContextManager):
        return result
    if inspect.iscoroutine(result):
        result.close()  # never awaited: close it so Python does not warn about it
    raise TypeError(
        f"the factory returned {type(result).__name__}, but it must return an async context "
        "manager; write it as\n\n"
        "    from contextlib import asynccontextmanager\n\n"
        "    @asynccontextmanager\n"
        "    async def create_pgqueuer():\n"
        "        ...  # open the connection, build the PgQueuer\n"
        "        yield pgq\n"
        "        ...  # close what you opened\n"
    )
