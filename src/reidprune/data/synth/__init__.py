"""The embedded synthetic person re-ID data set (`reidprune data synth`, `data.format=synth`).

Why: a data set that ships with the code, so that training, pruning, evaluation and the
benchmarks run end to end on a fresh machine without downloads, through the same Market-1501
parser as the real data.

Generative model (all of it seeded; `appearance.py`, `render.py`, `generate.py`):

- Identity = a fixed set of attributes drawn from short lists: upper-garment colour, a second
  colour and a pattern (solid, horizontal / vertical stripes, checks, a two-tone yoke, or a chest
  logo that only shows from the front), sleeve length, lower garment (trousers, shorts, skirt)
  and its colour, shoes, skin tone, hair colour and style (short, long, ponytail, bald, hat),
  build (height, width) and a bag (none, backpack, shoulder bag, handbag) with its colour.
  Named colours get a small per-identity offset, so identities that share a colour name still
  differ slightly: telling them apart takes the combination of cues, not one colour.
- Camera (6 per set) = a colour cast (RGB gains), brightness, contrast, blur, sensor noise, JPEG
  quality, a mix of viewpoints (front / back / profile, each camera favouring some), a typical
  person scale, and a scene (wall and ground colours, horizon height, amount of clutter).
- Image = scene background (textured wall and ground plus random boxes, poles, blobs, fences
  in colours that overlap the clothing palette), sometimes a bystander cut by the crop border,
  then the person walking (random stride phase, viewpoint drawn from the camera's mix, facing
  left or right, scale / position / feet-cut jitter) drawn as anti-aliased capsules, ellipses
  and trapezoids; then the camera's cast, contrast, illumination jitter, blur and noise.
  Viewpoint changes what is visible (a backpack is straps from the front and a block from the
  back; a chest logo disappears from behind), which, with the camera casts, keeps the task
  from being colour matching. The person fills about 60-85 % of the crop height and a third of
  its width; the rest is clutter, so attention-guided token selection has something to find.
- Occluded variant (`--occluded`): every query image has an object (car / bench / bush from the
  bottom, pole / tree / wall from a side) covering 20-50 % of the person's pixels, the fraction
  chosen exactly from cumulative pixel counts; about 10 % of training and gallery images are
  occluded too, as in Occluded-Duke. Apart from the occluders it is the same set as without.
- Layout: identities 1..N split at random into training and test halves (disjoint); 20-30
  images per identity over 2-6 cameras; per test identity and camera one image is the query,
  the rest go to the gallery, with N/4 pid-0 distractors and N/8 pid -1 junk crops. 128 x 64
  JPEGs with Market-1501 names (`0007_c3s1_000412_01.jpg`) by default; other sizes (256 x 128:
  the same scenes at twice the resolution) and the MSMT17 layout are options (`generate.py`).
- Scale: rendering runs in worker processes (`workers`); every image's randomness is keyed by
  (seed, purpose, number), so the bytes do not depend on the worker count or the order.
"""

from reidprune.data.synth.generate import (
    LAYOUTS,
    MANIFEST,
    SynthSpec,
    default_workers,
    ensure,
    generate,
    plan,
    read_manifest,
)
from reidprune.data.synth.render import Rendered, render

__all__ = [
    "LAYOUTS",
    "MANIFEST",
    "Rendered",
    "SynthSpec",
    "default_workers",
    "ensure",
    "generate",
    "plan",
    "read_manifest",
    "render",
]
