"""Every path, `nf` command and `ray` command the cluster files and sweep configs mention exists
in this repository and parses with the real `nf` and `ray` command lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_support import CLUSTER_FILES, CLUSTERS, ROOT

# ------------------------------------------------------------------ references resolve in this repo
REPO_PATH = re.compile(r"(?<![\w/.-])((?:clusters|sweeps|orchestration|nf_core|tests)/[\w./-]*\w)")
NF_COMMAND = re.compile(r"(?:^|[\s`(])nf\s+([a-z][^\n`;|&)#]*)")
RAY_COMMAND = re.compile(r"(?:^|[\s`(;])ray\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?")


def referring_files() -> list[Path]:
    return [CLUSTERS / n for n in CLUSTER_FILES] + sorted((ROOT / "sweeps").glob("*.yaml"))


def _subparser(parser: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The (sub)parser a command line reaches, and the words left for it."""
    import argparse

    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


@pytest.mark.parametrize("path", referring_files(), ids=lambda p: p.name)
def test_paths_mentioned_exist(path: Path) -> None:
    for ref in REPO_PATH.findall(path.read_text()):
        assert (ROOT / ref).exists(), f"{path.name} mentions {ref}, which is not in the repo"


@pytest.mark.parametrize("path", referring_files(), ids=lambda p: p.name)
def test_nf_commands_mentioned_exist(path: Path) -> None:
    from orchestration.cli import build_parser

    for line in NF_COMMAND.findall(path.read_text()):
        words = shlex.split(line)
        parser, rest = _subparser(build_parser(), words)
        if not rest:  # a command named in prose, as in "`nf sweep plan` reads them"
            assert parser.get_default("func") is not None, f"{path.name}: `nf {line.strip()}` is no command"
            continue
        try:
            args = parser.parse_args(rest)
        except SystemExit:
            pytest.fail(f"{path.name}: `nf {line.strip()}` is not a valid nf command")
        assert hasattr(args, "func"), f"{path.name}: `nf {line.strip()}` names no command"
        configs = getattr(args, "config", None) or []
        for config in [configs] if isinstance(configs, str) else configs:  # `nf sweep plan` takes several
            # a config given to nf: by repo path, or relative to `--working-dir sweeps`
            assert (ROOT / config).exists() or (ROOT / "sweeps" / config).exists(), f"{path.name}: {config}"


@pytest.mark.parametrize("path", referring_files(), ids=lambda p: p.name)
def test_ray_commands_mentioned_exist(path: Path) -> None:
    import click
    from ray.scripts.scripts import cli

    for sub, subsub in RAY_COMMAND.findall(path.read_text()):
        assert sub in cli.commands, f"{path.name}: `ray {sub}` is not a ray command"
        if isinstance(cli.commands[sub], click.Group):  # ray job submit, ray job status, ...
            assert subsub in cli.commands[sub].commands, f"{path.name}: `ray {sub} {subsub}` is not a ray command"
