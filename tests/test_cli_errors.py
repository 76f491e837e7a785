"""The command line's one table from the library's fields to its flags (`samcl.cli.errors.FLAGS`)."""

from __future__ import annotations

import argparse

import pytest

from samcl import SamclError
from samcl.cli.errors import FLAGS, error_line, in_flags
from samcl.cli.parser import build_parser


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option of `parser` and of its subcommands."""
    found = set()
    for action in parser._actions:
        found |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def test_every_flag_in_the_table_is_a_real_flag():
    flags = option_strings(build_parser())
    named = {part.strip(",") for flag in FLAGS.values() for part in flag.split() if part.startswith("--")}
    assert named and named <= flags, named - flags


@pytest.mark.parametrize("message, field, line", [
    ("runtime 'openvino': openvino is not installed", "runtime", "--runtime openvino: openvino is not installed"),
    ("loss is nan: try a smaller learning rate (TrainConfig.lr)", "TrainConfig.lr",
     "loss is nan: try a smaller learning rate (--lr)"),
    ("x: domain 'red' is in an earlier store too; give it another name with rename 'red=NEW'", "rename",
     "x: domain 'red' is in an earlier store too; give it another name with --rename red=NEW"),
    ("domain 'red' is already in the module set (relearn it with replace=True)", "replace",
     "domain 'red' is already in the module set (relearn it with --replace)"),
    ("max_learn_tasks 0: give a number above 0", "max_learn_tasks", "--learn-max-tasks 0: give a number above 0"),
    # a plain word that is the field's name is left alone where it is not a mention of the field
    ("s: the store does not record its base model; give the base (base)", "base",
     "s: the store does not record its base model; give the base (--base)"),
    ("host '::': needs a token (ServeConfig.token, or SAMCL_TOKEN)", "host", "--host ::: needs a token (--token, or "
     "SAMCL_TOKEN)"),
    ("runtime 'torch': no field, no flag", None, "runtime 'torch': no field, no flag"),
])
def test_the_library_field_is_written_as_its_flag(message, field, line):
    assert in_flags(message, field) == line
    assert error_line(SamclError(message, field=field)) == line


def test_a_warning_names_a_field_that_cannot_be_a_word_by_its_flag():
    assert in_flags("read them in the pixels frame (points_frame)", None) == \
        "read them in the pixels frame (--points-frame)"
