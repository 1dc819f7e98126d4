"""bench/bench_pipeline.py runs: its smoke mode converts composed pages both ways (per route and page, and the
pipeline), finds the same text for every region and prints both rates and their ratio."""

import re
import subprocess
import sys

from conftest import REPO


def test_smoke_run_compares_equal_texts():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_pipeline.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    regions = re.search(r"3 pages, (\d+) regions \(table (\d+), molecule (\d+), music (\d+), text (\d+)\)", done.stdout)
    assert regions and int(regions[1]) == sum(int(n) for n in regions.groups()[1:]) >= 9, done.stdout
    row = re.search(r"batch 4 : per route and page +([\d.]+) pages/s \(([\d.]+) crops a batch\) \| pipeline +([\d.]+) "
                    r"pages/s \(([\d.]+) crops a batch, window 16 pages\) \| ([\d.]+)x; texts equal", done.stdout)
    assert row, done.stdout
    base, base_fill, ours, fill, ratio = (float(x) for x in row.groups())
    assert base > 0 and ours > 0 and ratio > 0
    assert fill > base_fill  # the pipeline's batches hold crops of several pages
