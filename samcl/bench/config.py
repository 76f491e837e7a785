"""What one benchmark run is asked to do: methods, seeds, sizes, suite, where results and resumable state go."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .methods import FULL, METHODS, QUICK, BenchmarkSize
from .suite import SuiteSpec


@dataclass
class BenchmarkConfig:
    out: Path
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    quick: bool = False
    base: str | None = None
    suite: SuiteSpec = SuiteSpec()
    jobs: int = 1
    state: Path | None = None
    max_steps: int | None = None
    progress: bool = True
    device: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    command: str = ""
    sizes: BenchmarkSize | None = None  # instead of FULL / QUICK (tests)

    @property
    def size(self) -> BenchmarkSize:
        size = self.sizes or (QUICK if self.quick else FULL)
        if self.epochs is not None:
            size = replace(size, epochs=self.epochs)
        if self.batch_size is not None:
            size = replace(size, batch_size=self.batch_size)
        return size

    @property
    def state_dir(self) -> Path:
        return self.state if self.state is not None else self.out / "state"
