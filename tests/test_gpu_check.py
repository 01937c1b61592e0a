"""bench/gpu_check.py, the script a person runs once on a CUDA machine, exercised here on the CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_the_gpu_check_runs_every_section_on_the_cpu() -> None:
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--steps", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert not [name for name, part in report.items() if isinstance(part, dict) and "error" in part], report
    assert report["scan"]["agrees"] and report["scan"]["against"] == "clinix float64 reference"
    assert report["mamba_module"]["skipped"].startswith("mamba_ssm does not import")
    modes = report["training"]["modes"]
    assert set(modes) == {"float32", "bf16_autocast"}  # fp16 with the scaler is a CUDA mode
    for mode in modes.values():
        assert not mode["any_loss_nan"] and all(math.isfinite(loss) for loss in mode["losses"])
        assert 0.7 < mode["memory_over_estimate"] < 1.3  # the process's peak against the planner's estimate
    assert report["torchrun"]["exit_code"] == 0 and report["torchrun"]["checkpoint_written"]
    assert report["inference"]["probabilities_sum_to_one"]
    assert report["inference"]["seconds_with_tta"] > 0


def test_asking_for_cuda_without_a_gpu_is_one_line_and_exit_2() -> None:
    import torch

    if torch.cuda.is_available():
        return
    completed = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert json.loads(completed.stdout) == {
        "error": "no CUDA device here; use --device cpu --quick to exercise the script"
    }
