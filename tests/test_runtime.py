"""Graph runtimes behind the engine: the exported graphs compute what torch computes (logits within 1e-3
relative, identical routing), one suffix graph serves mixed-domain batches, graphs are built once per base and
cached, the decoder speaks Meta's ONNX interface exactly, and the store never depends on the runtime."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import toy_samples
from meta_sam import build_meta_sam, load_meta_onnx_model

from samcl import SAMCL, Prompt, SamclError, SelectorConfig, TrainConfig, load_backbone, runtime
from samcl.backbone import SamBackbone
from samcl.backbone.meta import sam_model_from_state_dict
from samcl.cli import main
from samcl.method import AugModuleConfig
from samcl.runtime import export as export_module
from samcl.runtime.graphs import export_decoder
from samcl.cli.errors import error_line

pytest.importorskip("onnxruntime")
FAST = TrainConfig(epochs=1, batch_size=2, progress=False)
COLOURS = {"red": ((200, 30, 30), 0), "blue": ((30, 30, 200), 1), "green": ((30, 200, 30), 2)}
GRAPH_RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not runtime.installed("openvino"), reason="openvino is not installed (pip install 'samcl[openvino]')"))]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three learned domains on the shipped tiny SAM (the fecam selector: open-set fallback on)."""
    root = tmp_path_factory.mktemp("runtime") / "set"
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), root, device="cpu",
                         selector=SelectorConfig(samples_per_domain=6, epochs=100))
    for name, (colour, seed) in COLOURS.items():
        samcl.learn(name, toy_samples(6, colour, seed), FAST)
    return root


def sample_images():
    images, prompts = [], []
    for colour, seed in COLOURS.values():
        for sample in toy_samples(3, colour, seed + 10):
            images.append(sample.image)
            prompts.append(Prompt.of(sample.points))
    images.append(np.full((90, 60, 3), 128, np.uint8))  # grey: no learned domain, a fallback candidate
    prompts.append(Prompt.of([[30, 40]], [1], [5, 5, 50, 80]))
    return images, prompts


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", GRAPH_RUNTIMES)
@pytest.mark.parametrize("fallback", [True, False])
def test_graph_runtime_matches_torch_logits_and_routing(store, name, fallback):
    images, prompts = sample_images()
    eager = SAMCL.open(store, device="cpu", fallback=fallback)
    graphs = SAMCL.open(store, device="cpu", fallback=fallback, runtime=name, precision="float32")
    assert (eager.runtime, graphs.runtime) == ("torch", name)
    for multimask in (False, True):
        a = eager.segment(images, prompts, multimask_output=multimask)
        b = graphs.segment(images, prompts, multimask_output=multimask)
        assert [r.domain for r in a] == [r.domain for r in b]
        assert [r.domain_score for r in a] == pytest.approx([r.domain_score for r in b], abs=1e-4)
        for x, y in zip(a, b):
            assert x.low_res.shape == y.low_res.shape == (3 if multimask else 1, 64, 64)
            assert relative(y.low_res, x.low_res) < 1e-3
    assert len({r.domain for r in a}) >= 3  # the selector really discriminates


def test_mixed_domain_batch_through_graphs_equals_each_image_alone(store):
    images, prompts = sample_images()
    graphs = SAMCL.open(store, device="cpu", runtime="onnxruntime")
    forced = (["red", "blue", "base", "green"] * 3)[: len(images)]
    together = graphs.segment(images, prompts, force=forced)
    for j, result in enumerate(together):
        alone = graphs.segment([images[j]], [prompts[j]], force=forced[j])[0]
        assert result.domain == alone.domain == forced[j]
        assert relative(result.low_res, alone.low_res) < 1e-5


def test_predictor_prompt_only_rerun_on_graphs_matches_segment(store):
    graphs = SAMCL.open(store, device="cpu", runtime="onnxruntime")
    images, prompts = sample_images()
    predictor = graphs.predictor()
    for image, prompt in zip(images[::4], prompts[::4]):
        predictor.set_image(image)
        for points in (prompt.points, prompt.points[:1]):  # two prompts on one prefix
            masks, scores, low_res = predictor.predict(points, np.ones(len(points)), multimask_output=False)
            result = graphs.segment([image], [Prompt.of(points)])[0]
            assert predictor.domain == result.domain
            np.testing.assert_allclose(low_res, result.low_res_logits, atol=1e-4)
            assert (masks == result.masks).mean() > 0.999


def test_mask_input_reaches_the_decoder_graph_as_the_torch_decoder(store):
    """A previous prediction's low-res logits (`mask_input`) go through the decoder graph's `mask_input` with
    `has_mask_input` 1, and give what the torch decoder gives."""
    graphs = SAMCL.open(store, device="cpu", runtime="onnxruntime")
    eager = SAMCL.open(store, device="cpu")
    images, prompts = sample_images()
    answers = []
    for samcl in (graphs, eager):
        predictor = samcl.predictor()
        predictor.set_image(images[0], force="base")
        _, _, low_res = predictor.predict(prompts[0].points[:1], np.ones(1), multimask_output=False)
        answers.append(predictor.predict(prompts[0].points, np.ones(len(prompts[0].points)), mask_input=low_res,
                                         multimask_output=False)[2])
        without = predictor.predict(prompts[0].points, np.ones(len(prompts[0].points)), multimask_output=False)[2]
        assert np.abs(answers[-1] - without).max() > 1e-3
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-4)


def test_graphs_are_built_once_per_base_and_settings(store, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMCL_CACHE_DIR", str(tmp_path / "cache"))
    builds = []
    original = export_module.export_graphs
    monkeypatch.setattr(export_module, "export_graphs", lambda *a: builds.append(1) or original(*a))
    for _ in range(2):
        SAMCL.open(store, device="cpu", runtime="onnxruntime").segment(*map(lambda v: v[:1], sample_images()))
    entries = list((tmp_path / "cache" / "graphs").iterdir())
    assert len(builds) == 1 and len(entries) == 1
    settings = json.loads((entries[0] / "graphs.json").read_text())["settings"]
    assert settings["backbone"]["weights_sha256"] == SAMCL.open(store, device="cpu").module_set.backbone[
        "weights_sha256"] and settings["selector_block"] == 3


def test_store_contents_and_routing_do_not_depend_on_the_runtime(store):
    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(store).rglob("*"))
                if p.is_file()}

    before = digest()
    graphs = SAMCL.open(store, device="cpu", runtime="onnxruntime")
    graphs.segment(*sample_images())
    graphs.predictor().set_image(sample_images()[0][0])
    assert digest() == before


def test_export_folder_holds_each_weight_once_and_the_rows_of_every_domain(store, tmp_path, capsys):
    import onnx
    from safetensors.numpy import load_file

    out = tmp_path / "export"
    assert main(["export", str(store), str(out), "--json"]) == 0
    description = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "modules.safetensors", "prefix.onnx",
                                                    "samcl_export.json", "selector.safetensors", "suffix.onnx"]
    assert json.loads((out / "samcl_export.json").read_text()) == description
    samcl = SAMCL.open(store, device="cpu")
    rows = load_file(out / "modules.safetensors")
    for entry in description["domains"]:
        module = samcl.module_set.modules[entry["name"]]
        for name, tensor in module.named_tensors().items():
            np.testing.assert_array_equal(rows[name][entry["row"]], tensor.detach().numpy())
    assert all(not rows[name][0].any() for name in rows)  # row 0: the base
    weights = sum(p.numel() for p in samcl.backbone.model.parameters())
    stored = sum(int(np.prod(t.dims)) for g in ("prefix", "suffix", "decoder")
                 for t in onnx.load(str(out / f"{g}.onnx")).graph.initializer)
    assert weights * 0.9 < stored < weights * 1.1  # each weight once, not once per domain
    assert main(["export", str(store), str(out)]) == 2  # an existing export is never overwritten
    assert "not an empty folder" in capsys.readouterr().err


def test_decoder_graph_equals_metas_own_onnx_model_on_the_same_weights(tmp_path):
    """Meta's SAM (its own modeling code, random weights), imported by samcl's key mapping; our decoder graph on
    ONNX Runtime against Meta's `SamOnnxModel` (return_single_mask=False) for points, a box and a mask input."""
    import onnxruntime as ort

    SamOnnxModel = load_meta_onnx_model()
    torch.manual_seed(0)
    meta = build_meta_sam(image_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                          encoder_global_attn_indexes=(1,), window_size=3, prompt_embed_dim=32,
                          decoder_mlp_dim=64, iou_head_hidden_dim=32).eval()
    backbone = SamBackbone(sam_model_from_state_dict(meta.state_dict(), "meta"))
    export_decoder(backbone, tmp_path / "decoder.onnx")
    session = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    reference = SamOnnxModel(meta, return_single_mask=False)
    generator = torch.Generator().manual_seed(1)
    cases = {"points": (torch.tensor([[[10.0, 20.0], [40.0, 33.0], [0.0, 0.0]]]), torch.tensor([[1.0, 0.0, -1.0]])),
             "points and box": (torch.tensor([[[30.0, 30.0], [5.0, 8.0], [50.0, 60.0]]]),
                                torch.tensor([[1.0, 2.0, 3.0]]))}
    for has_mask in (0.0, 1.0):
        for coords, labels in cases.values():
            inputs = (torch.randn(1, 32, 8, 8, generator=generator), coords, labels,
                      torch.randn(1, 1, 32, 32, generator=generator), torch.tensor([has_mask]),
                      torch.tensor([45.0, 70.0]))
            theirs = [t.numpy() for t in reference(*inputs)]
            ours = session.run(None, dict(zip([i.name for i in session.get_inputs()], [t.numpy() for t in inputs])))
            assert ours[0].shape == (1, 4, 45, 70)
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_unsupported_sets_are_refused_naming_the_reason(store):
    from test_sam2 import tiny_sam2

    with pytest.raises(SamclError, match="SAM 2"):
        SAMCL.create(tiny_sam2(), None, device="cpu").set_runtime("onnxruntime")
    imported = SAMCL.open(store, device="cpu")
    config = imported.aug_config
    imported.module_set.aug_config = AugModuleConfig(**{**config.__dict__, "heat_mode": "reference"})
    with pytest.raises(SamclError, match="heat mode 'reference'"):
        imported.set_runtime("onnxruntime")
    with pytest.raises(SamclError, match="float32 only"):
        SAMCL.open(store, device="cpu", runtime="onnxruntime", precision="bfloat16")


def test_auto_runs_torch_for_sets_the_graphs_do_not_cover(store, tmp_path, monkeypatch, capsys):
    """SAM 2 (and SAM 3) bases and imported modules have no graphs: auto picks torch for them where a graph runtime
    is installed and first in the order (it picked the graph runtime, and segment, eval and serve failed)."""
    from test_sam2 import tiny_sam2

    monkeypatch.setattr(runtime, "AUTO_ORDER", ("onnxruntime", "torch"))
    assert runtime.resolve("auto", "cpu") == "onnxruntime" and runtime.resolve("auto", "cpu", graphs=False) == "torch"
    sam2 = SAMCL.create(tiny_sam2(), tmp_path / "sam2", device="cpu")
    sam2.learn("red", toy_samples(2, COLOURS["red"][0], 0), FAST)
    assert sam2.set_runtime("auto") == "torch"
    assert SAMCL.open(tmp_path / "sam2", base=tiny_sam2(), device="cpu", runtime="auto").runtime == "torch"
    assert main(["info", str(tmp_path / "sam2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"]["auto"] == "torch"
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"]["auto"] == "onnxruntime"
    imported = SAMCL.open(store, device="cpu")
    imported.module_set.aug_config = AugModuleConfig(**{**imported.aug_config.__dict__, "heat_mode": "reference"})
    assert imported.set_runtime("auto") == "torch"


def test_missing_openvino_is_one_line_and_exit_2(store, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(runtime, "installed", lambda name: name != "openvino")
    sample = toy_samples(1, (200, 30, 30), 9)[0]
    Image.fromarray(sample.image).save(tmp_path / "red.png")
    code = main(["segment", str(store), str(tmp_path / "red.png"), "--point", "10,10", "--out",
                 str(tmp_path / "m.png"), "--runtime", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["samcl: error: --runtime openvino: openvino is not installed "
                                 "(pip install 'samcl[openvino]')"]
    assert not (tmp_path / "m.png").exists()


def test_cli_segment_on_onnxruntime_writes_the_torch_mask(store, tmp_path, capsys):
    from PIL import Image

    sample = toy_samples(1, (30, 30, 200), 9)[0]
    Image.fromarray(sample.image).save(tmp_path / "blue.png")
    x, y = sample.points[0]
    masks = {}
    for name in ("torch", "onnxruntime"):
        assert main(["--device", "cpu", "segment", str(store), str(tmp_path / "blue.png"), "--point", f"{x:g},{y:g}",
                     "--out", str(tmp_path / f"{name}.png"), "--runtime", name, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["results"][0]["domain"] == "blue"
        masks[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert (masks["torch"] == masks["onnxruntime"]).mean() > 0.999


def test_auto_picks_the_first_installed_of_the_measured_order(monkeypatch, store, capsys):
    monkeypatch.setattr(runtime, "AUTO_ORDER", ("openvino", "torch"))
    monkeypatch.setattr(runtime, "installed", lambda name: name != "openvino")
    assert runtime.resolve("auto", "cpu") == "torch" and runtime.resolve("auto", "cuda") == "torch"
    monkeypatch.setattr(runtime, "installed", lambda name: True)
    assert runtime.resolve("auto", "cpu") == "openvino" and runtime.resolve(None, "cuda:0") == "torch"
    with pytest.raises(SamclError, match="runtime 'onnxruntime' runs on the CPU") as raised:
        runtime.resolve("onnxruntime", "cuda")
    assert raised.value.field == "runtime" and "--" not in str(raised.value)  # the library names no flag
    assert error_line(raised.value).startswith("--runtime onnxruntime runs on the CPU: use device 'cpu', or --runtime torch")
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"]["auto"] == "openvino"


def vit_b_shaped(size: int = 256) -> SamBackbone:
    """SAM ViT-B's encoder (768 wide, 12 blocks, 12 heads, window 14, global blocks 2, 5, 8, 11) at 256 px: a 16 x
    16 grid, so windows are padded; random weights."""
    from transformers import SamConfig

    config = SamConfig()
    prompt = {k: v for k, v in config.prompt_encoder_config.to_dict().items() if k != "image_embedding_size"}
    config = SamConfig(vision_config={**config.vision_config.to_dict(), "image_size": size},
                       prompt_encoder_config={**prompt, "image_size": size},
                       mask_decoder_config=config.mask_decoder_config.to_dict())
    return SamBackbone.from_config(config, seed=0)


def test_vit_b_shaped_graphs_match_torch_with_trained_like_modules():
    from samcl.method import AugModule
    from samcl.store import DomainEntry

    samcl = SAMCL.create(vit_b_shaped(), None, device="cpu")
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        module = AugModule(samcl.aug_config, generator=generator).requires_grad_(False)
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)  # every up-projection non-zero
        samcl.module_set.modules[name] = module
        samcl.module_set.domains.append(DomainEntry(name, "module"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (192, 256, 3), dtype=np.uint8) for _ in range(3)]
    prompts = [Prompt.of([[40.0 + 50 * j, 60.0], [200.0, 150.0]], [1, 0]) for j in range(3)]
    domains = ["a", "b", "base"]
    eager = samcl.segment(images, prompts, force=domains, multimask_output=True)
    pooled = torch.stack([p.pooled for p in samcl.engine.prepare(images)])
    samcl.set_runtime("onnxruntime")
    graphs = samcl.segment(images, prompts, force=domains, multimask_output=True)
    graph_pooled = torch.stack([p.pooled for p in samcl.engine.prepare(images)])
    assert relative(graph_pooled, pooled) < 1e-4  # the selector's input
    for x, y in zip(eager, graphs):
        assert relative(y.low_res, x.low_res) < 1e-3 and (x.masks == y.masks).mean() > 0.999


def test_server_on_onnxruntime_answers_the_torch_masks(store):
    """`samcl serve --runtime onnxruntime`: the server's own batching (uploads, selection, one suffix for the
    batch, decoding by prompt shape) on the graphs gives the masks and domains of the torch engine."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from serve_helpers import png

    from samcl.serve import ServeConfig, create_app

    images, prompts = sample_images()
    expected = SAMCL.open(store, device="cpu").segment(images[:4], prompts[:4])
    with TestClient(create_app(ServeConfig(store=store, device="cpu", runtime="onnxruntime"))) as c:
        for image, prompt, result in zip(images, prompts, expected):
            upload = c.post("/v1/images", content=png(image)).json()
            answer = c.post("/v1/segment", json={"image_id": upload["image_id"], "points": prompt.points.tolist(),
                                                 "labels": prompt.labels.tolist(), "mask_format": "rle"}).json()
            assert answer["domain"] == result.domain
            assert answer["score"] == pytest.approx(float(result.scores[0]), abs=1e-4)


@pytest.mark.parametrize("variant", [{"shared_down": False, "prompt_augmentation": False, "target": "qkv"},
                                     {"prompt_augmentation": False}, {"shared_down": False}],
                         ids=["qkv-lora", "no-prompt", "per-block-down"])
def test_module_variants_run_on_graphs_as_on_torch(tiny_backbone, variant):
    """The baselines' variants (PEFT-style qkv LoRA, no prompt augmentation, per-block A) in a mixed batch."""
    from samcl.method import AugModule, config_for
    from samcl.store import DomainEntry

    samcl = SAMCL.create(tiny_backbone, None, device="cpu")
    samcl.module_set.aug_config = config_for(tiny_backbone.site, **variant)
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        module = AugModule(samcl.aug_config, generator=generator).requires_grad_(False)
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
        samcl.module_set.modules[name] = module
        samcl.module_set.domains.append(DomainEntry(name, "module"))
    samcl.engine.forget_bank()
    images, prompts = sample_images()
    domains = (["a", "b", "base"] * 4)[: len(images)]
    eager = samcl.segment(images, prompts, force=domains)
    samcl.set_runtime("onnxruntime")
    for x, y in zip(eager, samcl.segment(images, prompts, force=domains)):
        assert relative(y.low_res, x.low_res) < 1e-3
