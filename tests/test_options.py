"""Config fields carry their help and range: a config checks them when made, and the `samcl learn` flags that set
a field take their help, default and range from it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from samcl import SelectorConfig, TrainConfig
from samcl.cli import build_parser
from samcl.options import ConfigError, Range, check_value, config, option

#: flag -> (config class, field)
LEARN_FLAGS = {"--epochs": (TrainConfig, "epochs"), "--batch-size": (TrainConfig, "batch_size"),
               "--lr": (TrainConfig, "lr"), "--seed": (TrainConfig, "seed"),
               "--points-per-image": (TrainConfig, "points_per_image"), "--prompts": (TrainConfig, "prompts"),
               "--amp": (TrainConfig, "amp"),
               "--selector-block": (SelectorConfig, "block"),
               "--samples-per-domain": (SelectorConfig, "samples_per_domain"),
               "--selector-epochs": (SelectorConfig, "epochs")}


def learn_actions() -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser("learn")._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[0]: a for a in sub.choices["learn"]._actions if a.option_strings}


@pytest.mark.parametrize("config_class", [TrainConfig, SelectorConfig])
def test_every_config_field_has_help_and_a_range(config_class):
    for field in dataclasses.fields(config_class):
        assert field.metadata.get("help") and isinstance(field.metadata.get("range"), Range), field.name
        assert check_value(config_class, field.name, field.default) == field.default  # the default is valid


@pytest.mark.parametrize("flag", list(LEARN_FLAGS))
def test_learn_flags_read_help_default_and_range_from_the_config(flag):
    config_class, name = LEARN_FLAGS[flag]
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    action = learn_actions()[flag]
    assert action.default == field.default and action.help.startswith(field.metadata["help"])
    accepted = field.metadata["range"]
    if accepted.choices is not None:
        assert action.choices == list(accepted.choices)
        return
    for text in ("-1", "0", "1", "3", "0.5", "300", "1e9"):  # what the flag takes, the config takes
        try:
            value = action.type(text)
        except argparse.ArgumentTypeError:
            continue
        config_class(**{name: value})


def test_a_field_out_of_its_range_is_named():
    with pytest.raises(ValueError, match=r"TrainConfig.epochs 0: expected an integer from 1 to 100,000"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=r"SelectorConfig.frr 0.5: expected a number >= 0 and < 0.5"):
        SelectorConfig(frr=0.5)
    with pytest.raises(ValueError, match=r"TrainConfig.batch_size True"):
        TrainConfig(batch_size=True)  # a bool is not a count


def test_range_rules():
    @config
    class Config:
        rate: float = option(0.5, "a rate", low=0, low_open=True, high=1)
        count: int | None = option(None, "a count", low=1, integer=True, optional=True)

    assert type(Config(rate=1, count=3).rate) is int  # an integer given for a float is kept as given
    for bad in ({"rate": 0}, {"rate": float("nan")}, {"rate": "0.5"}, {"count": 2.0}, {"count": 0}, {"count": "3"},
                {"count": True}, {"other": 1}):
        with pytest.raises(ConfigError):
            Config(**bad)
