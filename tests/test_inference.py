"""Fast inference: resident modules, mixed-domain batches, predictor caching, float16 stores, selector budget."""

import builtins
import copy
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from conftest import tiny_sam_config
from helpers import toy_samples
from PIL import Image

from samcl import SAMCL, Prompt, SamclError, SelectorConfig, TrainConfig
from samcl.backbone import SamBackbone
from samcl.cli import main
from samcl.inference import ByObject, PrefixCache
from samcl.method import AugModule, tensor_bytes
from samcl.selector import FeatureBuffer, SelectorNet, train_selector
from samcl.store import ModuleStore

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)
RED, BLUE, GRAY = (200, 30, 30), (30, 30, 200), (120, 120, 120)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def scaled_backbone(tiny_backbone) -> SamBackbone:
    """The tiny SAM with its mask decoder re-drawn at std 1/sqrt(fan_in): transformers' init makes logits of
    about 1e-5, where a 1e-5 tolerance would mean nothing; these are of order 1."""
    backbone = SamBackbone.from_config(tiny_sam_config(), seed=0)
    backbone.model.load_state_dict(tiny_backbone.model.state_dict())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in backbone.model.mask_decoder.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    return backbone


@pytest.fixture(scope="module")
def served(tmp_path_factory, scaled_backbone):
    """A saved set: "gray" learned without a module, "red" and "blue" as modules with clearly different weights.
    The base model is saved as an HF directory so the CLI can load it from the store's record."""
    root = tmp_path_factory.mktemp("inference")
    scaled_backbone.model.save_pretrained(root / "tiny-sam")
    backbone = SamBackbone.from_pretrained(root / "tiny-sam")
    samcl = SAMCL.create(backbone, root / "set", selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=300),
                         base_hint=str(root / "tiny-sam"))
    samcl.learn("gray", toy_samples(6, GRAY, 3), FAST, without_module=True)
    samcl.learn("red", toy_samples(6, RED, 0), FAST)
    samcl.learn("blue", toy_samples(6, BLUE, 1), FAST)
    with torch.no_grad():  # one epoch barely moves a module: give each a distinct, visible effect
        for seed, module in enumerate(samcl.module_set.modules.values()):
            for param in module.parameters():
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    with samcl.store.lock():
        samcl.store.save(samcl.module_set, written={"red", "blue"})
    return root, backbone


def mixed_inputs():
    """A red, a blue, a gray and a red image of different sizes, with different prompts (counts, negatives, box)."""
    red, blue, gray, red2 = (toy_samples(1, colour, seed)[0] for colour, seed in
                             ((RED, 10), (BLUE, 11), (GRAY, 12), (RED, 13)))
    prompts = [Prompt.of(red.points),
               Prompt.of(np.concatenate([blue.points[:1], [[2.0, 2.0]]]), [1, 0]),
               Prompt.of(gray.points[:2], box=[5, 5, 40, 30]),
               Prompt.of(None)]
    return [red.image, blue.image, gray.image, red2.image], prompts


def assert_same(one, other, tolerance=TOLERANCE):
    assert one.domain == other.domain
    for field in ("low_res_logits", "scores", "logits"):
        assert np.abs(getattr(one, field) - getattr(other, field)).max() <= tolerance, field
    assert (one.masks == other.masks).mean() > 0.999  # equal up to pixels within the tolerance of 0


def test_mixed_domain_batch_equals_each_image_alone(served):
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, prompts = mixed_inputs()
    batch = samcl.segment(images, prompts, multimask_output=True, return_logits=True)
    assert [r.domain for r in batch] == ["red", "blue", "base", "red"]  # the selector picked per image
    for image, prompt, result in zip(images, prompts, batch):
        assert_same(result, samcl.segment([image], [prompt], multimask_output=True, return_logits=True)[0])


def test_per_image_forced_domains_equal_each_image_alone(served):
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, prompts = mixed_inputs()
    forced = ["blue", None, "red", "base"]
    batch = samcl.segment(images, prompts, force=forced, return_logits=True)
    assert [r.domain for r in batch] == ["blue", "blue", "red", "base"]
    for image, prompt, name, result in zip(images, prompts, forced, batch):
        assert_same(result, samcl.segment([image], [prompt], force=name, return_logits=True)[0])
    with pytest.raises(ValueError, match="4 images but 2 domains"):
        samcl.segment(images, prompts, force=["red", "blue"])


def test_the_chosen_module_changes_the_result(served):
    """Guards the equality tests: a module swapped for another (or for none) would show."""
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, prompts = mixed_inputs()
    outputs = [samcl.segment(images[:1], prompts[:1], force=name)[0].low_res_logits
               for name in ("red", "blue", "base")]
    for i in range(3):
        for j in range(i):
            assert np.abs(outputs[i] - outputs[j]).max() > 1e-3


def test_modules_are_resident_rows_and_switching_copies_nothing(served):
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    bank = samcl.engine.bank()
    red, blue = samcl.domains.index("red"), samcl.domains.index("blue")
    for index in (red, blue):  # the modules live in the bank's rows: no second copy in memory
        for name, param in samcl.module_set.module_for(index).named_tensors().items():
            assert param.data_ptr() == bank.tensors[name][index + 1].data_ptr()
    heat = torch.zeros(2, *backbone.grid)
    single = samcl.engine.injection([red, red], heat).params
    assert all(t.shape[0] == 1 and t.data_ptr() == bank.tensors[n][red + 1].data_ptr() for n, t in single.items())
    mixed = samcl.engine.injection([red, -1], heat).params
    assert all(torch.equal(t[0], bank.tensors[n][red + 1]) and not t[1].any() for n, t in mixed.items())
    assert samcl.engine.injection([-1, samcl.domains.index("gray")], heat) is None  # base everywhere: no adapter at all


def test_segment_reads_no_file_and_copies_no_model_after_open(served, monkeypatch):
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, prompts = mixed_inputs()

    def forbidden(*args, **kwargs):
        raise AssertionError("disk read or model copy during inference")

    for target, name in [(builtins, "open"), (io, "open"), (os, "open"), (Path, "open"), (Path, "read_bytes"),
                         (Path, "read_text"), (safetensors.torch, "load"), (safetensors.torch, "load_file"),
                         (safetensors, "safe_open"), (torch, "load"), (copy, "deepcopy"), (copy, "copy"),
                         (AugModule, "__init__"), (AugModule, "load_state_tensors"), (ModuleStore, "load"),
                         (torch.nn.Module, "load_state_dict")]:
        monkeypatch.setattr(target, name, forbidden)
    results = samcl.segment(images, prompts)
    assert [r.domain for r in results] == ["red", "blue", "base", "red"]
    predictor = samcl.predictor()
    for image, prompt in zip(images, prompts):
        predictor.set_image(image)
        predictor.predict(prompt.points, prompt.labels, prompt.box)


def test_a_replaced_module_is_picked_up(served):
    """Code that swaps a module object (the sequential baseline does) gets the new one, not a stale row."""
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, prompts = mixed_inputs()
    blue = samcl.segment(images[:1], prompts[:1], force="blue")[0]
    samcl.module_set.modules["red"] = copy.deepcopy(samcl.module_set.modules["blue"])
    red = samcl.segment(images[:1], prompts[:1], force="red")[0]
    assert np.abs(red.low_res_logits - blue.low_res_logits).max() <= TOLERANCE


def test_a_learned_domain_is_resident_and_earlier_ones_unchanged(scaled_backbone):
    samcl = SAMCL.create(scaled_backbone, None, selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=3))
    images, prompts = mixed_inputs()
    samcl.learn("red", toy_samples(6, RED, 0), FAST)
    with torch.no_grad():
        for param in samcl.module_set.modules["red"].parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 0.2)
    red = samcl.segment(images[:1], prompts[:1], force="red")[0]
    base = samcl.segment(images[:1], prompts[:1], force="base")[0]
    assert np.abs(red.low_res_logits - base.low_res_logits).max() > 1e-3
    samcl.learn("blue", toy_samples(6, BLUE, 1), FAST)  # the bank grows by a row; red's row keeps its values
    assert samcl.segment(images[:1], prompts[:1], force="blue")[0].domain == "blue"
    again = samcl.segment(images[:1], prompts[:1], force="red")[0]
    assert np.abs(again.low_res_logits - red.low_res_logits).max() <= TOLERANCE
    assert len(samcl.engine.bank().owners) == 2


def _count_calls(modules) -> list[int]:
    counts = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def test_predictor_reruns_only_what_depends_on_the_prompt(served):
    root, backbone = served
    fresh = SamBackbone.from_pretrained(root / "tiny-sam")  # own hooks, not on the shared backbone
    samcl = SAMCL.open(root / "set", base=fresh)
    encoder = fresh.model.vision_encoder
    block = samcl.selector_block
    prefix = _count_calls([encoder.patch_embed, *(layer.mlp for layer in encoder.layers[:block + 1])])
    suffix = _count_calls([encoder.neck, *(layer.mlp for layer in encoder.layers[block + 1:])])
    decoder = _count_calls([fresh.model.mask_decoder])
    images, prompts = mixed_inputs()
    predictor = samcl.predictor()
    predictor.set_image(images[0])
    assert predictor.domain == "red" and prefix == [1] * len(prefix) and suffix[0] == 0
    for prompt in prompts:
        masks, scores, low_res = predictor.predict(prompt.points, prompt.labels, prompt.box, multimask_output=True)
        alone = samcl.segment(images[:1], [prompt], multimask_output=True)[0]
        assert np.abs(low_res - alone.low_res_logits).max() <= TOLERANCE
        assert np.abs(scores - alone.scores).max() <= TOLERANCE
    # set_image ran the prefix once; each predict ran the suffix (the heat depends on the points) and the decoder;
    # each segment ran everything once more
    assert prefix[0] == 1 + len(prompts) and suffix[0] == 2 * len(prompts) and decoder[0] == 2 * len(prompts)
    predictor.set_image(images[2])  # no module: the suffix does not depend on the prompt, so it is cached too
    assert predictor.domain == "base"
    for prompt in prompts:
        predictor.predict(prompt.points, prompt.labels, prompt.box)
    assert prefix[0] == 2 + len(prompts) and suffix[0] == 2 * len(prompts) + 1 and decoder[0] == 3 * len(prompts)


def test_cli_segment_several_images_equals_single_runs(served, tmp_path, capsys):
    root, _ = served
    images, _ = mixed_inputs()
    paths = []
    for name, image in zip(("red", "blue", "gray"), images):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    prompt = ["--point", "30,20", "--negative", "2,2"]
    assert main(["segment", str(root / "set"), *map(str, paths), *prompt, "--out", str(tmp_path / "batch"),
                 "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)["results"]
    assert [r["domain"] for r in batch] == ["red", "blue", "base"]
    for path, result in zip(paths, batch):
        assert main(["segment", str(root / "set"), str(path), *prompt, "--out", str(tmp_path / "one.png"),
                     "--json"]) == 0
        alone = json.loads(capsys.readouterr().out)["results"][0]
        assert alone["domain"] == result["domain"] and abs(alone["score"] - result["score"]) <= TOLERANCE
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one.png")), np.asarray(Image.open(result["mask"])))


def test_opening_defers_the_buffer_until_learning_needs_it(served, tmp_path):
    root, backbone = served
    copied = tmp_path / "set"
    shutil.copytree(root / "set", copied)
    samcl = SAMCL.open(copied, base=backbone)
    assert not samcl.module_set.buffer.is_loaded and len(samcl.module_set.buffer) == 18
    assert samcl.storage()["buffer"] == 18 * (samcl.module_set.buffer.dim * 4 + 8) and not samcl.module_set.buffer.is_loaded
    manifest = json.loads((copied / "manifest.json").read_text())
    buffer = copied / manifest["buffer"]["file"]
    buffer.write_bytes(buffer.read_bytes()[:-8])  # corrupt: inference still works, learning refuses at once
    samcl = SAMCL.open(copied, base=backbone)
    images, prompts = mixed_inputs()
    assert samcl.segment(images[:1], prompts[:1])[0].domain == "red"
    before = (copied / "manifest.json").read_bytes()
    with pytest.raises(SamclError, match=buffer.name):
        samcl.learn("green", toy_samples(4, (30, 200, 30), 5), TrainConfig(epochs=50, progress=False))
    assert (copied / "manifest.json").read_bytes() == before
    with pytest.raises(SamclError, match=buffer.name):  # a full load (samcl info) verifies everything
        ModuleStore(copied).load()


def test_float16_store_halves_bytes_and_round_trips_within_fp16(scaled_backbone, tmp_path):
    learned, files = {}, {}
    for dtype in ("float32", "float16"):
        samcl = SAMCL.create(scaled_backbone, tmp_path / dtype, dtype=dtype,
                             selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=3))
        samcl.learn("red", toy_samples(6, RED, 0), FAST)
        learned[dtype] = samcl
        manifest = json.loads((tmp_path / dtype / "manifest.json").read_text())
        files[dtype] = manifest
        entry = manifest["domains"][0]
        assert entry["bytes"] == entry["parameters"] * (4 if dtype == "float32" else 2)
    def payload(dtype: str, relative: str) -> tuple[int, int]:
        """(bytes of floating-point values, bytes of the rest) in one safetensors file of the store."""
        tensors = safetensors.torch.load_file(tmp_path / dtype / relative)
        sizes = [(t.is_floating_point(), t.numel() * t.element_size()) for t in tensors.values()]
        return sum(n for f, n in sizes if f), sum(n for f, n in sizes if not f)

    for relative in (lambda m: m["domains"][0]["file"], lambda m: m["selector"]["file"],
                     lambda m: m["buffer"]["file"]):
        full, half = (payload(dtype, relative(files[dtype])) for dtype in ("float32", "float16"))
        assert half == (full[0] // 2, full[1]) and full[0] > 0  # floats halve; labels stay int64
    assert learned["float16"].storage()["total"] < 0.55 * learned["float32"].storage()["total"]

    original = learned["float32"].module_set  # same seed, same training: the same module in both sets
    reopened = SAMCL.open(tmp_path / "float16", base=scaled_backbone)
    for name, tensor in original.modules["red"].state_tensors().items():
        loaded = reopened.module_set.modules["red"].state_tensors()[name]
        assert loaded.dtype == torch.float32  # computed in float32 (the base's dtype), stored in float16
        assert torch.equal(loaded, tensor.half().float())
        assert torch.allclose(loaded, tensor, rtol=1e-3, atol=1e-4)
    assert reopened.engine.bank().dtype == torch.float32
    assert torch.equal(reopened.module_set.buffer.features, original.buffer.features.half().float())
    images, prompts = mixed_inputs()
    half = reopened.segment(images[:1], prompts[:1], force="red")[0]
    full = SAMCL.open(tmp_path / "float32", base=scaled_backbone).segment(images[:1], prompts[:1], force="red")[0]
    assert np.abs(half.low_res_logits - full.low_res_logits).max() <= 1e-2


def _separable(domains: int, per_domain: int, dim: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(domains, dim, generator=torch.Generator().manual_seed(0)) * 3
    return centres.repeat_interleave(per_domain, 0) + torch.randn(domains * per_domain, dim, generator=generator)


def test_selector_budget_is_the_reference_schedule_while_it_fits():
    x, labels = _separable(3, 40, 16, 1), torch.arange(3).repeat_interleave(40)
    torch.manual_seed(0)
    initial = SelectorNet(16, 3)
    trained = []
    for max_steps in (None, 25 * 5):  # 120 samples in batches of 24: 5 steps per epoch, 125 in all = the cap
        net = copy.deepcopy(initial)
        train_selector(net, FeatureBuffer(16, x, labels), SelectorConfig(max_steps=max_steps), seed=4,
                       progress=False)
        trained.append(net.state_dict())
    assert all(torch.equal(tensor, trained[1][key]) for key, tensor in trained[0].items())


def test_selector_budget_bounds_steps_and_keeps_old_classes(monkeypatch):
    steps = []
    original_step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (steps.append(1), original_step(self, *a, **k)))
    domains, per_domain, dim, cap = 30, 10, 64, 60  # hidden width dim / 4 must hold 30 domains
    x, test = _separable(domains, per_domain, dim, 1), _separable(domains, 20, dim, 2)
    buffer, net, counts = FeatureBuffer(dim), SelectorNet(dim, 1), []
    for label in range(domains):
        buffer.add(x[label * per_domain:(label + 1) * per_domain], label)
        net.grow(label + 1, torch.Generator().manual_seed(label))
        if label:
            steps.clear()
            train_selector(net, buffer, SelectorConfig(max_steps=cap), seed=label, progress=False)
            counts.append(len(steps))
    reference = [25 * -(-(k + 1) * per_domain // 24) for k in range(1, domains)]  # 25 epochs over the buffer
    assert reference[0] < cap < reference[-1]
    assert counts == [min(r, cap) for r in reference]  # the reference while it fits, then flat in K
    with torch.no_grad():
        accuracy = (net(test).argmax(1) == torch.arange(domains).repeat_interleave(20)).float().mean()
    assert accuracy > 0.9


def test_prefix_cache_gives_identical_results_and_skips_the_prefix(tiny_backbone, monkeypatch):
    from helpers import toy_samples

    from samcl import SAMCL, Prompt

    samples = toy_samples(3, (200, 30, 30), 0)
    images, prompts = [s.image for s in samples], [Prompt.of(s.points) for s in samples]
    plain = SAMCL.create(tiny_backbone).segment(images, prompts)
    cached = SAMCL.create(tiny_backbone)
    cached.engine.cache_prefixes(1 << 20)
    first = cached.segment(images[:2], prompts[:2])
    calls = []
    original = tiny_backbone.prefix
    monkeypatch.setattr(tiny_backbone, "prefix", lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k))
    again = cached.segment(images, prompts)
    assert calls == [1]  # only the image not seen before ran through the prefix
    for a, b in zip(plain, first + again[2:]):
        assert (a.low_res_logits == b.low_res_logits).all()
    for a, b in zip(plain, again):
        assert abs(a.low_res_logits - b.low_res_logits).max() <= 1e-5


def test_prefix_cache_evicts_least_recently_used_within_its_budget(served):
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, _ = mixed_inputs()
    engine = samcl.engine
    one = engine.prepare(images[:1], keep=False)[0].nbytes
    engine.cache_prefixes(2 * one + one // 2)  # room for two images
    first = engine.prepare(images[:2])
    assert engine.cache.used == 2 * one and all(p is q for p, q in zip(first, engine.prepare(images[:2])))
    engine.prepare(images[:1])  # image 0 is now the most recently used
    engine.prepare(images[2:3])  # image 1 makes room for image 2
    keys = list(engine.cache.entries)
    assert [k.obj for k in keys] == [images[0], images[2]] and engine.cache.used == 2 * one
    kept = PrefixCache(backbone, samcl.selector_block, engine.device, 2 * one + one // 2, evict="keep")
    kept.lookup([0, 1, 2], lambda i: (images[i], None))
    assert list(kept.entries) == [0, 1]  # what is kept stays: image 2 was computed, used and dropped


def test_an_unprompted_embedding_kept_on_a_cached_image_counts_in_the_budget(served):
    root, backbone = served
    samcl = SAMCL.open(root / "set", base=backbone)
    images, prompts = mixed_inputs()
    engine = samcl.engine
    engine.cache_prefixes(64 << 20)
    gray = images[2]  # routed to base: its embedding does not depend on the prompt
    first = samcl.segment([gray], prompts[2:3])[0]
    entry = engine.cache.get(ByObject(gray))
    assert first.domain == "base" and entry.unprompted_embedding is not None
    assert engine.cache.used == entry.nbytes > tensor_bytes([entry.tokens, entry.pooled])
    again = samcl.segment([gray], prompts[2:3])[0]
    assert np.array_equal(again.masks, first.masks) and np.array_equal(again.scores, first.scores)
    batch = samcl.segment(images, prompts)  # a batch runs one suffix pass, as before
    assert np.abs(batch[2].low_res_logits - first.low_res_logits).max() <= TOLERANCE
