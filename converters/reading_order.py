"""The reading order of a page's regions: a column-aware recursive XY-cut.

One order for the whole package: the layout task writes its targets in it (so a model learns it) and the
page pipeline lays a document's items out in it. On a set of boxes:
1. a vertical gap that no box crosses splits the set into columns, read left to right;
2. otherwise horizontal gaps split it into bands, and consecutive bands are merged while their union still
   has a vertical gap (the bands of one multi-column stretch between full-width elements such as a title),
   each merged group read top to bottom;
3. boxes that neither cut separates (overlapping ones) are read by their top, then left edge.
Each group is ordered again by the same rules, so columns inside columns and rows inside a column follow.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]  # x0, y0, x1, y1, any one unit


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """The indices of `boxes` in reading order."""
    return _order(list(range(len(boxes))), boxes)


def _order(indices: list[int], boxes: Sequence[Box]) -> list[int]:
    if len(indices) <= 1:
        return indices
    columns = _split(indices, boxes, axis=0)
    if len(columns) > 1:
        return [i for column in columns for i in _order(column, boxes)]
    bands = _split(indices, boxes, axis=1)
    if len(bands) == 1:
        return sorted(indices, key=lambda i: (boxes[i][1], boxes[i][0], i))
    groups = [bands[0]]
    for band in bands[1:]:
        if len(_split(groups[-1] + band, boxes, axis=0)) > 1:
            groups[-1] = groups[-1] + band
        else:
            groups.append(band)
    return [i for group in groups for i in _order(group, boxes)]


def _split(indices: list[int], boxes: Sequence[Box], axis: int) -> list[list[int]]:
    """`indices` in runs separated by gaps along `axis` (0: x, 1: y) that no box crosses, in order."""
    ordered = sorted(indices, key=lambda i: (boxes[i][axis], boxes[i][axis + 2], i))
    runs, end = [], None
    for i in ordered:
        start, stop = boxes[i][axis], boxes[i][axis + 2]
        if end is None or start > end:
            runs.append([])
        runs[-1].append(i)
        end = stop if end is None or start > end else max(end, stop)
    return runs
