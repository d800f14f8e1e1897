"""The `e2lmc` command: one subcommand per job, and one exit code per kind of outcome.

Exit codes: 0 ok, 1 the submission is invalid (`InvalidSubmission`), 2 bad input or
refused (`UserError`, one sentence each), 3 an internal error (a traceback, and a line
asking to report it), 130 interrupted (Ctrl-C). The commands are declared by audience: the participant's
(`participant.py`), Codabench's two steps (`programs.py`), the organizers'
(`organizer.py`); their handlers parse and call, the work is done in the stage packages.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import InvalidSubmission, UserError
from .options import HelpFormatter
from .organizer import add_organizer_commands
from .participant import add_participant_commands
from .programs import add_program_commands

EXAMPLES = [
    "e2lmc demo                                  # the science sample on the embedded set",
    "e2lmc validate my_task/                     # check a submission without any model",
    "e2lmc run my_task/                          # ingestion + scoring + report, locally",
    "e2lmc diagnose my_task/                     # which samples carry signal (released checkpoints)",
    "e2lmc COMMAND --help                        # a command's options and examples",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2lmc", formatter_class=HelpFormatter,
        description="The E2LM competition bundle: evaluate submitted tasks on model checkpoints and score them.",
        epilog="examples:\n" + "".join(f"  {line}\n" for line in EXAMPLES),
    )
    parser.add_argument("--version", action="version", version=f"e2lmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_participant_commands(sub)
    add_program_commands(sub)
    add_organizer_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidSubmission as exc:
        print(f"invalid submission: {exc}", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug of e2lmc's, not the user's
        import traceback

        traceback.print_exc()
        print(f"internal error in e2lmc {__version__}: this is a bug, please report it with the traceback above",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
