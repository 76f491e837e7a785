"""The `samcl` command contract, end to end on a tiny HF-format SAM and two domains of non-square images."""

import json

import numpy as np
import pytest
from conftest import tiny_sam_config
from helpers import write_domain
from PIL import Image
from safetensors.torch import load_file

from samcl.backbone import SamBackbone
from samcl.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(root / "tiny-sam")
    write_domain(root / "red", (200, 30, 30), seed=0)
    write_domain(root / "blue", (30, 30, 200), seed=1)
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_learn_info_segment_eval(workspace, capsys):
    store = workspace / "store"
    code, _, _ = run(capsys, "learn", store, "--base", workspace / "tiny-sam", "--domain", "red",
                     "--data", workspace / "red", "--epochs", "1", "--json")
    assert code == 0
    code, _, _ = run(capsys, "learn", store, "--domain", "blue", "--data", workspace / "blue" / "train",
                     "--epochs", "1", "--json")
    assert code == 0

    code, out, _ = run(capsys, "info", store, "--json")
    info = json.loads(out)
    assert [d["name"] for d in info["domains"]] == ["red", "blue"]
    assert all(d["bytes"] > 0 for d in info["domains"])

    image = workspace / "blue" / "test" / "images" / "img000.png"
    width, height = Image.open(image).size
    code, out, _ = run(capsys, "segment", store, image, "--point", "40,20", "--negative", "2,2",
                       "--out", workspace / "mask.png", "--json")
    result = json.loads(out)["results"][0]  # one shape for one image or several
    assert code == 0 and result["domain"] in ("red", "blue") and isinstance(result["score"], float)
    mask = np.asarray(Image.open(workspace / "mask.png"))
    assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}

    code, out, _ = run(capsys, "eval", store, "--data", f"red={workspace / 'red'}",
                       "--data", f"blue={workspace / 'blue' / 'test'}", "--json")
    scores = json.loads(out)["domains"]
    assert set(scores) == {"red", "blue"}
    for values in scores.values():
        assert {"iou", "f1", "mae", "selector_accuracy"} <= set(values)
        assert 0 <= values["iou"] <= 1 and 0 <= values["selector_accuracy"] <= 1
    code, out, _ = run(capsys, "eval", store, "--data", f"red={workspace / 'red'}")  # the table a person reads
    assert code == 0 and "selector acc" in out and out.rstrip().endswith("precision float32")

    code, out, _ = run(capsys, "info", store)
    assert code == 0 and "red" in out and "MiB" in out


def test_human_errors_exit_2_and_name_the_file(workspace, capsys):
    code, _, err = run(capsys, "learn", workspace / "s2", "--base", workspace / "missing-model",
                       "--domain", "x", "--data", workspace / "red")
    assert code == 2 and "missing-model" in err and "Traceback" not in err
    code, _, err = run(capsys, "info", workspace / "nowhere")
    assert code == 2 and "nowhere" in err
    code, _, err = run(capsys, "learn", workspace / "s3", "--domain", "x", "--data", workspace / "empty")
    assert code == 2 and "empty" in err


def test_json_output_never_prints_nan():
    """--json must be valid JSON: a non-finite score (NaN, inf) comes out as null, and every command prints JSON
    through that one function."""
    import io
    import json
    from contextlib import redirect_stdout
    from pathlib import Path

    import numpy as np

    from samcl.io import print_json

    out = io.StringIO()
    with redirect_stdout(out):
        print_json({"score": float("nan"), "iou": [1.0, float("inf")], "n": np.float32(0.5)})
    assert json.loads(out.getvalue()) == {"score": None, "iou": [1.0, None], "n": 0.5}
    commands = sorted((Path(__file__).resolve().parent.parent / "samcl" / "cli").glob("*.py"))
    assert [p for p in commands if "json.dumps(" in p.read_text()] == []  # all through samcl.io.print_json


def test_learn_trains_with_the_prompt_mix_unless_prompts_reference(workspace, capsys):
    for flags, regime in (((), "mix"), (("--prompts", "reference"), "reference")):
        code, out, _ = run(capsys, "learn", workspace / f"store-{regime}", "--base", workspace / "tiny-sam",
                           "--domain", "red", "--data", workspace / "red", "--epochs", "1", "--json", *flags)
        assert code == 0 and json.loads(out)["train"]["prompts"] == regime
    code, _, err = run(capsys, "learn", workspace / "store-bad", "--domain", "red", "--data", workspace / "red",
                       "--prompts", "boxes")
    assert code == 2 and "--prompts" in err and "reference" in err


def test_learn_selector_features_chosen_at_creation(workspace, capsys):
    """`--selector-features` picks what the selector reads when a store is created (the MLP on mean + spread
    here), `info` says it, and a later learn asking for other features is refused without touching the store."""
    store = workspace / "mlp-std"
    code, _, _ = run(capsys, "learn", store, "--base", workspace / "tiny-sam", "--domain", "red", "--data",
                     workspace / "red", "--epochs", "1", "--selector", "mlp", "--selector-features", "mean_std",
                     "--samples-per-domain", "4", "--selector-epochs", "2", "--json")
    assert code == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["selector"]["kind"] == "mlp" and manifest["selector"]["config"]["features"] == "mean_std"
    buffer = load_file(store / manifest["buffer"]["file"])["embeddings"]
    assert buffer.shape[1] == 2 * 32  # the tiny SAM's hidden size, twice: mean and spread kept
    code, out, _ = run(capsys, "info", store)
    assert code == 0 and "selector mlp on the mean_std of block" in out
    before = {p.name: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    code, _, err = run(capsys, "learn", store, "--domain", "blue", "--data", workspace / "blue", "--epochs", "1",
                       "--selector-features", "mean")
    assert code == 2 and "--selector-features mean" in err and "mean_std" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before
