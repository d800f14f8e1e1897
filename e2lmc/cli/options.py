"""The command line's shared options: how a run's limits are given and read.

`run`, `demo`, `diagnose` and `ingest` evaluate models (the sandbox's, the engine's and
the score child's options); `validate` loads no model (the sandbox's only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..limits import Limits
from ..sandboxed.sandbox import CHOICES


def limits(args: argparse.Namespace) -> Limits:
    """The run's limits from its options (validate's: no engine)."""
    from ..limits import Settings
    from ..sandboxed.sandbox import GiB, SandboxSettings

    sandbox = SandboxSettings(level=args.sandbox, required=args.require_sandbox,
                              memory_bytes=int(args.memory_limit * GiB))
    if not hasattr(args, "devices"):  # validate: no model, no engine options
        return Limits(plan_seconds=args.plan_timeout, sandbox=sandbox)
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else None
    return Limits(plan_seconds=args.plan_timeout, score_seconds=args.score_timeout,
                  engine=Settings(token_budget=args.token_budget, devices=devices, threads=args.threads),
                  sandbox=sandbox)


def add_run_options(p: argparse.ArgumentParser, default_output: str) -> None:
    p.add_argument("--preset", choices=["tiny", "default"], default="default",
                   help="which embedded checkpoint set (default: %(default)s)")
    p.add_argument("--zoo", type=Path, help="where the checkpoint set is or goes (default: zoo/PRESET)")
    p.add_argument("--output", type=Path, help=f"where to write (default: {default_output})")
    add_limits(p)


def add_limits(p: argparse.ArgumentParser) -> None:
    """The options of a run: the sandbox's, then the engine's and the score child's."""
    add_sandbox_options(p)
    p.add_argument("--score-timeout", type=float, default=Limits.score_seconds,
                   help="seconds allowed to score one checkpoint's responses (default: %(default)s)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="tokens per forward pass (default: 4096 on CPU, 32768 on a GPU)")
    p.add_argument("--devices", default=None,
                   help="comma-separated torch devices, one process each, e.g. cuda:0,cuda:1 "
                        "(default: every visible GPU, else the CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch's CPU threads for the evaluation (default: the cores this process may use less those "
                        "other processes are busy on)")


def add_sandbox_options(p: argparse.ArgumentParser) -> None:
    """How the submission's code runs: what `validate` needs too (it loads no model)."""
    p.add_argument("--plan-timeout", type=float, default=Limits.plan_seconds,
                   help="seconds allowed to build the task and record its requests (default: %(default)s)")
    p.add_argument("--sandbox", choices=["auto", *CHOICES], default="auto",
                   help="isolation of the submission's code: namespaces (bubblewrap), landlock (kernel filters, "
                        "where namespaces are refused), none; auto picks the strongest this host allows "
                        "(default: %(default)s; 'uid' is another name for landlock, see docs/security.md)")
    p.add_argument("--require-sandbox", choices=CHOICES, default="none",
                   help="refuse to run below this isolation level (default: %(default)s)")
    p.add_argument("--memory-limit", type=float, default=8.0,
                   help="GiB of address space each process running submission code may use (default: %(default)s)")
