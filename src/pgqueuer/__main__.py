"""``python -m pgqueuer``: the ``pgq`` command line."""

from pgqueuer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
