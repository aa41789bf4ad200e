"""``pgq``, the command line of pgqueuer (also ``python -m pgqueuer``).

Only the standard library's ``argparse`` is used, so the command works after a plain
``pip install pgqueuer``. Each command is one async function plus its registration, in the
modules of this package: :mod:`~pgqueuer.cli.schema`, :mod:`~pgqueuer.cli.runner`,
:mod:`~pgqueuer.cli.jobs`, :mod:`~pgqueuer.cli.monitor` and :mod:`~pgqueuer.cli.devserver`.
"""

from pgqueuer.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
