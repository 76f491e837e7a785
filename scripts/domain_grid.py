"""Draw every synthetic domain (a few samples each: image, then mask overlay and points) to docs/domains.png.

    python scripts/domain_grid.py [--out docs/domains.png] [--per-domain 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from samcl.data import synthetic  # noqa: E402

CONVENTIONS = {
    "general": "the object under the points",
    "polyps": "this bulge, glints included",
    "camouflage": "the whole animal",
    "shadows": "the shadow, not its object",
    "skin_lesions": "core + halo",
    "cells": "ALL nuclei, no cytoplasm",
    "camouflage_sand": "unseen: the whole animal",
    "documents": "unseen, unlike all: the whole stamp",
}


def overlay(image: np.ndarray, mask: np.ndarray, color=(255, 40, 200), alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(color, np.float32)
    edge = mask & ~np.pad(mask, 1, mode="edge")[2:, 1:-1] | mask & ~np.pad(mask, 1, mode="edge")[:-2, 1:-1]
    edge |= mask & ~np.pad(mask, 1, mode="edge")[1:-1, 2:] | mask & ~np.pad(mask, 1, mode="edge")[1:-1, :-2]
    out[edge] = color
    return out.clip(0, 255).astype(np.uint8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/domains.png"))
    parser.add_argument("--per-domain", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--dpi", type=int, default=80)
    args = parser.parse_args(argv)

    domains = synthetic.ALL_DOMAINS
    cols = 2 * args.per_domain
    fig, axes = plt.subplots(len(domains), cols, figsize=(1.45 * cols, 1.65 * len(domains)), squeeze=False)
    for row, domain in enumerate(domains):
        role = "source" if domain == synthetic.GENERAL else "target" if domain in synthetic.TARGET_DOMAINS else "unseen"
        for k, sample in enumerate(synthetic.generate(domain, args.per_domain, args.seed, args.split)):
            ax_image, ax_mask = axes[row, 2 * k], axes[row, 2 * k + 1]
            ax_image.imshow(sample.image)
            ax_mask.imshow(overlay(sample.image, sample.mask))
            ax_mask.scatter(sample.points[:, 0], sample.points[:, 1], s=14, c="#00ff66", edgecolors="black",
                            linewidths=0.6)
            ax_image.set_title(f"{sample.size[1]}x{sample.size[0]}", fontsize=6, pad=2)
            for ax in (ax_image, ax_mask):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{domain}\n({role})", fontsize=8, fontweight="bold")
        axes[row, 1].set_title(CONVENTIONS.get(domain, ""), fontsize=6.5, pad=2, loc="left", color="#a0006e")
    fig.suptitle("samcl.data.synthetic: image | ground truth (magenta) with the 3 fixed points (green)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98), h_pad=0.4, w_pad=0.2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=args.dpi)
    # a 256-colour palette keeps the committed PNG small (full-colour renders of textures compress poorly)
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
