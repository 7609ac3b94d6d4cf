"""Speed after warm-up: what --compile costs once and gains per step, from finished runs.

    python benchmarks/steady_speed.py sac-speed-20k sac-speed-20k-compile halfcheetah-speed \
        halfcheetah-speed-compile > benchmarks/results/steady-speed.md

charts/SPS counts from the start of a run, so it includes torch.compile's compilation. Here,
per finished run in benchmarks/runs/: the whole run's steps/s, and the steps/s from the first SPS
logged at step 6000 or later to the last, read from the TensorBoard events' wall-clock times:
past SAC's 5000 random steps and its first updates, and PPO's first updates, where compilation
happens.
"""

import sys
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RUNS, latest_run  # noqa: E402  (benchmarks/ is a folder of scripts)

FROM_STEP = 6000


def speeds(run_dir: Path) -> tuple:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    sps = events.Scalars("charts/SPS")
    first, last = next(e for e in sps if e.step >= FROM_STEP), sps[-1]
    return last.value, (last.step - first.step) / (last.wall_time - first.wall_time)


def main() -> None:
    print("± is the sample standard deviation over seeds.\n")
    print("| experiment | seeds | steps/s, whole run | steps/s from step 6000 on |")
    print("| --- | --- | --- | --- |")
    for name in sys.argv[1:]:
        rows = [
            speeds(latest_run(seed)) for seed in sorted((RUNS / name).glob("seed*")) if (seed / "done.json").exists()
        ]
        whole, steady = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        print(
            f"| {name} | {len(rows)} | {whole.mean():.1f} ± {whole.std(ddof=1):.1f} | "
            f"{steady.mean():.1f} ± {steady.std(ddof=1):.1f} |"
        )


if __name__ == "__main__":
    main()
