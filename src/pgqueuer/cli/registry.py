"""How a command is declared: one async function plus its argparse registration.

A command module exposes ``register(commands)``, which calls :meth:`Commands.add` once per
command and adds the command's own arguments to the parser it gets back::

    async def hello(args: argparse.Namespace, session: Session) -> int:
        pg = await session.queue()
        ...
        return 0

    def register(commands: Commands) -> None:
        parser = commands.add("hello", hello, summary="...", description="...",
                              examples=["pgq hello"])
        parser.add_argument(...)
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from pgqueuer.cli.connection import Session
from pgqueuer.dsn import redact_dsn, scrub

Handler = Callable[[argparse.Namespace, Session], Awaitable[int]]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pgq: error: ... (see 'pgq cmd --help')``.

    A command's parser reads options and positionals in any order
    (``pgq queue NAME --json PAYLOAD``), which plain argparse refuses for optional
    positionals; the top-level parser, which holds the sub-commands, parses as usual.
    """

    _intermixing = False
    #: Passwords found anywhere on the command line or in the environment, set by ``main``
    #: before parsing: argparse echoes a mistyped option's value (``--dsn URL``) in its
    #: error, and that value may hold a password.
    secrets: tuple[str, ...] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> NoReturn:
        message = redact_dsn(scrub(message, list(Parser.secrets)))
        print(f"pgq: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


class HelpFormatter(argparse.HelpFormatter):
    """Wrap description paragraphs to the terminal, but keep indented lines (lists,
    examples) exactly as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                paragraphs.append(paragraph)  # a list or examples: keep the layout
                continue
            paragraphs.append(
                textwrap.fill(
                    " ".join(paragraph.split()),
                    width,
                    initial_indent=indent,
                    subsequent_indent=indent,
                    break_on_hyphens=False,
                )
            )
        return "\n\n".join(paragraphs)


def examples_epilog(examples: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in examples)


class Commands:
    """Adds commands to the ``pgq`` parser."""

    def __init__(self, subparsers: argparse._SubParsersAction[Parser]) -> None:
        self._subparsers = subparsers

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        summary: str,
        description: str,
        examples: Sequence[str],
        database: bool = True,
        aliases: Sequence[str] = (),
    ) -> Parser:
        """Register ``name``; ``database=False`` for commands that never connect."""
        parser = self._subparsers.add_parser(
            name,
            aliases=list(aliases),
            help=summary,
            description=description,
            epilog=examples_epilog(examples),
            formatter_class=HelpFormatter,
        )
        parser.set_defaults(handler=handler, needs_database=database)
        return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def job_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"job ids are whole numbers (as printed by 'pgq queue'), got {text!r}"
        ) from None
