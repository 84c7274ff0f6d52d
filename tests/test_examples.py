"""Every example runs, with tiny arguments, in a fresh process."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_sampling_parallel_mlp_example_learns():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "sampling_parallel_mlp.py"), "--steps", "60"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    accuracy = float(result.stdout.strip().split()[-1])
    assert accuracy > 0.6  # ten classes; chance is 0.1
