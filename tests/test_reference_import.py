"""`samcl import-reference`: the authors' files read without running their pickles, mapped one to one onto a
samcl store (modules, selector), sizes checked against the base, and what an imported store refuses."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from reference_files import fake_authors_package, selector_state, write_module_file, write_reference_dir
from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

from samcl import SAMCL, ReferenceFileError, SamclError
from samcl.backbone import Sam2Backbone, SamBackbone
from samcl.backbone.base import AdaptationSite
from samcl.cli import main
from samcl.reference import load_reference_file
from samcl.reference.importer import read_module

TINY_BLOCKS, TINY_DIM, TINY_NECK = (4, 5), 128, 64  # the builtin tiny SAM: 6 blocks, selector block 3

def hiera_t_site() -> AdaptationSite:
    """The real SAM 2 Hiera-T site (transformers' default Sam2Config), built on the meta device."""
    with torch.device("meta"):
        backbone = Sam2Backbone(Sam2Model(Sam2Config()))
    assert backbone.default_selector_block == 5 and backbone.site.dim == 384
    return backbone.site


def vit_b_site() -> AdaptationSite:
    """The real ViT-B site, from a SamBackbone built on the meta device (no weights, no memory)."""
    with torch.device("meta"):
        backbone = SamBackbone(SamModel(SamConfig()))
    assert backbone.default_selector_block == 6
    return backbone.site


def test_vit_b_file_maps_one_to_one_at_real_shapes(tmp_path):
    obj = write_module_file(tmp_path / "Kvasir.pth", 768, [7, 8, 9, 10, 11], neck=256)
    module, facts = read_module(tmp_path / "Kvasir.pth", vit_b_site())
    assert (facts["tensors"], facts["values"], module.config.num_parameters) == (40, 61_524, 61_524)
    assert module.config.heat_mode == "reference" and module.config.adapted_blocks == (7, 8, 9, 10, 11)
    got = module.state_tensors()
    pairs = {"a": obj["A"], "heat": obj["extra"].layer, "heat_ln": obj["extra"].norm,
             "neck_in": obj["extra"].upward, "neck_out": obj["extra"].upward_}
    for name, layer in pairs.items():
        assert torch.equal(got[f"{name}.weight"], layer.weight) and torch.equal(got[f"{name}.bias"], layer.bias)
    for i in range(5):
        for name, key in (("b", "B"), ("ln1", "norm1"), ("ln2", "norm2")):
            assert torch.equal(got[f"{name}.weight"][i], obj[f"{key}_{i:03d}"].weight)
            assert torch.equal(got[f"{name}.bias"][i], obj[f"{key}_{i:03d}"].bias)


def test_sam2_hiera_t_file_maps_at_real_shapes(tmp_path):
    write_module_file(tmp_path / "ISIC.pth", 384, [6, 7, 8, 9], sam2=True)
    module, facts = read_module(tmp_path / "ISIC.pth", hiera_t_site())
    assert facts["values"] == 21_036 and facts["reference_class"] == "module.SAMCL_2.Extra"
    assert module.config.neck_channels == 0 and not module.config.has_neck


def test_file_for_the_other_base_is_refused_with_one_line(tmp_path):
    write_module_file(tmp_path / "ISIC.pth", 384, [6, 7, 8, 9], sam2=True)
    with pytest.raises(SamclError, match=r"ISIC.pth: its modules are 384 wide .* SAM ViT-B base"):
        read_module(tmp_path / "ISIC.pth", vit_b_site())
    write_module_file(tmp_path / "Kvasir.pth", 768, [7, 8, 9, 10, 11], neck=256)
    with pytest.raises(SamclError, match=r"Kvasir.pth: its modules are 768 wide"):
        read_module(tmp_path / "Kvasir.pth", hiera_t_site())


class Planted:
    """Unpickling this would call os.system (writing a file) if the loader trusted the pickle's globals."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_malicious_pickle_never_runs(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "Kvasir.pth"
    with fake_authors_package("module.SAMCL") as package:
        torch.save({"extra": package.Extra(10, 8, 0), "lora_layer": [1], "A": Planted(target)}, path)
    with pytest.raises(ReferenceFileError) as caught:
        load_reference_file(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: holds the global ")
    assert "system" in message and not target.exists()
    # the same through the command: one line, exit 2, nothing written
    out = tmp_path / "store"
    torch.save(selector_state(8, 2), tmp_path / "Module_Selector.pth")
    assert main(["import-reference", str(tmp_path), str(out), "--base", "builtin:tiny-sam",
                 "--domains", "Kvasir,COCO"]) == 2
    assert not target.exists() and not out.exists()


def test_unlisted_class_and_bad_storage_are_refused(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"a": torch.nn.Conv2d(1, 1, 1)}, path)
    with pytest.raises(ReferenceFileError, match="torch.nn.modules.conv.Conv2d"):
        load_reference_file(path)
    torch.save({"w": torch.arange(6.0)}, path)  # a storage shorter than its tensor claims: refused, not read past
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    key = next(n for n in members if "/data/" in n)
    members[key] = members[key][:8]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ReferenceFileError, match="storage"):
        load_reference_file(path)
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ReferenceFileError, match="legacy"):
        load_reference_file(tmp_path / "legacy.pth")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The builtin tiny SAM with a full reference folder imported through the command line."""
    root = tmp_path_factory.mktemp("reference")
    objects = write_reference_dir(root / "SAM1", TINY_DIM, TINY_BLOCKS, TINY_NECK)
    store = root / "store"
    assert main(["import-reference", str(root / "SAM1"), str(store), "--base", "builtin:tiny-sam", "--json"]) == 0
    return root, objects, store


def test_store_holds_exactly_the_files_tensors(imported):
    root, objects, store = imported
    samcl = SAMCL.open(store, device="cpu")
    assert samcl.domains == ["ISTD", "Kvasir", "ISIC", "cod", "camo", "COCO"]
    assert [d.kind for d in samcl.module_set.domains] == ["module"] * 5 + ["no_module"]
    for name, obj in objects.items():
        got = samcl.module_set.modules[name].state_tensors()
        assert torch.equal(got["a.weight"], obj["A"].weight) and torch.equal(got["neck_out.bias"],
                                                                             obj["extra"].upward_.bias)
        assert torch.equal(got["b.weight"][1], obj["B_001"].weight)
        assert torch.equal(got["ln2.bias"][0], obj["norm2_000"].bias)
        assert torch.equal(got["heat_ln.weight"], obj["extra"].norm.weight)
    mapping = {"layer1": "features.0", "norm1": "features.1", "layer2": "features.2", "norm2": "features.3",
               "layer3": "features.5", "norm3": "features.6", "layer4": "head"}
    expected = selector_state(TINY_DIM, 6)
    state = samcl.module_set.selector.net.state_dict()
    assert len(state) == len(expected)
    for key, value in expected.items():
        layer, _, field = key.partition(".")
        assert torch.equal(state[f"{mapping[layer]}.{field}"], value), key
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["augmodule"]["heat_mode"] == "reference" and manifest["buffer"]["count"] == 0
    assert manifest["domains"][1]["info"]["imported_from"] == "Kvasir.pth"


def test_imported_store_refuses_learn(imported, tmp_path):
    from helpers import toy_samples

    _, _, store = imported
    samcl = SAMCL.open(store, device="cpu")
    with pytest.raises(SamclError, match="imported from the authors' files .* store of their own"):
        samcl.learn("polyps", toy_samples(2, (0, 0, 0), 0))


def test_info_says_the_store_runs_their_forward(imported, capsys):
    assert main(["info", str(imported[2])]) == 0
    out = capsys.readouterr().out
    assert "imported from the authors' files" in out and "0 buffered pooled features" in out


def test_command_errors_are_one_line(tmp_path, capsys):
    root = tmp_path / "SAM1"
    write_reference_dir(root, TINY_DIM, TINY_BLOCKS, TINY_NECK)
    (root / "extra.pth").write_bytes((root / "ISTD.pth").read_bytes())
    assert main(["import-reference", str(root), str(tmp_path / "s"), "--base", "builtin:tiny-sam"]) == 2
    assert "extra.pth: not one of the selector's domains" in capsys.readouterr().err
    (root / "extra.pth").unlink()
    assert main(["import-reference", str(root), str(tmp_path / "s"), "--base", "builtin:tiny-sam",
                 "--domains", "ISTD,Kvasir,ISIC,cod,camo"]) == 2
    assert "6 domains, but 5 were named" in capsys.readouterr().err
    assert main(["import-reference", str(tmp_path / "nowhere"), str(tmp_path / "s"), "--base",
                 "builtin:tiny-sam"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Module_Selector.pth" in err
    assert not (tmp_path / "s").exists()


def test_help_has_an_example(capsys):
    assert main(["import-reference", "--help"]) == 0
    assert "samcl import-reference SAMCL/checkpoint/SAM1" in capsys.readouterr().out


@pytest.mark.parametrize("broken, problem", [
    ({"norm2.running_var": -1.0}, "features.3.running_var holds a negative variance (-1)"),
    ({"layer1.weight": 3e38}, "the selector's outputs on a probe batch of 16 pooled features are not finite"),
])
def test_a_selector_that_cannot_route_is_refused_before_anything_is_written(tmp_path, capsys, broken, problem):
    root = tmp_path / "SAM1"
    write_reference_dir(root, TINY_DIM, TINY_BLOCKS, TINY_NECK)
    state = torch.load(root / "Module_Selector.pth")
    for key, value in broken.items():
        state[key] = torch.full_like(state[key], value)
    torch.save(state, root / "Module_Selector.pth")
    assert main(["import-reference", str(root), str(tmp_path / "s"), "--base", "builtin:tiny-sam"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"samcl: error: {root / 'Module_Selector.pth'}: ") and problem in err
    assert not (tmp_path / "s").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
