"""Linear probe sweep (5 split seeds x k in {1, 4, 16}) with the on-disk feature cache
against the same sweep recomputing the frozen backbone in every run, in one process.

    .venv/bin/python scripts/bench_linear_probe.py [--backbone smollm2-135m] [--test-size 100] [--min-steps 30] [--seeds 5]

--min-steps sets method.min_steps (default: the method's own, 300). Recomputing runs the backbone
at every step, so the default makes the recompute side long (each k=16 run ~300 forwards of 16
sentences); --min-steps 30 trains 30 steps a run (measured as --min-steps 0 when a method's min_steps
only raised the regime's 30: 12 min 51 s here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sweep(out: Path, backbone: str, test_size: int, cached: bool, min_steps: int | None,
          seeds: int = 5) -> tuple[float, list[float]]:
    from hydra import compose, initialize_config_dir

    from shotlab.train import run

    accs, t0 = [], time.perf_counter()
    for k in (1, 4, 16):
        for seed in range(seeds):
            with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("train", overrides=[
                    f"backbone={backbone}", "method=linear_probe", f"regime.k={k}", f"seed={seed}",
                    f"task.test_size={test_size}", "logger=none", "trainer.enable_progress_bar=false",
                    f"method.feature_cache={str(cached).lower()}", f"output_dir={out / f'k{k}-s{seed}'}",
                    *([f"method.min_steps={min_steps}"] if min_steps is not None else []),
                ])
            accs.append(run(cfg)["test_acc"])
    return time.perf_counter() - t0, accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--min-steps", type=int, default=None, help="method.min_steps (default: the method's)")
    parser.add_argument("--seeds", type=int, default=5, help="split seeds 0..N-1 per k (fewer: a shorter, more "
                        "conservative ratio, as each cached run reuses the features of the runs before it)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        # A fresh feature cache, so the cached sweep pays for computing its features once.
        os.environ["SHOTLAB_FEATURES"] = str(Path(tmp) / "features")
        plain, plain_accs = sweep(Path(tmp) / "plain", args.backbone, args.test_size, False, args.min_steps, args.seeds)
        cached, cached_accs = sweep(Path(tmp) / "cached", args.backbone, args.test_size, True, args.min_steps, args.seeds)
        shutil.rmtree(Path(tmp) / "features", ignore_errors=True)
    steps = "the method's" if args.min_steps is None else args.min_steps
    print(f"linear_probe sweep, {args.backbone}, {args.seeds} seeds x k in (1, 4, 16), test_size={args.test_size}, "
          f"method.min_steps={steps}")
    print(f"| recompute every run | {plain:7.1f} s |")
    print(f"| feature cache       | {cached:7.1f} s |")
    print(f"speed-up: {plain / cached:.1f}x")
    same = max(abs(a - b) for a, b in zip(plain_accs, cached_accs))
    print(f"largest accuracy difference between the two sweeps: {same:.4f}")


if __name__ == "__main__":
    main()
