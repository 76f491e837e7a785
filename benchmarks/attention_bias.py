"""SAM's attention with its decomposed relative-position bias, one block, one thread: how the bias is built.

    python benchmarks/attention_bias.py          # ViT-B block shapes at 1024 px: global (64x64) and 25 windows of 14x14

Variants, each through PyTorch's `scaled_dot_product_attention`, in bfloat16 and float32 (min of 3 calls; max
|difference| from transformers' own bias in brackets):
  theirs   transformers' `get_decomposed_rel_pos` (a strided result, reshaped into the mask: one more copy);
  ours     `samcl.backbone.sam.rel_pos_bias`: the same values written into a contiguous mask (what samcl runs);
  trick    the bias folded into the query and key (query + its per-row terms, key + one-hot rows; no mask);
  no bias  the kernel without any mask: the floor for any way of adding the bias (a different result).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from transformers import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionAttention

from samcl.backbone.sam import rel_pos_bias


def variants(attn, query, key, value, side: int) -> dict:
    batch, heads, tokens, channels = query.shape

    def theirs():
        bias = attn.get_decomposed_rel_pos(query.reshape(batch * heads, tokens, -1), attn.rel_pos_h, attn.rel_pos_w,
                                           (side, side), (side, side)).reshape(batch, heads, tokens, tokens)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=attn.scale)

    def ours():
        return F.scaled_dot_product_attention(query, key, value, attn_mask=rel_pos_bias(attn, query, side, side),
                                              scale=attn.scale)

    def trick():
        grid = query.reshape(batch, heads, side, side, channels)
        along_h = torch.einsum("bnhwc,hkc->bnhwk", grid, attn.get_rel_pos(side, side, attn.rel_pos_h))
        along_w = torch.einsum("bnhwc,wkc->bnhwk", grid, attn.get_rel_pos(side, side, attn.rel_pos_w))
        rows = [along_h.reshape(batch, heads, tokens, side) / attn.scale,
                along_w.reshape(batch, heads, tokens, side) / attn.scale]
        eye = torch.eye(side, dtype=query.dtype)
        one_hot_h = eye[:, None, :].expand(side, side, side).reshape(tokens, side)  # key (kh, kw) -> one-hot kh
        one_hot_w = eye[None, :, :].expand(side, side, side).reshape(tokens, side)
        wide_query = torch.cat([query, *rows], -1)
        wide_key = torch.cat([key, one_hot_h.expand(batch, heads, tokens, side),
                              one_hot_w.expand(batch, heads, tokens, side)], -1)
        return F.scaled_dot_product_attention(wide_query, wide_key, value, scale=attn.scale)

    def no_bias():
        return F.scaled_dot_product_attention(query, key, value, scale=attn.scale)

    return {"theirs": theirs, "ours": ours, "trick": trick, "no bias": no_bias}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s); ViT-B: 12 heads of 64")
    for dtype in (torch.bfloat16, torch.float32):
        for side, batch in ((64, 1), (14, 25)):
            attn = SamVisionAttention(SamVisionConfig(), window_size=0 if side == 64 else side).eval()
            with torch.no_grad():
                attn.rel_pos_h.normal_(0, 0.5)
                attn.rel_pos_w.normal_(0, 0.5)
            attn.to(dtype)
            query, key, value = (torch.randn(batch, 12, side * side, 64, dtype=dtype) for _ in range(3))
            results = {}
            with torch.no_grad():
                functions = variants(attn, query, key, value, side)
                reference = functions["theirs"]().float()
                for name, function in functions.items():
                    difference = (function().float() - reference).abs().max().item()
                    times = []
                    for _ in range(3):
                        start = time.perf_counter()
                        function()
                        times.append(time.perf_counter() - start)
                    results[name] = (min(times), difference)
            where = "global 64x64" if side == 64 else f"{batch} windows of {side}x{side}"
            print(f"{str(dtype).removeprefix('torch.'):<9} {where:<22} " + "  ".join(
                f"{name} {seconds * 1000:.0f} ms ({difference:.2g})" for name, (seconds, difference) in results.items()))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
