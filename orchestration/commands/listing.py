"""`nf list models|generators|datasets`: the registered names a sweep config accepts, one line each.

The names and descriptions come from the registries through ``nf_core.catalog`` (each builder's
docstring gives the description), cached per nf_core source so the listing answers without importing
torch after its first run.
"""

from __future__ import annotations

import argparse

from nf_core.catalog import KINDS  # torch-free


def registered(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind`` (models, generators or datasets), from the registries."""
    from nf_core import catalog

    return catalog.names(kind)


def describe(kind: str, name: str) -> str:
    """The one-line description of a registered name: its builder's docstring's first line."""
    from nf_core import catalog

    return catalog.descriptions(kind).get(name, "")


def format_listing(kind: str) -> str:
    """One line per registered name: the name, then its description."""
    entries = registered(kind)
    width = max(len(n) for n in entries)
    return "\n".join(f"{n:<{width}}  {describe(kind, n)}".rstrip() for n in entries)


def _list(args: argparse.Namespace) -> int:
    print(format_listing(args.kind))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `nf list KIND` on the `nf` parser."""
    p = sub.add_parser("list", help="the registered models, generators or datasets a sweep config accepts")
    p.add_argument("kind", choices=KINDS, help="what to list: models, generators or datasets")
    p.set_defaults(func=_list)
