import torch

from samcl import SelectorConfig
from samcl.selector import EmbeddingBuffer, SelectorNet, train_selector


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
    buffer = EmbeddingBuffer(16)
    net = SelectorNet(16, 1)
    config = SelectorConfig(kind="mlp", epochs=25, samples_per_domain=100)
    for label in range(3):
        buffer.add(centres[label] + torch.randn(100, 16, generator=gen), label)
        net.grow(label + 1)
        if label:
            train_selector(net, buffer, config, seed=label, progress=False)
    with torch.no_grad():
        accuracy = (net(buffer.embeddings).argmax(1) == buffer.labels).float().mean()
    assert accuracy > 0.95
    assert buffer.num_bytes == 300 * 16 * 4 + 300 * 8
