"""Hold out training identities for validation (checkpoint selection without the test set).

The rule, deterministic and seed-free:
1. Eligible identities: training identities seen by at least two cameras and with more images
   than cameras (so every held-out identity has a gallery image from another camera than some
   query of it).
2. Pick `n` of them evenly spaced over the eligible pids in ascending order: the i-th pick is
   eligible[floor((i + 0.5) * len(eligible) / n)].
3. For each held-out identity and each of its cameras (ascending), the image with the smallest
   path goes to `val_query`; all its other images go to `val_gallery`.
The held-out identities leave the training split, so they never receive a training label.
"""

from __future__ import annotations

from collections import defaultdict

from reidprune.data.records import ImageRecord
from reidprune.errors import DataError


def hold_out(
    train: list[ImageRecord], n: int
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Split `train` into (remaining train, val_query, val_gallery) holding out `n` identities."""
    if n < 0:
        raise DataError(f"data.val_ids={n}: expected >= 0")
    if n == 0:
        return list(train), [], []
    by_pid: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in train:
        by_pid[record.pid].append(record)
    eligible = [
        pid
        for pid in sorted(by_pid)
        if len({r.camid for r in by_pid[pid]}) >= 2 and len(by_pid[pid]) > len({r.camid for r in by_pid[pid]})
    ]
    if n >= len(by_pid):
        raise DataError(
            f"data.val_ids={n}: the training split has only {len(by_pid)} identities; keep some to train on"
        )
    if n > len(eligible):
        raise DataError(
            f"data.val_ids={n}: only {len(eligible)} training identities are seen by >= 2 cameras "
            "with more images than cameras (needed for a query/gallery split)"
        )
    held = {eligible[int((i + 0.5) * len(eligible) / n)] for i in range(n)}
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for pid in sorted(held):
        seen: set[int] = set()
        for record in sorted(by_pid[pid], key=lambda r: (r.camid, r.path)):
            if record.camid in seen:
                gallery.append(record)
            else:
                seen.add(record.camid)
                query.append(record)
    remaining = [r for r in train if r.pid not in held]
    return remaining, query, gallery
