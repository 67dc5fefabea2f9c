"""``trustmilter review``: the review page's commands, each registered by its own module.

Only ``review helper`` (helper/command.py) so far; the page's own commands
(serve, accounts) and the digest add their parsers here the same way.
"""

from __future__ import annotations

import argparse
from typing import Any

from trustmilter.review.helper.command import add_helper_parser, run_helper


def add_review_parser(commands: Any) -> None:
    """``review ACTION`` on cli.py's subparsers."""
    parser = commands.add_parser("review", help="the help desk's review page for held mail")
    actions = parser.add_subparsers(dest="review_command", required=True, metavar="ACTION")
    add_helper_parser(actions)


def run_review(args: argparse.Namespace) -> int:
    runners = {"helper": run_helper}
    return runners[args.review_command](args)
