"""CLI subcommands, one module each, discovered by :mod:`medseg.cli`.

A command module defines::

    NAME = "info"                 # optional, defaults to the module name with '_' -> '-'
    HELP = "one line for `medseg --help`"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # calls ONE importable function

Keep module top-level imports light (argparse, pathlib): heavy imports go inside ``run`` so that
``medseg --help`` stays fast. Raise :class:`medseg.errors.MedsegError` for bad input.
"""
