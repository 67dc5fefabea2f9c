"""Write the man pages in docs/man/ from trustmilter's argument parser.

    .venv/bin/python tools/manpages.py           rewrite docs/man/*.1
    .venv/bin/python tools/manpages.py --check   exit 1 naming each page that differs

One page per command: trustmilter(1) lists the commands and says where an
installation keeps its files; trustmilter-COMMAND(1) documents every
option and action of one command, from the very parser `trustmilter`
runs, so a page cannot drift from ``--help``. tests/test_manpages.py runs
``--check`` in CI; after changing an option or a help text, run this
script and commit the pages. The Debian package installs them
(packaging/debian/trustmilter.manpages).

The roff comes from argparse-manpage (praiskup/argparse-manpage, packaged
by Debian and Fedora, used by pipx for the same job): it walks the parser,
nested actions included, and escapes the text for troff. What this
script adds is the choice of pages and the sections no parser knows
(files, environment, exit status). The output is the same on every
machine: a fixed formatter width (troff fills the lines itself) and no
date in the page header (the version stands for it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "docs" / "man"

# argparse wraps help text at $COLUMNS; one long line per paragraph lets troff
# fill it to the reader's terminal instead, and makes the pages identical everywhere.
FORMATTER_COLUMNS = "1000"

FILES = r""".TP
.I /etc/trustmilter/policy.yaml
The policy every command reads when not given
.BR \-\-policy ;
without it,
.I ./policy.yaml
is read, and without either the built\-in defaults apply.
.B trustmilter policy show
prints the effective policy.
.TP
.I /var/lib/trustmilter/
The state store (rate counts, learned senders, hard bounces) when the policy keeps
state in SQLite, as it does by default.
.TP
.I /run/trustmilter/trustmilter.sock
The milter's socket under the systemd unit; Postfix's
.B smtpd_milters
names it.
.TP
.I /run/trustmilter/daemon.json
Written by
.B trustmilter run
while it runs: its process, policy file and state store.
.BR quarantine ,
.B reputation
and
.B bounces
warn when it names another store than the one they open."""

ENVIRONMENT = r""".TP
.B RUNTIME_DIRECTORY
The directory of
.I daemon.json
(systemd sets it for the unit's RuntimeDirectory); default
.IR /run/trustmilter ."""

EXIT_STATUS = r"""0 on success, whatever the verdict;
1 when the input or the policy cannot be read, or an action fails (one line on standard error);
2 for a usage error.
.B doctor
exits 1 when a check fails."""


def build_parser() -> argparse.ArgumentParser:
    """The parser `trustmilter` runs (cli.py), built afresh."""
    from trustmilter.cli import _parser

    return _parser()


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The parser's one subcommand action."""
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


Command = tuple[str, str, argparse.ArgumentParser]


def public_commands(parser: argparse.ArgumentParser) -> list[Command]:
    """(name, one-line help, parser) of each command ``--help`` lists, in its order."""
    action = subcommands(parser)
    return [(choice.dest, choice.help or "", action.choices[choice.dest])
            for choice in action._choices_actions if choice.help != argparse.SUPPRESS]


def _page(parser: argparse.ArgumentParser, name: str, description: str,
          sections: list[tuple[str, str]]) -> str:
    from argparse_manpage.manpage import Manpage

    from trustmilter import __version__

    _name_the_actions(parser)
    page = Manpage(parser)
    page.prog = name
    page.description = description
    page.date = ""
    page.source = f"trustmilter {__version__}"
    page.manual = "trustmilter manual"
    for heading, content in sections:
        page.add_section(heading, ">", content)
    header, rest = str(page).split("\n", 1)
    # .nh: no hyphenation; a broken "trustmil-ter" or path is worse than a ragged line.
    return f"{header}\n.nh\n{rest}"


def _name_the_actions(parser: argparse.ArgumentParser) -> None:
    """Head the list of a command's actions ACTIONS, not "positional arguments"."""
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for group in parser._action_groups:
            if sub in group._group_actions:
                group.title = "actions"


def render_pages() -> dict[str, str]:
    """Every page, by file name."""
    parser = build_parser()
    commands = public_commands(parser)
    listing = "\n".join(
        f".TP\n.B {name}\n{help_text}.\nSee\n.BR trustmilter\\-{name} (1)."
        for name, help_text, _ in commands)
    overview = argparse.ArgumentParser(
        prog="trustmilter", usage="trustmilter [--version] COMMAND [ARGUMENTS]",
        description=(parser.description or "")
        + " A milter for Postfix and Sendmail: each message's sender, path and content"
        " are checked against a YAML policy, inline, and the verdict is a header, a"
        " quarantine, a temporary failure or a reject; mail loops are stopped.",
        add_help=False)
    for action in parser._actions:
        if "--version" in action.option_strings:
            overview._add_action(action)
    see_also = ", ".join(f".BR trustmilter\\-{name} (1)" for name, _, _ in commands)
    pages = {"trustmilter.1": _page(overview, "trustmilter", "decide how far to trust inbound mail",
                                    [("commands", listing), ("files", FILES),
                                     ("environment", ENVIRONMENT), ("exit status", EXIT_STATUS),
                                     ("see also", _roff_list(see_also))])}
    for name, help_text, command in commands:
        pages[f"trustmilter-{name}.1"] = _page(
            command, f"trustmilter-{name}", help_text,
            [("see also", ".BR trustmilter (1)\n"
                          "for the files, the environment and the exit status.")])
    return pages


def _roff_list(items: str) -> str:
    """`.BR a (1), .BR b (1)` as roff lines, commas kept with each item."""
    return "\n".join(item.strip() + "," for item in items.split(", ")).rstrip(",")


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ["COLUMNS"] = FORMATTER_COLUMNS
    pages = render_pages()
    present = {path.name for path in MAN_DIR.glob("*.1")}
    if check:
        stale = sorted(name for name, text in pages.items()
                       if not (MAN_DIR / name).is_file() or (MAN_DIR / name).read_text() != text)
        stale += sorted(present - pages.keys())
        for name in stale:
            print(f"docs/man/{name} is not current: run .venv/bin/python tools/manpages.py",
                  file=sys.stderr)
        return 1 if stale else 0
    MAN_DIR.mkdir(parents=True, exist_ok=True)
    for name in present - pages.keys():
        (MAN_DIR / name).unlink()  # a command that is gone
    for name, text in pages.items():
        (MAN_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
