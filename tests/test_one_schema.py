"""One schema mechanism (`samcl.options`, `samcl.store.schema`): a field's range is refused with the same line from
Python, from its flag, from a Label Studio project's extra_params and from a hand-edited manifest; and a command
reads and checks the store's manifest once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import samcl.store.files
import samcl.store.manifest
from samcl import SamclError, SelectorConfig, TrainConfig
from samcl.cli import main
from samcl.cli.errors import error_line
from samcl.inference import AutoMaskConfig
from samcl.method import AugModuleConfig
from samcl.options import ConfigError
from samcl.serve import LabelStudioSettings, ServeConfig

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1-fecam"  # on builtin:tiny-sam


def refused(make) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        make()
    return caught.value


@pytest.mark.parametrize("make, field, line", [
    (lambda: TrainConfig(epochs=0), "TrainConfig.epochs", "TrainConfig.epochs 0: expected an integer from 1 to 100,000"),
    (lambda: TrainConfig(lr="0.1"), "TrainConfig.lr", "TrainConfig.lr '0.1': expected a number >= 0"),
    (lambda: SelectorConfig(kind="knn"), "SelectorConfig.kind",
     "SelectorConfig.kind 'knn': expected one of mlp, ncm, fecam, ranpac"),
    (lambda: AutoMaskConfig(points_per_side=True), "AutoMaskConfig.points_per_side",
     "AutoMaskConfig.points_per_side True: expected an integer from 1 to 1,024"),
    (lambda: ServeConfig(store=Path("s"), port=70000), "ServeConfig.port",
     "ServeConfig.port 70000: expected an integer from 1 to 65,535"),
    (lambda: LabelStudioSettings(max_masks=0), "LabelStudioSettings.max_masks",
     "LabelStudioSettings.max_masks 0: expected an integer from 1 to 1,000"),
    (lambda: AugModuleConfig(dim=8, adapted_blocks=(1,), neck_channels=0, rank=0), "AugModuleConfig.rank",
     "AugModuleConfig.rank 0: expected an integer >= 1"),
])
def test_a_refused_field_is_one_error_naming_field_value_and_range(make, field, line):
    error = refused(make)
    assert isinstance(error, SamclError) and isinstance(error, ValueError)
    assert (str(error), error.field, error.code) == (line, field, "invalid")


def test_an_integer_for_a_float_field_reaches_the_trainer_as_given():
    assert type(TrainConfig(lr=1).lr) is int and type(TrainConfig(lr=0.5).lr) is float
    assert TrainConfig().cache_bytes == 1 << 30 and type(TrainConfig().cache_bytes) is int


@pytest.mark.parametrize("argv, line", [
    (["learn", "S", "--domain", "x", "--data", "D", "--epochs", "0"], "expected an integer from 1 to 100,000, got '0'"),
    (["serve", "S", "--port", "70000"], "expected an integer from 1 to 65,535, got '70000'"),
    (["serve", "S", "--label-studio-max-masks", "0"], "expected an integer from 1 to 1,000, got '0'"),
    (["serve", "S", "--max-upload-mb", "0"], "expected a number > 0 and <= 4096, got '0'"),
    (["segment", "S", "i.png", "--out", "m.png", "--points-per-side", "2000"],
     "expected an integer from 1 to 1,024, got '2000'"),
])
def test_a_flag_refuses_what_its_field_refuses_with_the_fields_range(capsys, argv, line):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert line in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("flag, config, name, scale", [
    ("--port", ServeConfig, "port", 1), ("--batch-window-ms", ServeConfig, "batch_window_ms", 1),
    ("--cache-mb", ServeConfig, "cache_bytes", 2**20), ("--max-megapixels", ServeConfig, "max_megapixels", 1),
    ("--reload-seconds", ServeConfig, "reload_seconds", 1), ("--threads", ServeConfig, "threads", 1),
    ("--train-every", LabelStudioSettings, "train_every", 1), ("--train-epochs", LabelStudioSettings, "epochs", 1),
    ("--learn-max-megapixels", LabelStudioSettings, "max_learn_megapixels", 1),
    ("--tracker-max-sessions", ServeConfig, "tracker_max_sessions", 1),
    ("--tracker-max-objects", ServeConfig, "tracker_max_objects", 1),
    ("--tracker-idle-seconds", ServeConfig, "tracker_idle_seconds", 1),
])
def test_serve_flags_take_exactly_what_their_fields_take(flag, config, name, scale):
    import argparse

    from samcl.cli.parser import build_parser

    sub = next(a for a in build_parser("serve")._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["serve"]._actions if flag in a.option_strings)
    field = next(f for f in __import__("dataclasses").fields(config) if f.name == name)
    assert action.help.startswith(field.metadata["help"])
    assert action.default == (field.default if scale == 1 else field.default / scale)
    required = {"store": Path("s")} if config is ServeConfig else {}
    for text in ("-1", "0", "0.01", "0.5", "1", "3", "1000", "1e5", "1e9", "nan", "x"):
        given = _number(text) if scale == 1 else int(float(text) * scale) if text[-1].isdigit() else None
        try:
            action.type(text)
        except argparse.ArgumentTypeError:
            if given is not None:
                with pytest.raises(ConfigError):
                    config(**required, **{name: given})
            continue
        config(**required, **{name: given})


def test_serve_no_fallback_is_made_from_its_bool_field_and_turns_it_off():
    import argparse

    from samcl.cli.parser import build_parser

    sub = next(a for a in build_parser("serve")._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["serve"]._actions if "--no-fallback" in a.option_strings)
    assert action.dest == "fallback" and action.default is True
    assert __import__("samcl.options").options.help_of(ServeConfig, "fallback") in action.help
    parse = sub.choices["serve"].parse_args
    assert parse(["S"]).fallback is True and parse(["S", "--no-fallback"]).fallback is False


def _number(text: str):
    """The text as the JSON or Python value a library caller would give."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_extra_params_refuse_a_setting_with_the_same_line():
    from samcl.serve.errors import ApiError
    from samcl.serve.label_studio.settings import ProjectSettings

    project = ProjectSettings(3)
    for extra, line in (({"epochs": 5000}, "extra_params.epochs 5000: expected an integer from 0 to 1,000"),
                        ('{"train_every": "5"}', "extra_params.train_every '5': expected an integer from 0 to "
                                                 "1,000,000"),
                        ({"pin": 1}, "extra_params.pin 1: expected one of True, False"),
                        ({"colour": "red"}, "extra_params: unknown field 'colour'"),
                        ({"domain": "base"}, "extra_params.domain 'base': use letters")):
        with pytest.raises(ApiError) as caught:
            project.update(extra)
        assert (caught.value.status, caught.value.code) == (400, "bad_extra_params")
        assert caught.value.message.startswith(line), caught.value.message
    project.update({"epochs": 0, "pin": False, "domain": "polyps"})
    assert (project.epochs, project.pin, project.domain, project.train_every) == (0, False, "polyps", None)


def test_a_hand_edited_manifest_is_refused_naming_the_field_and_its_range(tmp_path, capsys):
    store = Path(shutil.copytree(FIXTURE, tmp_path / "s"))
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["selector"]["config"]["frr"] = 0.7
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert main(["info", str(store)]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"samcl: error: {store / 'manifest.json'}: malformed manifest (selector config frr 0.7: expected "
                    "a number >= 0 and < 0.5)") or line.endswith("expected a number >= 0 and < 0.5)"), line
    assert str(store / "manifest.json") in line and len(line.splitlines()) == 1
    with pytest.raises(SamclError, match=r"malformed manifest \(selector config frr 0.7: expected a number >= 0 "):
        samcl.store.files.ModuleStore(store).read_manifest()


def test_segment_reads_and_checks_the_manifest_once(tmp_path, capsys, monkeypatch):
    store = Path(shutil.copytree(FIXTURE, tmp_path / "s"))
    image = tmp_path / "i.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(image)
    reads, checks = [], []
    real_bytes, real_check = samcl.store.manifest.manifest_bytes, samcl.store.files.check_manifest
    monkeypatch.setattr(samcl.store.manifest, "manifest_bytes", lambda *a: reads.append(1) or real_bytes(*a))
    monkeypatch.setattr(samcl.store.files, "check_manifest", lambda *a: checks.append(1) or real_check(*a))
    code = main(["segment", str(store), str(image), "--point", "5,5", "--out", str(tmp_path / "m.png"),
                 "--runtime", "torch", "--json"])
    assert code == 0, capsys.readouterr().err
    assert len(reads) == 1 and len(checks) == 1, (len(reads), len(checks))


def test_error_line_shows_a_serve_field_as_its_flag():
    assert error_line(refused(lambda: ServeConfig(store=Path("s"), port=0))).startswith("--port 0: expected")


def test_every_flag_made_from_a_field_is_in_the_one_table():
    from samcl.cli.errors import FLAGS
    from samcl.cli.parser import build_parser
    from samcl.cli.shared_flags import CONFIG_FLAGS

    build_parser()
    assert len(CONFIG_FLAGS) > 30 and {k: FLAGS.get(k) for k in CONFIG_FLAGS} == CONFIG_FLAGS


def test_the_generate_body_documents_the_generator_fields():
    from samcl.serve.schemas import GenerateRequest

    described = GenerateRequest.model_json_schema()["properties"]
    for field in __import__("dataclasses").fields(AutoMaskConfig):
        if field.name != "output_mode":
            assert described[field.name]["description"].startswith(field.metadata["help"]), field.name
