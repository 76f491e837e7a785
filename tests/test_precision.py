"""Inference precision: the fused attention equals transformers' own, bfloat16 changes neither the selector's
decisions nor the store, and its masks stay close to float32's."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sam_config
from helpers import toy_samples
from transformers import SamConfig
from transformers.models.sam.modeling_sam import SamVisionAttention

from samcl import SAMCL, Prompt, SamclError, SelectorConfig, TrainConfig
from samcl.backbone import SamBackbone
from samcl.backbone import sam as sam_module
from samcl.backbone.sam import attention, rel_pos_bias
from samcl.cli import main
from samcl.inference import precision

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)
COLOURS = {"red": ((200, 30, 30), 0), "blue": ((30, 30, 200), 1), "green": ((30, 200, 30), 2)}


@pytest.mark.parametrize("block", [0, 1], ids=["windowed-padded", "global"])
def test_fused_attention_equals_transformers_attention(tiny_backbone, block):
    """`attention` (SDPA, rel-pos bias as the mask) = transformers' eager attention (explicit softmax) and its
    SDPA variant, in float32, on a window with padding (grid 8, window 3) and on the global grid."""
    layer = tiny_backbone.model.vision_encoder.layers[block]
    config = SamConfig(**tiny_sam_config()).vision_config
    eager = SamVisionAttention(config, layer.window_size).eval()
    eager.load_state_dict(layer.attn.state_dict())
    x = torch.randn(2, 8, 8, 32, generator=torch.Generator().manual_seed(block))
    if layer.window_size > 0:
        x, _ = layer.window_partition(x, layer.window_size)
    with torch.no_grad():
        ours, theirs, sdpa = attention(layer.attn, x), eager(x)[0], layer.attn(x)[0]
    assert layer.attn.use_rel_pos and layer.attn.rel_pos_h.abs().max() > 0  # the bias is really exercised
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, sdpa, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid,batch", [(8, 1), (3, 8)], ids=["global", "windows"])
def test_rel_pos_bias_is_transformers_bias_bit_for_bit_and_contiguous(dtype, grid, batch):
    """Our bias (built contiguous) holds exactly transformers' `get_decomposed_rel_pos` values in
    each precision, so float32 results do not move; theirs is strided and was copied once more per block."""
    config = SamConfig(**tiny_sam_config()).vision_config
    attn = SamVisionAttention(config, window_size=0 if grid == 8 else grid).eval()
    generator = torch.Generator().manual_seed(grid)
    with torch.no_grad():
        attn.rel_pos_h.copy_(torch.randn(attn.rel_pos_h.shape, generator=generator))
        attn.rel_pos_w.copy_(torch.randn(attn.rel_pos_w.shape, generator=generator))
    attn.to(dtype)
    heads, tokens = attn.num_attention_heads, grid * grid
    qkv = torch.randn(batch, tokens, 3, heads, config.hidden_size // heads, generator=generator)
    qkv = qkv.to(dtype).permute(2, 0, 3, 1, 4)
    query = qkv[0]  # strided, as `attention` gets it
    with torch.no_grad():
        theirs = attn.get_decomposed_rel_pos(query.reshape(batch * heads, tokens, -1), attn.rel_pos_h,
                                             attn.rel_pos_w, (grid, grid), (grid, grid))
        ours = rel_pos_bias(attn, query, grid, grid)
    assert ours.is_contiguous() and ours.dtype == dtype and ours.shape == (batch, heads, tokens, tokens)
    assert torch.equal(ours, theirs.reshape(batch, heads, tokens, tokens))


def test_attention_bias_stays_differentiable(tiny_backbone):
    """Training backpropagates through the bias (the query depends on a qkv delta or an earlier adapted block):
    the gradient through `attention` equals the one through transformers' eager attention."""
    layer = tiny_backbone.model.vision_encoder.layers[1]
    config = SamConfig(**tiny_sam_config()).vision_config
    eager = SamVisionAttention(config, layer.window_size).eval()
    eager.load_state_dict(layer.attn.state_dict())
    x = torch.randn(1, 8, 8, 32, generator=torch.Generator().manual_seed(3))
    grads = []
    for run in (lambda v: attention(layer.attn, v), lambda v: eager(v)[0]):
        v = x.clone().requires_grad_(True)
        run(v).square().sum().backward()
        grads.append(v.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [40, 200, 1024])
def test_cpu_attention_in_query_chunks_is_the_same_bit_for_bit(monkeypatch, chunk):
    """Over more than CPU_QUERY_CHUNK tokens, attention runs in chunks of whole query rows (a smaller bias at a
    time): the output equals one call over all queries bit for bit, and gradients agree. Grid 40 x 40 (1,600
    tokens): the default 1,024 (chunks of 25 and 15 rows), 200 (5 rows) and 40 (one row at a time)."""
    config = SamConfig(**tiny_sam_config()).vision_config
    config.image_size = 40 * config.patch_size  # a 40 x 40 global grid
    attn = SamVisionAttention(config, window_size=0).eval()
    generator = torch.Generator().manual_seed(chunk)
    with torch.no_grad():
        attn.rel_pos_h.copy_(torch.randn(attn.rel_pos_h.shape, generator=generator))
        attn.rel_pos_w.copy_(torch.randn(attn.rel_pos_w.shape, generator=generator))
    x = torch.randn(2, 40, 40, config.hidden_size, generator=generator)
    results = []
    for size in (10 ** 9, chunk):  # one call, then chunks
        monkeypatch.setattr(sam_module, "CPU_QUERY_CHUNK", size)
        v = x.clone().requires_grad_(True)
        out = attention(attn, v)
        out.square().sum().backward()
        results.append((out.detach(), v.grad))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)


def test_base_encoder_equals_transformers_vision_encoder(tiny_backbone):
    """The whole encoder on our blocks (prefix + suffix, no module) = transformers' vision encoder."""
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = tiny_backbone.encode(pixels)
        theirs = tiny_backbone.model.vision_encoder(pixels).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("precision")
    tiny_backbone.model.save_pretrained(root / "tiny-sam")
    backbone = SamBackbone.from_pretrained(root / "tiny-sam")
    samcl = SAMCL.create(backbone, root / "set", selector=SelectorConfig(samples_per_domain=6, epochs=300),
                         base_hint=str(root / "tiny-sam"))
    for name, (colour, seed) in COLOURS.items():
        samcl.learn(name, toy_samples(6, colour, seed), FAST)
    return root / "set"


def test_bfloat16_keeps_selector_decisions_and_masks_close(store):
    images, prompts = [], []
    for colour, seed in COLOURS.values():
        for sample in toy_samples(4, colour, seed + 10):
            images.append(sample.image)
            prompts.append(Prompt.of(sample.points))
    # closed-set routing (no open-set fallback), so every image shows which domain the selector picked
    full = SAMCL.open(store, device="cpu", precision="float32", fallback=False)
    half = SAMCL.open(store, device="cpu", precision="bfloat16", fallback=False)
    assert (full.precision, half.precision) == ("float32", "bfloat16")
    assert half.backbone.encoder_dtype == torch.bfloat16 and half.backbone.dtype == torch.float32
    a, b = full.segment(images, prompts), half.segment(images, prompts)
    assert [r.domain for r in a] == [r.domain for r in b]
    assert len({r.domain for r in a}) == 3  # the selector really discriminates
    agreement = np.mean([(x.masks == y.masks).mean() for x, y in zip(a, b)])
    assert agreement > 0.97


def test_store_contents_do_not_depend_on_precision(store):
    """Opening and segmenting in bfloat16 writes nothing; learning refuses (it would embed with the bfloat16
    encoder), naming the fix; the files are byte for byte what float32 left."""
    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(store).rglob("*"))
                if p.is_file()}

    before = digest()
    half = SAMCL.open(store, device="cpu", precision="bfloat16")
    sample = toy_samples(1, (200, 30, 30), 5)[0]
    half.segment([sample.image], [Prompt.of(sample.points)])
    half.predictor().set_image(sample.image)
    with pytest.raises(SamclError, match="precision='float32'"):
        half.learn("more", toy_samples(4, (90, 90, 90), 7), FAST)
    assert digest() == before


def test_predictor_in_bfloat16_matches_segment(store):
    samcl = SAMCL.open(store, device="cpu")
    sample = toy_samples(1, (30, 30, 200), 21)[0]
    early = samcl.predictor()
    early.set_image(sample.image)
    predictor = samcl.predictor(precision="bfloat16")
    with pytest.raises(RuntimeError, match="call set_image"):
        early.predict(sample.points, np.ones(3))
    predictor.set_image(sample.image)
    masks, _, _ = predictor.predict(sample.points, np.ones(3), multimask_output=False)
    result = samcl.segment([sample.image], [Prompt.of(sample.points)])[0]
    assert predictor.precision == "bfloat16" and predictor.domain == result.domain
    np.testing.assert_array_equal(masks, result.masks)
    with pytest.raises(SamclError, match="load the base again"):
        samcl.set_precision("float32")


def test_auto_reads_native_bf16_from_cpu_flags(tmp_path, monkeypatch):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert precision.native_bf16(with_bf16) and not precision.native_bf16(without)
    assert not precision.native_bf16(tmp_path / "absent")
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(precision, "AUTO_BF16", True)
    assert precision.resolve("auto", "cpu") == "bfloat16" and precision.resolve("auto", "cuda") == "float32"
    monkeypatch.setattr(precision, "AUTO_BF16", False)
    assert precision.resolve("auto", "cpu") == "float32" and precision.resolve("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(precision, "AUTO_BF16", True)
    monkeypatch.setattr(precision, "native_bf16", lambda: False)  # emulated bfloat16 is slower: float32
    assert precision.resolve("auto", "cpu") == "float32" and "no native bfloat16" in precision.describe_auto()
    with pytest.raises(ValueError, match="precision 'fp8'"):
        precision.resolve("fp8")


def test_cpu_name_is_the_model_name_of_cpuinfo_else_platforms(tmp_path):
    import platform

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu avx2\n")
    assert precision.cpu_name(cpuinfo) == "Some CPU @ 2.0GHz" and precision.cpu_flags(cpuinfo) == {"fpu", "avx2"}
    assert precision.cpu_name(tmp_path / "absent") == (platform.processor() or platform.machine())


def test_cli_segment_in_bfloat16(store, tmp_path, capsys):
    sample = toy_samples(1, (200, 30, 30), 9)[0]
    from PIL import Image
    Image.fromarray(sample.image).save(tmp_path / "red.png")
    x, y = sample.points[0]
    code = main(["--device", "cpu", "segment", str(store), str(tmp_path / "red.png"), "--point", f"{x:g},{y:g}",
                 "--out", str(tmp_path / "mask.png"), "--precision", "bfloat16", "--json"])
    assert code == 0 and '"domain": "red"' in capsys.readouterr().out
    assert (tmp_path / "mask.png").stat().st_size > 0


def test_info_says_what_auto_picks(store, capsys):
    assert main(["info", str(store)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("inference precision (--precision auto): float32 here") for line in lines), lines
    assert main(["info", str(store), "--json"]) == 0
    assert '"inference_precision": {"auto": "float32"' in capsys.readouterr().out


@pytest.mark.parametrize("command", ["segment", "eval"])
def test_cli_bad_precision_is_one_line(store, command, capsys):
    extra = ["img.png", "--point", "1,1", "--out", "m.png"] if command == "segment" else ["--data", "x=y"]
    try:
        code = main([command, str(store), *extra, "--precision", "fp8"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--precision" in err and "fp8" in err


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_adapted_suffix_in_bfloat16_is_close_to_float32(tiny_backbone, family):
    """A module's float32 deltas on a bfloat16 encoder: the embeddings come out float32 (the decoder's dtype) and
    close to the float32 encoder's; the heat features stay float32."""
    import copy

    from test_sam2 import tiny_sam2

    from samcl.method import AugModule, Injection, config_for

    full = copy.deepcopy(tiny_backbone) if family == "sam" else tiny_sam2()
    half = copy.deepcopy(full)
    half.set_precision("bfloat16")
    config = config_for(full.site)
    module = AugModule(config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    pixels = torch.randn(1, 3, full.image_size, full.image_size, generator=torch.Generator().manual_seed(2))
    points = torch.tensor([[[20.0, 30.0]]])
    outs = []
    with torch.no_grad():
        for backbone in (full, half):
            start = min(config.adapted_blocks)
            tokens = backbone.prefix(pixels, start - 1)
            injection = Injection(config, module.params(), backbone.heat(points, None, None))
            assert injection.features.dtype == torch.float32
            embeddings = backbone.suffix(tokens, start, injection)
            outs.append(embeddings if family == "sam" else embeddings.image)
    assert outs[0].dtype == outs[1].dtype == torch.float32
    scale = outs[0].abs().max()
    assert (outs[1] - outs[0]).abs().max() < 0.05 * scale


def test_cli_learn_amp_bf16_refused_on_cpu_without_native_bf16(tmp_path, capsys, monkeypatch):
    from samcl.cli import commands

    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    with pytest.raises(SamclError, match="--amp bf16: this CPU has no native bfloat16"):
        commands.check_amp("bf16", "cpu")
    commands.check_amp("none", "cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    commands.check_amp("bf16", "cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    code = main(["--device", "cpu", "learn", str(tmp_path / "s"), "--domain", "a", "--data", str(tmp_path),
                 "--amp", "bf16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--amp bf16" in err
    assert not (tmp_path / "s").exists()
