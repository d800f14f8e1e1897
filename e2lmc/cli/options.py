"""What the command line's parsers share: how a command is declared, and a run's options.

Every command is declared with `add_command`, its examples beside its options (they end
its --help). `run`, `demo`, `diagnose` and `ingest` evaluate models: the sandbox's, the
engine's and the score child's options (`add_run_limits`, read by `run_limits`);
`validate` and `align` load no model: the sandbox's only (`add_sandbox_options`, read by
`sandbox_limits`). Nothing here imports torch or lm-eval: `e2lmc --help` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..embedded.sets import DEFAULT_PRESET, PRESETS, ROOT
from ..limits import EngineSettings, GiB, Limits, SandboxSettings
from ..sandboxed.sandbox import CHOICES


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual; keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command(sub: argparse._SubParsersAction, name: str, help: str, description: str,  # noqa: A002
                examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with `examples` (command lines, a comment after one
    is kept as written)."""
    return sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter,
                          epilog="examples:\n" + "".join(f"  {line}\n" for line in examples))


def add_set_options(p: argparse.ArgumentParser) -> None:
    """Which embedded checkpoint set, and where it is (or is built)."""
    p.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                   help="which embedded checkpoint set (default: %(default)s; built once where missing: minutes "
                        "on a CPU, see README.md)")
    p.add_argument("--zoo", type=Path, help=f"where the checkpoint set is or goes (default: {ROOT}/PRESET)")


def add_run_options(p: argparse.ArgumentParser, default_output: str) -> None:
    """A local run's: the set, the output folder, the run's limits."""
    add_set_options(p)
    p.add_argument("--output", type=Path, help=f"where to write (default: {default_output})")
    add_run_limits(p)


def add_run_limits(p: argparse.ArgumentParser) -> None:
    """The options of a run that evaluates models: the sandbox's, then the engine's and the score child's."""
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
    """How the submission's code runs: what `validate` and `align` need too (they load no model)."""
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


def _sandbox_settings(args: argparse.Namespace) -> SandboxSettings:
    return SandboxSettings(level=args.sandbox, required=args.require_sandbox, memory_bytes=int(args.memory_limit * GiB))


def sandbox_limits(args: argparse.Namespace) -> Limits:
    """The limits of a command that runs the submission's code but no model (`add_sandbox_options`)."""
    return Limits(plan_seconds=args.plan_timeout, sandbox=_sandbox_settings(args))


def run_limits(args: argparse.Namespace) -> Limits:
    """The limits of a command that evaluates models (`add_run_limits`)."""
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else None
    return Limits(plan_seconds=args.plan_timeout, score_seconds=args.score_timeout,
                  engine=EngineSettings(token_budget=args.token_budget, devices=devices, threads=args.threads),
                  sandbox=_sandbox_settings(args))
