"""Peak memory while training does not grow with the data set's size: the pipelines stream
from disk. Trains on a generated image folder and on one four times larger, each in its own
process, and compares the processes' peak resident memory."""

import json
import subprocess
import sys

import pytest

import datagen
from conftest import REPO, cli_env

TINY = REPO / "tests" / "fixtures" / "tiny_recipe.py"

PEAK_RSS = """
import resource, sys
from workbench.run import main
code = main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def _peak_rss_kb(folder, out):
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(TINY), "--quiet", "--out", str(out),
         "--stages", "train", "--epochs", "2", "--set", f"data={folder}",
         "--set", "data_options.image_size=[192,192]", "--set", "batch_size=8"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("PEAK_RSS_KB"))
    return int(line.split()[1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_data_set(tmp_path):
    # 192x192x3 float32 images are 432 KiB each once decoded: holding the larger set's 1,200
    # training images would add over 500 MiB, far above the 20% allowed.
    small = datagen.image_folder(tmp_path / "small", per_class=100, size=192)
    large = datagen.image_folder(tmp_path / "large", per_class=400, size=192)
    small_kb = _peak_rss_kb(small, tmp_path / "run_small")
    large_kb = _peak_rss_kb(large, tmp_path / "run_large")
    (tmp_path / "rss.json").write_text(json.dumps({"small": small_kb, "large": large_kb}))
    print(f"peak RSS: 300 images {small_kb / 1024:.0f} MiB, 1200 images {large_kb / 1024:.0f} MiB "
          f"(+{(large_kb / small_kb - 1):.1%})")
    assert large_kb < 1.2 * small_kb
