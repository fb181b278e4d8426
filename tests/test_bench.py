"""The benchmark command: both loops run on the same model and data, the ratio is printed last.

Speeds are not asserted (timed tests are flaky): the numbers must exist, be positive and agree
with each other as printed.
"""

from __future__ import annotations

import re
import subprocess
import sys


def run_bench(args, tmp_path):
    return subprocess.run([sys.executable, "-m", "agestudy.bench", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)


def test_bench_prints_both_loops_and_their_ratio_last(synthetic_root, tmp_path):
    proc = run_bench(["--data", str(synthetic_root), "--cache-dir", str(tmp_path / "cache"), "--model", "efficient",
                      "--crop", "64", "--batch-size", "16", "--steps", "2", "--warmup", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    ours = float(re.search(r"agestudy loop :\s+([\d.]+) images/s", out).group(1))
    naive = float(re.search(r"notebook loop :\s+([\d.]+) images/s", out).group(1))
    bare = float(re.search(r"model alone   :\s+([\d.]+) images/s", out).group(1))
    assert ours > 0 and naive > 0 and bare > 0
    assert re.search(r"fp32 matmul ceiling of this machine: \d+ GFLOP/s", out)
    last = out.strip().splitlines()[-1]
    ratio = float(re.fullmatch(r"speed-up ratio: ([\d.]+)x", last).group(1))
    assert abs(ratio - ours / naive) <= 0.01 + 0.01 * ratio  # printed to two decimals


def test_bench_rejects_bad_arguments_without_traceback(tmp_path):
    proc = run_bench(["--steps", "0"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--steps" in proc.stderr
    proc = run_bench(["--data", str(tmp_path / "nowhere")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
