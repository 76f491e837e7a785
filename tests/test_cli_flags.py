"""Every numeric flag of every command is checked when the command line is parsed: exit code 2 and one line
naming the flag, before any file is read or any model loaded. Defaults come from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from samcl import SelectorConfig, TrainConfig, __version__
from samcl.cli import build_parser, main
from samcl.cli import flags as cli_types

BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e400", "9" * 40]
REQUIRED = {"learn": ["S", "--domain", "d", "--data", "D"], "segment": ["S", "i.png", "--out", "m.png"],
            "eval": ["S", "--data", "a=D"], "info": ["S"], "demo": [], "benchmark": [],
            "serve": ["S"], "track": ["S", "v.mp4", "--out", "o"]}


#: `segment --auto`'s generator flags where 0 means something (Meta's: a threshold off, no crop layer, no cleanup)
AUTO_ZERO_OK = ("--pred-iou-thresh", "--stability-score-thresh", "--stability-score-offset", "--box-nms-thresh",
                "--crop-n-layers", "--crop-nms-thresh", "--crop-overlap-ratio", "--min-mask-region-area")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def numeric_flags() -> list[tuple[str, str, object]]:
    flags = []
    for command, parser in subparsers().items():
        for action in parser._actions:
            if action.option_strings and getattr(action.type, "__name__", "") in ("integer", "number", "seed",
                                                                                   "seed_list"):
                flags.append((command, action.option_strings[0], action.type))
    return flags


def test_the_sweep_covers_every_numeric_flag():
    flags = {(c, f) for c, f, _ in numeric_flags()}
    assert {("learn", "--epochs"), ("learn", "--lr"), ("learn", "--batch-size"), ("learn", "--seed"),
            ("learn", "--points-per-image"), ("learn", "--selector-max-steps"), ("learn", "--selector-epochs"),
            ("learn", "--samples-per-domain"), ("learn", "--rank"), ("learn", "--selector-block"),
            ("eval", "--seed"), ("demo", "--seed"), ("benchmark", "--jobs"), ("benchmark", "--epochs"),
            ("benchmark", "--batch-size"), ("benchmark", "--max-steps"), ("benchmark", "--seeds")} <= flags
    for command, parser in subparsers().items():  # no numeric flag escapes with a bare int/float type
        assert not [a for a in parser._actions if a.type in (int, float)], command


def accepted(kind, value: str) -> bool:
    try:
        kind(value)
    except argparse.ArgumentTypeError:
        return False
    return True


@pytest.mark.parametrize("command,flag,kind", numeric_flags(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_numeric_flag_refuses_out_of_range_values_naming_the_flag(command, flag, kind, capsys):
    for value in BAD_NUMBERS:
        if accepted(kind, value):  # 0 is a valid seed, block or 'no step limit': it must say so in the help
            assert value == "0" and flag in ("--seed", "--selector-block", "--selector-max-steps", "--seeds",
                                                   "--batch-window-ms", "--cache-mb", "--train-every", "--frame",
                                                   *AUTO_ZERO_OK), value
            continue
        code = main([command, *REQUIRED[command], f"{flag}={value}"])
        err = capsys.readouterr().err
        assert code == 2, (flag, value)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"argument {flag}" in lines[0] and "Traceback" not in err, err
        accepted_text = lines[0].split("expected ")[-1].split(", got")[0]
        assert "None" not in accepted_text and "e+" not in accepted_text, err  # as a user types a value


@pytest.mark.parametrize("argv", [["--point", "nan,3"], ["--negative", "1,inf"], ["--box", "0,0,nan,5"],
                                  ["--box", "0,0,inf,5"], ["--box", "5,5,1,1"]])
def test_non_finite_points_and_boxes_are_refused_at_parse_time(argv, capsys):
    code = main(["segment", "S", "i.png", "--out", "m.png", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"argument {argv[0]}" in err[0]


@pytest.mark.parametrize("device", ["foo", "meta", "cuda:x", ""])
def test_bad_device_names_are_one_line(device, capsys):
    code = main(["--device", device, "info", "S"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "argument --device" in err[0]


def test_cuda_without_cuda_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["--device", "cuda", "segment", tmp_path / "S", tmp_path / "i.png", "--out", tmp_path / "m.png",
                 "--point", "1,1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("samcl: error: --device cuda: ")
    assert "use --device cpu" in err[0]


def test_learn_defaults_are_read_from_the_config_dataclasses():
    learn = subparsers()["learn"]
    train = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    selector = {f.name: f.default for f in dataclasses.fields(SelectorConfig)}
    defaults = {a.dest: a.default for a in learn._actions}
    for dest in ("epochs", "batch_size", "lr", "seed", "points_per_image", "prompts", "amp"):
        assert defaults[dest] == train[dest], dest
    assert defaults["samples_per_domain"] == selector["samples_per_domain"]
    assert defaults["selector_epochs"] == selector["epochs"]
    assert defaults["selector_max_steps"] == selector["max_steps"]


@pytest.mark.parametrize("command", list(REQUIRED))
def test_help_shows_defaults_help_for_every_flag_and_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"samcl {command}" in out.split("examples:")[1]
    for action in subparsers()[command]._actions:
        assert action.help, (command, action.dest)
    assert "None" not in out and "e+0" not in out  # ranges as a user types them: 1,048,576, not 1.04858e+06
    if command == "learn":
        assert "(default: 20)" in out and "(default: 0.005)" in out and "builtin:tiny-sam" in out
    if command == "segment":
        assert all(flag in out.split("examples:")[1] for flag in ("--negative", "--box", "--json"))


def test_version(capsys):
    code = main(["--version"])
    assert code == 0 and capsys.readouterr().out.strip() == f"samcl {__version__}"


def test_seed_range_matches_what_the_generators_take():
    assert cli_types.seed(str(cli_types.MAX_SEED)) == 2**32 - 1
    assert not accepted(cli_types.seed, str(2**32))
