import math

import pytest
import torch

from samcl import SelectorConfig
from samcl.selector import FeatureBuffer, SelectorNet, make_selector, train_selector
from samcl.selector.config import KINDS


def test_selector_growth_keeps_old_rows():
    net = SelectorNet(16, 2)
    old_w, old_b = net.head.weight.detach().clone(), net.head.bias.detach().clone()
    net.grow(3, torch.Generator().manual_seed(0))
    assert net.head.weight.shape == (3, 4)
    assert torch.equal(net.head.weight[:2], old_w) and torch.equal(net.head.bias[:2], old_b)


def test_selector_learns_separable_domains_and_continues_training():
    torch.manual_seed(0)  # SelectorNet's initial weights come from the global RNG: not from earlier tests' use of it
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=gen) * 3
    buffer = FeatureBuffer(16)
    net = SelectorNet(16, 1)
    config = SelectorConfig(kind="mlp", epochs=25, samples_per_domain=100)
    for label in range(3):
        buffer.add(centres[label] + torch.randn(100, 16, generator=gen), label)
        net.grow(label + 1)
        if label:
            train_selector(net, buffer, config, seed=label, progress=False)
    with torch.no_grad():
        accuracy = (net(buffer.features).argmax(1) == buffer.labels).float().mean()
    assert accuracy > 0.95
    assert buffer.num_bytes == 300 * 16 * 4 + 300 * 8



def degenerate_domains(case: str) -> list[torch.Tensor]:
    """Pooled features (N x 2D, D = 8) of a degenerate domain first, then an ordinary one."""
    gen = torch.Generator().manual_seed(0)
    one = torch.randn(1, 16, generator=gen)
    if case == "identical":
        odd = one.repeat(12, 1)
    elif case == "two_images_repeated":
        odd = torch.cat([one.repeat(6, 1), (one + 1).repeat(6, 1)])
    else:  # all zero
        odd = torch.zeros(12, 16)
    return [odd, torch.randn(12, 16, generator=gen) * 2 + 3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["identical", "two_images_repeated", "zero"])
@pytest.mark.parametrize("order", ["first", "alone"])
def test_a_class_of_identical_images_is_learned_and_routes_its_image(kind, case, order):
    torch.manual_seed(0)
    selector = make_selector(SelectorConfig(kind=kind, epochs=20, samples_per_domain=12), 8)
    domains = degenerate_domains(case)[:1] if order == "alone" else degenerate_domains(case)
    for k, pooled in enumerate(domains):
        if kind == "mlp":
            selector.add_domain(pooled, seed=k)
        else:
            selector.add_domain(pooled)
    chosen, scores = selector.choose(domains[0][:1], fallback=False)
    assert all(math.isfinite(score) for score in scores)
    if kind == "mlp":  # (trained by SGD: no factorisation to fail; which domain 20 epochs reach is not the point)
        return
    assert chosen == [0]
    if len(domains) > 1:
        assert selector.choose(domains[1][:4], fallback=False)[0] == [1] * 4


@pytest.mark.parametrize("kind", ["fecam", "ncm", "ranpac"])
def test_ordinary_classes_never_take_the_regularised_path(kind, monkeypatch):
    """The regularisation of degenerate domains leaves every other domain's numbers as they were (the committed
    benchmark's): it runs only where a covariance does not factor, which ordinary domains never reach, even with
    fewer images than features."""
    from samcl.selector import stats

    calls = []
    monkeypatch.setattr(stats, "definite", lambda matrix: calls.append(1) or matrix)
    gen = torch.Generator().manual_seed(1)
    selector = make_selector(SelectorConfig(kind=kind), 8)
    for k in range(4):
        selector.add_domain(torch.randn(6 + 4 * k, 16, generator=gen) + 3 * k)
    selector.choose(torch.randn(20, 16, generator=gen) * 4)
    assert calls == []
