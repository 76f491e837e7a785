"""Flags renamed by issue 31's one vocabulary: the old spelling still works for one release, with one warning line.

    p.add_argument("--without-module", action="store_true", help=...)
    renamed_flag(p, "--as-base", "--without-module")     # hidden; sets the same destination and warns
"""

from __future__ import annotations

import argparse
import sys


class _Renamed(argparse.Action):
    """Store what the new flag would, after one 'samcl: warning:' line naming the new spelling."""

    def __init__(self, option_strings, dest, new: str, const=None, nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)
        self.new, self.warned = new, None

    def __call__(self, parser, namespace, values, option_string=None):
        if self.warned is not namespace:  # one line per command line, however often the old flag is given
            print(f"samcl: warning: {option_string} is renamed {self.new}; the old flag goes in the next release",
                  file=sys.stderr)
            self.warned = namespace
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept `old` as a hidden spelling of the already added flag `new` (same destination, type and kind)."""
    target = next(a for a in parser._actions if new in a.option_strings)
    if target.nargs == 0:  # store_true / store_const
        parser.add_argument(old, dest=target.dest, action=_Renamed, new=new, nargs=0, const=target.const,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    else:
        parser.add_argument(old, dest=target.dest, action=_Renamed, new=new, type=target.type,
                            metavar=target.metavar, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
