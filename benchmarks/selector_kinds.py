"""Every selector kind on the embedded suite's pooled features: routing accuracy, open-set answer, bytes, update time.

    python benchmarks/selector_kinds.py                 # 48 train / 32 test images per domain, seeds 0 1 2
    python benchmarks/selector_kinds.py --quick         # 12 / 8, seed 0

The shipped tiny SAM embeds every domain's images once (the frozen prefix up to the selector block and up to the
block before it, for the multi-block variant); every selector is then fitted on those features, which
is cheap. Learned, in order: general (without a module, as the benchmark does), polyps, camouflage, shadows,
skin_lesions, cells; never learned: camouflage_sand (looks like camouflage), documents (unlike all).

Feature variants (all from tokens the prefix computes anyway):
  mean         grid mean of the selector block (the paper's)
  mean_std     grid mean and std of the selector block
  multi        grid mean and std of the selector block and the block before it
  mean_std_max grid mean, std and max (per channel) of the selector block: measured, not offered (the max lifts
               closed-set routing, but the open-set cut on it lets more than the target fall back; see the README)

Columns: acc = learned domains' test images routed to their own domain with the fallback off (the general domain's to
itself, learned without a module); frr = learned domains' images sent to base by the fallback; unseen->base = share
of each never-learned domain's images that run on base (the fallback on: sent to base, or to general, the domain
without a module); B/class = state bytes that grow per domain; update = seconds
to add the last domain. The last lines give the bytes per domain at ViT-B width (D = 768). The `probe` row is not a
selector but a reference: a logistic regression fitted on all classes' embeddings at once (its acc says how far
any classifier of these features gets; its frr and B/class mean nothing).

--seeds 10,11,12,13,14 gives seeds the committed benchmark does not use: the selector settings were chosen there.
"""

from __future__ import annotations

import argparse
import time

import torch

from samcl import SelectorConfig, load_backbone
from samcl.bench import embedded_suite
from samcl.selector import MlpSelector, make_selector

KINDS = ("mlp", "ncm", "fecam", "fecam-fixed", "ranpac", "probe")
#: fecam-fixed: fecam as stores made before the per-class shrinkage have it (a fixed 16-sample shrink toward the
#: pooled covariance, projection to 128, the plain fitted quantile as the open-set cut), for comparison.
SETTINGS = {"fecam-fixed": {"kind": "fecam", "shrink": 16.0, "proj_dim": 128, "tolerance": 0.0}}


class Probe:
    """Not a selector: a reference for how separable the features are. A multinomial logistic regression fitted on
    every class's standardised features at once (L2 weight 1e-3, L-BFGS), keeping every embedding; closed set."""

    def __init__(self):
        self.parts, self.model = [], None

    def add_domain(self, x, seed: int = 0):
        self.parts.append(x.double())
        self.model = None

    def choose(self, x, fallback: bool = True):
        if self.model is None:
            data = torch.cat(self.parts)
            labels = torch.cat([torch.full((len(p),), k) for k, p in enumerate(self.parts)])
            mean, std = data.mean(0), data.std(0) + 1e-9
            weight = torch.zeros(data.shape[1], len(self.parts), dtype=torch.float64, requires_grad=True)
            bias = torch.zeros(len(self.parts), dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

            def loss():
                optimizer.zero_grad()
                value = torch.nn.functional.cross_entropy((data - mean) / std @ weight + bias, labels) \
                    + 1e-3 * (weight ** 2).sum()
                value.backward()
                return value

            optimizer.step(loss)
            self.model = (mean, std, weight.detach(), bias.detach())
        mean, std, weight, bias = self.model
        probabilities = torch.softmax((x.double() - mean) / std @ weight + bias, dim=1)
        return probabilities.argmax(1).tolist(), probabilities.max(1).values.tolist()

    def bytes_per_class(self) -> int:
        return 0
VARIANTS = ("mean", "mean_std", "multi", "mean_std_max")


@torch.no_grad()
def embed(backbone, samples, batch: int = 16) -> dict[str, torch.Tensor]:
    """Pooled features of every variant for `samples` (N x F each): the prefix up to the selector block and up to
    the block before it (both computed by the prefix anyway; run twice here for simplicity)."""
    s = backbone.default_selector_block
    out = {v: [] for v in VARIANTS}
    for start in range(0, len(samples), batch):
        pixels = torch.stack([backbone.preprocess(x.image)[0] for x in samples[start:start + batch]])
        before = backbone.prefix(pixels, s - 1)
        tokens = backbone.prefix(pixels, s)
        last, prev = backbone.pool_stats(tokens), backbone.pool_stats(before)
        out["mean"].append(last[:, : last.shape[1] // 2])
        out["mean_std"].append(last)
        out["multi"].append(torch.cat([last, prev], dim=1))
        out["mean_std_max"].append(torch.cat([last, tokens.float().amax(dim=(1, 2))], dim=1))
    return {v: torch.cat(parts).float() for v, parts in out.items()}


def fit(kind: str, classes: list[torch.Tensor], width: int, buffer: int, seed: int):
    """A selector of `kind` fitted on the classes in order; the seconds of the last add_domain. The global RNG is
    seeded first: the MLP's network takes its first layers' initial weights from it, so each fit depends on its
    seed alone, not on which rows ran before it (adding a row used to change the MLP rows of later seeds)."""
    torch.manual_seed(seed)
    if kind == "probe":
        selector = Probe()
    else:
        config = SelectorConfig(**{"kind": kind, **SETTINGS.get(kind, {})}, features="mean",
                                samples_per_domain=buffer)
        selector = make_selector(config, width)
    seconds = 0.0
    for label, x in enumerate(classes):
        if kind == "mlp":  # the buffer keeps N_e of the class's images (a seeded subset, as the learner does)
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + label))[:buffer]]
        start = time.perf_counter()
        selector.add_domain(x, seed=seed)
        seconds = time.perf_counter() - start
    return selector, seconds


def bytes_per_class(selector) -> int:
    if isinstance(selector, MlpSelector):
        count = selector.num_domains
        return len(selector.buffer) // count * (selector.dim * 4 + 8) + selector.num_bytes // count
    return selector.bytes_per_domain()


def measure(kind, variant, feats, learned, unseen, buffer, seed) -> dict:
    train = [feats[d]["train"][variant] for d in learned]
    width = train[0].shape[1]
    selector, seconds = fit(kind, train, width, buffer, seed)
    acc, frr, per = [], [], {}
    for label, d in enumerate(learned):
        test = feats[d]["test"][variant]
        closed, _ = selector.choose(test, fallback=False)
        opened, _ = selector.choose(test, fallback=True)
        per[d] = sum(c == label for c in closed) / len(test)
        acc += [c == label for c in closed]
        frr += [c == -1 for c in opened]
    to_base = {d: sum(c in (-1, 0) for c in selector.choose(feats[d]["test"][variant], fallback=True)[0])
               / len(feats[d]["test"][variant]) for d in unseen}
    return {"acc": sum(acc) / len(acc), "per": per, "frr": sum(frr) / len(frr), "to_base": to_base,
            "bytes": bytes_per_class(selector), "seconds": seconds}


def vit_b_bytes(buffer: int) -> dict[str, int]:
    """Bytes per class at D = 768 with the default features of each kind (one class of random features)."""
    out = {}
    for kind in KINDS[:-1]:
        config = SelectorConfig(**{"kind": kind, **SETTINGS.get(kind, {})}, samples_per_domain=300)
        selector = make_selector(config, 768)
        selector.add_domain(torch.randn(300 if kind == "mlp" else buffer, 2 * 768))
        out[kind] = bytes_per_class(selector) if kind != "mlp" else 300 * (768 * 4 + 8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; --quick: 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = (12, 8) if args.quick else (48, 32)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    backbone = load_backbone("builtin:tiny-sam")
    rows: dict[tuple, list[dict]] = {}
    for seed in seeds:
        suite = embedded_suite(train, test, seed)
        learned = [suite.general] + suite.domains
        feats = {d.name: {"train": embed(backbone, d.train), "test": embed(backbone, d.test)}
                 for d in learned + suite.unseen}
        for kind in KINDS:
            for variant in VARIANTS:
                rows.setdefault((kind, variant), []).append(
                    measure(kind, variant, feats, [d.name for d in learned], [d.name for d in suite.unseen],
                            train, seed))
    names = list(rows[("mlp", "mean")][0]["per"])
    unseen = list(rows[("mlp", "mean")][0]["to_base"])
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print(f"tiny SAM (D = {backbone.hidden_size}), {train} train / {test} test images per domain, seeds {seeds}")
    head = ["kind", "features", "acc", "frr"] + [n[:8] for n in names] + [f"{u[:9]}->base" for u in unseen] + \
        ["B/class", "update s"]
    print("  ".join(f"{h:>10}" for h in head))
    for (kind, variant), results in rows.items():
        cells = [kind, variant, f"{mean([r['acc'] for r in results]):.3f}", f"{mean([r['frr'] for r in results]):.3f}"]
        cells += [f"{mean([r['per'][n] for r in results]):.3f}" for n in names]
        cells += [f"{mean([r['to_base'][u] for r in results]):.3f}" for u in unseen]
        cells += [f"{results[0]['bytes']:,}", f"{mean([r['seconds'] for r in results]):.4f}"]
        print("  ".join(f"{c:>10}" for c in cells))
    sizes = vit_b_bytes(train)
    print("ViT-B (D = 768, default features) bytes per domain: "
          + ", ".join(f"{k} {v:,}" + (" (buffer, N_e = 300)" if k == "mlp" else "") for k, v in sizes.items()))


if __name__ == "__main__":
    main()
