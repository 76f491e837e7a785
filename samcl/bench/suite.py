"""The domains a benchmark (or the demo) runs on: the embedded synthetic suite (`samcl.data.synthetic`: the
general domain, the target domains in order, the unseen ones) or dataset folders, as `Suite`s of
`DomainData`; `SuiteSpec` is the picklable description a worker process builds its suite from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..data import synthetic
from .protocol import DomainData


@dataclass
class Suite:
    """domains: learned in order; unseen: evaluated, never learned; general: the base model's own domain
    (learned by SAMCL without a module, evaluated for every method)."""

    domains: list[DomainData]
    unseen: list[DomainData]
    general: DomainData | None

    @property
    def extra(self) -> list[DomainData]:
        """Every domain evaluated but not learned: the general domain first, then the unseen ones."""
        return ([self.general] if self.general is not None else []) + self.unseen


def embedded_suite(train: int, test: int, seed: int) -> Suite:
    """The synthetic suite with `train`/`test` images per domain; the images depend on `seed`."""
    make = lambda name: DomainData(name, synthetic.generate(name, train, seed, "train"),  # noqa: E731
                                   synthetic.generate(name, test, seed, "test"))
    general = make(synthetic.GENERAL)
    return Suite([make(n) for n in synthetic.TARGET_DOMAINS], [make(n) for n in synthetic.UNSEEN_DOMAINS], general)


def folder_suite(domains, extra, general, seed: int) -> Suite:
    """Dataset folders ((name, folder) pairs; `general` one pair or None), test points seeded by `seed`."""
    from .. import FolderDataset
    from ..data import resolve_split

    make = lambda name, path: DomainData(  # noqa: E731
        name, FolderDataset(resolve_split(path, "train"), seed=seed),
        FolderDataset(resolve_split(path, "test"), seed=seed))
    return Suite([make(*d) for d in domains], [make(*d) for d in extra], make(*general) if general else None)


@dataclass(frozen=True)
class SuiteSpec:
    """How to build the domains (each worker process builds its own): the embedded synthetic suite, or folders.
    domains: (name, folder) in learning order; extra: evaluated, never learned; general: the base model's own
    domain (learned by SAMCL without a module, evaluated for every method)."""

    embedded: bool = True
    domains: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    general: tuple[str, str] | None = None

    def build(self, train: int, test: int, seed: int) -> Suite:
        """The domains for `seed` (`train`/`test`: images per embedded domain). Built once per process and
        seed: a worker runs one seed's jobs after another, so only the last suite is kept."""
        return _build(self, train, test, seed)

    def describe(self) -> dict:
        if self.embedded:
            return {"suite": "embedded synthetic (samcl.data.synthetic)", "domains": list(synthetic.TARGET_DOMAINS),
                    "extra": list(synthetic.UNSEEN_DOMAINS), "general": synthetic.GENERAL}
        return {"suite": "folders", "domains": [list(d) for d in self.domains], "extra": [list(d) for d in self.extra],
                "general": list(self.general) if self.general else None}


@lru_cache(maxsize=1)
def _build(spec: SuiteSpec, train: int, test: int, seed: int) -> Suite:
    if spec.embedded:
        return embedded_suite(train, test, seed)
    return folder_suite(spec.domains, spec.extra, spec.general, seed)
