"""The examples each `samcl COMMAND --help` ends with (they run as written: tests check them)."""

from ..assets import BUILTIN_TINY_SAM as BUILTIN
from .runtime_flags import EXPORT_EXAMPLES

EXAMPLES = {
    "learn": f"""\
examples:
  samcl learn my-set --domain polyps --data data/kvasir              # new set on the shipped tiny SAM ({BUILTIN})
  samcl learn my-set --base sam_vit_b_01ec64.pth --domain polyps --data data/kvasir
  samcl learn my-set --domain shadows --data data/istd --epochs 20   # later domains: the base is remembered
  samcl learn my-set --domain general --data data/coco --without-module  # SAM's own domain: no module
  samcl learn my-set --domain cells --data data/cells --json         # the report as JSON
  samcl learn my-set --domain cells --data data/cells-v2 --replace   # relearn cells: one new generation""",
    "info": """\
examples:
  samcl info my-set
  samcl info my-set --json | python -m json.tool""",
    "segment": """\
examples:
  samcl segment my-set photo.jpg --point 320,240 --out mask.png
  samcl segment my-set photo.jpg --point 320,240 --negative 10,10 --out mask.png   # a negative point too
  samcl segment my-set photo.jpg --box 100,80,420,360 --out mask.png --json         # a box; JSON summary
  samcl segment my-set a.jpg b.png --point 50,50 --out masks/                      # masks/a.png, masks/b.png
  samcl segment my-set photo.jpg --point 320,240 --out - > mask.png                # PNG bytes to stdout
  samcl segment my-set photo.jpg --auto --out auto.json         # every object: COCO results + auto.png labels
  samcl segment my-set a.jpg b.png --auto --points-per-side 16 --pred-iou-thresh 0.5 --out auto/
points and boxes are 0-based pixel x,y in the image as viewers show it (EXIF orientation applied).""",
    "eval": """\
examples:
  samcl eval my-set --data polyps=data/kvasir --data shadows=data/istd
  samcl eval my-set --data polyps=data/kvasir/test --json
  samcl eval my-set --data general=data/coco          # the domain learned --without-module, by its name""",
    "forget": """\
examples:
  samcl forget my-set polyps              # the set as if polyps had never been learned
  samcl forget my-set polyps --json
""",
    "merge": """\
examples:
  samcl merge both site-a site-b                         # the union of two sets learned apart on one base
  samcl merge both site-a site-b --rename cells=cells-b  # site-b's cells clashes with site-a's
""",
    "import-reference": """\
examples:
  samcl import-reference SAMCL/checkpoint/SAM1 ref-vitb --base sam_vit_b_01ec64.pth
  samcl import-reference SAMCL/checkpoint/SAM2 ref-hiera-t --base sam2.1_hiera_tiny.pt \\
      --selector-file SAMCL/checkpoint/SAM2/Module_Selector.pth --json
  samcl segment ref-vitb polyp.jpg --point 320,240 --out mask.png    # then use it as any store
The files are read without running their pickles (an allow-list of the classes they hold). The modules keep the
authors' forward (image stretched to a square, their heat), recorded in the store; `learn` refuses such a store.""",
    "export": EXPORT_EXAMPLES,
    "serve": """\
examples:
  samcl serve my-set                                   # http://127.0.0.1:8000/ : the page; /docs : the API
  samcl serve my-set --port 9000 --max-batch 1         # cross-request batching off
  SAMCL_SERVE_TOKEN=secret samcl serve my-set --host 0.0.0.0 --workers 2
  curl --data-binary @photo.jpg localhost:8000/v1/images          # -> {"image_id": ...}
  curl -H 'Content-Type: application/json' localhost:8000/v1/segment \\
       -d '{"image_id": "ID", "points": [[320, 240]], "labels": [1]}'""",
    "demo": """\
examples:
  samcl demo --quick                     # under 2 minutes on 2 CPU cores
  samcl demo --out demo-out --json       # the full run; summary as JSON""",
}

TOP_EXAMPLES = f"""\
examples:
  samcl demo --quick                                   # the whole method on the shipped tiny SAM, on CPU
  samcl learn my-set --base sam_vit_b_01ec64.pth --domain polyps --data data/kvasir
  samcl segment my-set photo.jpg --point 320,240 --negative 10,10 --out mask.png --json
  samcl eval my-set --data polyps=data/kvasir --json
base models: an HF directory, Meta's SAM .pth or SAM 2.1 .pt, or {BUILTIN} (shipped; the default).
`samcl COMMAND --help` shows each command's flags, defaults and examples."""
