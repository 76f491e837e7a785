"""The continual baselines (`samcl.bench.baselines`) and the AugModule variants they and the SAMCL ablations use."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import assert_mixed_batch_matches_single, toy_samples

from samcl import SelectorConfig, TrainConfig
from samcl.bench import DomainData, SamclStrategy, run_protocol
from samcl.bench import baselines as b
from samcl.learning import train_module
from samcl.method import AugModule, AugModuleConfig, AugModuleSize, Injection, config_for
from samcl.method.augmodule import qkv_lora_delta

VARIANTS = {
    "per-block A": {"shared_down": False},
    "no prompt augmentation": {"prompt_augmentation": False},
    "qkv LoRA": {"shared_down": False, "prompt_augmentation": False, "target": "qkv"},
}


def _perturbed(config, seed):
    module = AugModule(config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.1)
    return module


def _domains(count=3, train=4, test=2):
    colours = [(40, 100, 200), (200, 60, 40), (90, 200, 90), (220, 220, 60)]
    return [DomainData(f"d{i}", toy_samples(train, colours[i], i), toy_samples(test, colours[i], 100 + i))
            for i in range(count)]


TRAIN = TrainConfig(epochs=1, batch_size=2, progress=False)


def test_variant_sizes_follow_from_config():
    vit_b = AugModuleConfig(dim=768, adapted_blocks=(7, 8, 9, 10, 11), neck_channels=256, rank=10)
    assert AugModuleSize.of(vit_b).parameters == 61_524  # the default is untouched by the variants
    per_block = replace(vit_b, shared_down=False)
    assert per_block.num_parameters == 61_524 + 4 * (10 * 768 + 10)  # four more A (+ bias)
    no_prompt = replace(vit_b, prompt_augmentation=False)
    assert no_prompt.num_parameters == 61_524 - 5 * 20 - (110 + 20 + 8_448 + 2_816)  # no LN2, heat, neck
    qkv = replace(vit_b, **VARIANTS["qkv LoRA"])
    assert qkv.num_parameters == 5 * 10 * (768 + 3 * 768)  # PEFT's r x (in + out) per qkv Linear
    assert AugModuleConfig.from_dict(qkv.to_dict()) == qkv
    with pytest.raises(ValueError):
        replace(vit_b, target="qkv")  # a qkv LoRA has no shared A and no heat


@pytest.mark.parametrize("variant", VARIANTS)
def test_fresh_variant_module_reproduces_base(tiny_backbone, variant):
    torch.manual_seed(0)
    config = replace(config_for(tiny_backbone.site), **VARIANTS[variant])
    pixels = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    heat = torch.rand(2, *tiny_backbone.grid)
    block = tiny_backbone.default_selector_block
    with torch.no_grad():
        base = tiny_backbone.encode(pixels)
        tokens = tiny_backbone.prefix(pixels, block)
        fresh = tiny_backbone.suffix(tokens, block + 1, Injection(config, AugModule(config).params(), heat))
        trained = tiny_backbone.suffix(tokens, block + 1, Injection(config, _perturbed(config, 3).params(), heat))
    assert (fresh - base).abs().max() <= 1e-5
    assert (trained - base).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_mixed_batch_matches_single(tiny_backbone, variant):
    """Per-sample modules (G = B) in one pass equal each sample alone, also through windowed qkv hooks."""
    config = replace(config_for(tiny_backbone.site), **VARIANTS[variant])
    assert_mixed_batch_matches_single(tiny_backbone, config, [_perturbed(config, 1), None, _perturbed(config, 5)])


def test_qkv_lora_matches_peft(tiny_backbone):
    """Our qkv LoRA (through the backbone's hook) computes what PEFT's LoRA on the same qkv Linears computes,
    and leaves the shared model untouched."""
    peft = pytest.importorskip("peft")
    config = b.lora_config(tiny_backbone, rank=4)
    module = _perturbed(config, 7)
    targets = [f"vision_encoder.layers.{i}.attn.qkv" for i in config.adapted_blocks]
    wrapped = peft.inject_adapter_in_model(
        peft.LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=targets), copy.deepcopy(tiny_backbone.model))
    tensors = module.state_tensors()
    with torch.no_grad():
        for slot, block in enumerate(config.adapted_blocks):
            layer = wrapped.vision_encoder.layers[block].attn.qkv
            layer.lora_A["default"].weight.copy_(tensors["a.weight"][slot])
            layer.lora_B["default"].weight.copy_(tensors["b.weight"][slot])
    pixels = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    block = tiny_backbone.default_selector_block
    with torch.no_grad():
        before = tiny_backbone.encode(pixels)
        expected = wrapped.vision_encoder(pixels).last_hidden_state
        ours = tiny_backbone.suffix(tiny_backbone.prefix(pixels, block), block + 1,
                                    Injection(config, module.params(), torch.zeros(2, *tiny_backbone.grid)))
        after = tiny_backbone.encode(pixels)
    assert (ours - expected).abs().max() <= 1e-5
    assert (ours - before).abs().max() > 1e-3
    assert torch.equal(before, after)  # the hook is gone and the frozen model was never changed


def _strategies(backbone, domains):
    selector = SelectorConfig(kind="mlp", samples_per_domain=4)
    return {
        "zero-shot": lambda: b.ZeroShotStrategy(backbone),
        "sequential": lambda: b.SequentialStrategy(backbone, TRAIN),
        "sequential-lora": lambda: b.sequential_lora(backbone, TRAIN),
        "ewc": lambda: b.EwcStrategy(backbone, TRAIN),
        "lwf": lambda: b.LwfStrategy(backbone, TRAIN),
        "replay": lambda: b.ReplayStrategy(backbone, TRAIN, 60_000),
        "o-lora": lambda: b.OLoraStrategy(backbone, TRAIN),
        "joint": lambda: b.JointStrategy(backbone, TRAIN, domains),
        "samcl": lambda: SamclStrategy(backbone, TRAIN, selector, base_domain=domains[-1]),
        "samcl-lora": lambda: SamclStrategy(backbone, TRAIN, selector, variant={"shared_down": False}),
        "samcl-oracle": lambda: SamclStrategy(backbone, TRAIN, selector, oracle=True),
    }


@pytest.mark.parametrize("method", list(_strategies(None, [])))
def test_strategy_state_round_trip_continues_identically(tiny_backbone, tmp_path, method):
    """save_state after a step, load_state into a new strategy: the next step and every score are the same."""
    domains = _domains()
    make = _strategies(tiny_backbone, domains)[method]
    first = make()
    first.learn(domains[0])
    first.save_state(tmp_path / "state")
    second = make()
    second.load_state(tmp_path / "state")
    assert second.storage() == first.storage()
    for strategy in (first, second):
        strategy.learn(domains[1])
    for domain in domains:
        assert first.evaluate(domain) == second.evaluate(domain)
    assert first.storage() == second.storage()


def test_ewc_penalty_pulls_towards_the_earlier_weights(tiny_backbone):
    domains = _domains(2, train=6)
    config = config_for(tiny_backbone.site)
    sequential = b.SequentialStrategy(tiny_backbone, TRAIN)
    sequential.learn(domains[0])
    anchor = sequential.module.state_tensors()
    fisher = b.diagonal_fisher(tiny_backbone, sequential.module, domains[0].train, 1, TRAIN, torch.device("cpu"))
    count = sum(f.numel() for f in fisher.values())
    assert all(f.min() >= 0 for f in fisher.values())
    assert float(sum(f.sum() for f in fisher.values())) == pytest.approx(count, rel=1e-4)  # normalised to mean 1
    penalty = b.EwcPenalty([(fisher, anchor)], 1e4, "cpu")
    assert float(penalty.penalty({n: t[None] for n, t in anchor.items()}, None, None, None)) == 0.0

    def distance(objective):
        module, _, _ = train_module(tiny_backbone, config, domains[1].train, 1, replace(TRAIN, epochs=3),
                                    init=sequential.module, objective=objective)
        return sum(((fisher[n] + 1e-12) * (t - anchor[n]) ** 2).sum() for n, t in module.state_tensors().items())

    assert distance(penalty) < 0.5 * distance(None)


def test_lwf_distillation_targets_the_previous_module(tiny_backbone):
    domains = _domains(2, train=6)
    strategy = b.LwfStrategy(tiny_backbone, TRAIN, strength=1.0)
    assert strategy.objective(domains[0]) is None  # nothing to distil from yet
    strategy.learn(domains[0])
    objective = strategy.objective(domains[1])
    module = strategy.module
    params = {n: t.clone().requires_grad_(True) for n, t in module.params().items()}
    tokens = tiny_backbone.prefix(torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size), 1)
    points = torch.tensor([[[20.0, 30.0]], [[40.0, 10.0]]])
    heat = tiny_backbone.heat(points, None, None)
    low_res, _ = tiny_backbone.decode(tiny_backbone.suffix(tokens, 2, Injection(module.config, params, heat)), points)
    loss = objective.penalty(params, tokens, points, low_res.float())
    grads = torch.autograd.grad(loss, list(params.values()))
    assert max(g.abs().max() for g in grads) < 1e-6  # at the previous module the soft targets are its own output
    shifted = objective.penalty(params, tokens, points, low_res.float() + 2.0)
    assert shifted > loss


def test_olora_sums_loras_and_penalises_overlap(tiny_backbone):
    config = b.lora_config(tiny_backbone, rank=3)
    first, second = _perturbed(config, 1), _perturbed(config, 2)
    merged = b.concat_loras([first, second])
    assert merged.config.rank == 6
    x = torch.randn(2, 5, config.dim)
    single = lambda m: qkv_lora_delta(m.params(), 0, x)  # noqa: E731
    assert torch.allclose(single(merged), single(first) + single(second), atol=1e-6)
    objective = b.OrthogonalLora(first.params(), 1.0, "cpu")
    composed = objective.params(second.params())
    assert torch.equal(composed["a.weight"], merged.params()["a.weight"])
    overlap = objective.penalty(composed, None, None, None)
    a_old = first.state_tensors()["a.weight"]
    assert torch.isclose(overlap, (torch.matmul(a_old, second.state_tensors()["a.weight"].transpose(-1, -2)) ** 2).sum())
    orthogonal = objective.params({"a.weight": torch.zeros_like(second.params()["a.weight"]),
                                   "b.weight": second.params()["b.weight"]})
    assert float(objective.penalty(orthogonal, None, None, None).detach()) == 0.0


def test_olora_keeps_earlier_loras_frozen(tiny_backbone):
    domains = _domains(2)
    strategy = b.OLoraStrategy(tiny_backbone, TRAIN)
    strategy.learn(domains[0])
    kept = {n: t.clone() for n, t in strategy.loras[0].state_tensors().items()}
    strategy.learn(domains[1])
    assert all(torch.equal(kept[n], t) for n, t in strategy.loras[0].state_tensors().items())
    assert strategy.storage()["total"] == 2 * strategy.config.num_parameters * 4


def test_replay_memory_stays_within_budget_and_is_balanced(tiny_backbone):
    domains = _domains(3, train=6)
    sizes = [b.sample_bytes(s) for s in domains[0].train]
    budget = int(3 * 2.5 * np.mean(sizes))  # about 2 images per domain at the end
    strategy = b.ReplayStrategy(tiny_backbone, TRAIN, budget)
    for domain in domains:
        strategy.learn(domain)
        seen = len(strategy.domains_seen)
        assert strategy.memory_bytes <= budget
        for name in strategy.domains_seen:
            assert sum(m.bytes for m in strategy.memory if m.domain == name) <= budget // seen
        assert {m.domain for m in strategy.memory} == set(strategy.domains_seen)
    storage = strategy.storage()
    assert storage["replay"] == strategy.memory_bytes == sum(len(m.image_png) + len(m.mask_png) for m in strategy.memory)
    assert storage["total"] == storage["module_total"] + storage["replay"]
    item = strategy.memory[0]
    original = next(s for d in domains for s in d.train if d.name == item.domain and s.name == item.name)
    restored = item.sample()
    assert np.array_equal(restored.image, original.image) and np.array_equal(restored.mask, original.mask)
    assert len(strategy.training_samples(domains[0])) == len(domains[0].train) + len(strategy.memory)


def test_joint_trains_a_fresh_module_on_everything_so_far(tiny_backbone):
    domains = _domains(3)
    strategy = b.JointStrategy(tiny_backbone, TRAIN, domains)
    assert len(strategy.training_samples(domains[1])) == len(domains[0].train) + len(domains[1].train)
    assert strategy.initial(domains[1]) is None
    strategy.learn(domains[0])
    assert strategy.storage()["replay"] == sum(b.sample_bytes(s) for s in domains[0].train)


def test_zero_shot_matches_base_and_never_changes(tiny_backbone):
    domains = _domains(2)
    result = run_protocol(b.ZeroShotStrategy(tiny_backbone), domains, progress=False)
    assert all(row == result.rows[0] for row in result.rows)
    assert result.storage["total"] == 0
