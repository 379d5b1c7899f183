"""The ``medseg`` command: parse, call one library function, map errors to exit codes.

Exit codes: 0 success, 2 a :class:`~medseg.errors.MedsegError` (one line on stderr, no
traceback), 1 an unexpected error (a bug: traceback shown), 130 interrupted, 141 output pipe closed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys

import medseg.commands
from medseg import __version__
from medseg.errors import MedsegError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(medseg.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        yield importlib.import_module(f"medseg.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="Medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _command_modules():
        name = getattr(mod, "NAME", mod.__name__.rsplit(".", 1)[1].replace("_", "-"))
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        # a command may keep its own INFO lines (``QUIET = False``: train reports its plan that way)
        p.set_defaults(_run=mod.run, _quiet=getattr(mod, "QUIET", True))
        _add_verbose(p)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` on a command and on each of its actions (``medseg bundle verify X --verbose``)."""
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show library INFO logs and deprecation warnings (MONAI, torch)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_verbose(child)



def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from medseg import logsafe

    logsafe.install()  # no warning or library log line prints a header value
    from medseg import settings

    try:
        quiet = (logsafe.quiet_libraries(getattr(args, "verbose", False)) if getattr(args, "_quiet", True)
                 else contextlib.nullcontext())
        with settings.using(settings.from_env()), quiet:
            return int(args._run(args) or 0)  # the environment is read once per command, above
    except MedsegError as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"medseg: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (`medseg data list | head`): stop quietly, like coreutils.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
