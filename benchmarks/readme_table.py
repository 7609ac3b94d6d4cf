"""Print the README's tables from the committed results, so that every figure in them has a source:
benchmarks/results/summary.csv (this project's runs) and benchmarks/published.csv (the peers').

    python benchmarks/readme_table.py            # results at a glance
    python benchmarks/readme_table.py --times    # each script's default budget and its time
    python benchmarks/readme_table.py --mujoco   # ppo_continuous.py's MuJoCo table at 1M (docs/ppo_continuous.md)

± is the sample standard deviation over seeds (ddof=1).
"""

import argparse
import csv
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "summary.csv"
PUBLISHED = Path(__file__).resolve().parent / "published.csv"

# (script, experiment, its steps, what it runs, published figures at the same steps: (project, env, statistic))
GLANCE = [
    ("ppo_discrete", "cartpole", 100_000, "defaults", [("RL Zoo (SB3)", "CartPole-v1", "deterministic eval")]),
    (
        "ppo_discrete",
        "acrobot",
        500_000,
        "preset `acrobot`",
        [("CleanRL", "Acrobot-v1", "training episodes (mean over seeds)")],
    ),
    ("ppo_discrete", "lunarlander", 500_000, "preset `lunarlander`", []),
    ("ppo_continuous", "pendulum", 200_000, "preset `pendulum`", []),
    (
        "ppo_continuous",
        "halfcheetah",
        1_000_000,
        "defaults",
        [
            ("CleanRL", "HalfCheetah-v4", "training episodes (mean over seeds)"),
            ("RL Zoo (SB3)", "HalfCheetah-v3", "deterministic eval"),
            ("Tianshou", "HalfCheetah-v3", "eval (mean over seeds)"),
        ],
    ),
    ("ppo_continuous", "bipedalwalker-tuned2", 2_000_000, "preset `bipedalwalker-tuned2`", []),
    (
        "ppo_atari",
        "breakout-1m",
        1_000_000,
        "defaults, first 1M steps of 10M",
        [
            ("CleanRL", "BreakoutNoFrameskip-v4", "training episodes (mean over seeds)"),
            ("RL Zoo (SB3)", "BreakoutNoFrameskip-v4", "training, last 100 episodes"),
        ],
    ),
    (
        "ppo_transformer",
        "transformer-novel-clip-each-035",
        100_000,
        "defaults, `--mask-velocity`",
        [("RL Zoo (SB3)", "CartPoleNoVel-v1", "deterministic eval")],
    ),
    ("ppo_transformer", "transformer-novel-500k-clip-each-035", 500_000, "defaults, `--mask-velocity`", []),
    ("a3c", "a3c-cartpole", 500_000, "defaults", []),
    ("sac", "sac-pendulum", 20_000, "defaults", [("RL Zoo (SB3)", "Pendulum-v1", "deterministic eval")]),
    (
        "sac",
        "sac-halfcheetah-300k",
        300_000,
        "defaults",
        [
            ("CleanRL", "HalfCheetah-v2", "training episodes (mean over seeds)"),
            ("Tianshou", "HalfCheetah-v3", "eval (mean over seeds)"),
        ],
    ),
]

# Each script's default budget, and the experiment whose logged steps/s times it (the defaults' own settings).
TIMES = [
    ("ppo_discrete", "CartPole-v1", 100_000, "cartpole"),
    ("ppo_continuous", "HalfCheetah-v4", 1_000_000, "halfcheetah"),
    ("ppo_atari", "BreakoutNoFrameskip-v4", 10_000_000, "atari-speed"),
    ("ppo_transformer", "CartPole-v1", 100_000, "transformer-novel-clip-each-035"),
    ("a3c", "CartPole-v1", 500_000, "a3c-cartpole"),
    ("sac", "Pendulum-v1", 20_000, "sac-pendulum"),
]


def read(path: Path) -> list:
    with open(path) as f:
        return list(csv.DictReader(f))


def stat(values: list) -> str:
    """mean ± sample std, with one decimal (three for returns within [-1, 1])."""
    digits = 1 if np.abs(values).max() >= 10 else 3
    spread = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{np.mean(values):.{digits}f}{spread}"


def published_value(p: dict) -> str:
    """A published figure as the tables print it: ≈ where it was read off a plot, ± where given."""
    spread = f" ± {p['plus_minus']}" if p["plus_minus"] else ""
    return ("≈ " if p["read_off_plot"] == "yes" else "") + p["value"] + spread


def training(rows: list) -> str:
    """The last 20 training episodes' mean over seeds, and the last 100's where every run logged them."""
    train = stat([float(r["last20_train_return"]) for r in rows])
    last100 = [float(r["last100_train_return"]) for r in rows if r["last100_train_return"]]
    return train + (f" ({stat(last100)})" if len(last100) == len(rows) else "")


def glance(results: list, published: list) -> None:
    print(
        "| script | setting | env | steps | seeds | eval | training, last 20 (last 100) | published at the same steps |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    sources = {}  # reference-style links, listed after the table
    for script, name, steps, setting, refs in GLANCE:
        rows = [r for r in results if r["experiment"] == name]
        evals = [float(r["eval_return_mean"]) for r in rows if r["eval_return_mean"]]
        train = training(rows)
        cited = []
        for project, env, statistic in refs:
            for p in published:
                key = (p["our_script"], p["project"], p["env"], p["statistic"], p["steps"])
                if key == (f"{script}.py", project, env, statistic, str(steps)):
                    value = published_value(p)
                    seeds = "1 run" if p["seeds"] == "1" else f"{p['seeds']} seeds"
                    kind = "training" if statistic.startswith("training") else "eval"
                    key = sources.setdefault(p["source"], f"{len(sources) + 1}")
                    cited.append(f"[{project.replace(' (SB3)', '')}][{key}] {value} ({kind}, {seeds})")
        env_id = rows[0]["env_id"].replace("popgym:", "")
        print(
            f"| {script} | {setting} | {env_id} | {steps:,} | {len(rows)} | {stat(evals)} | {train} | "
            + ("; ".join(cited) or "—")
            + " |"
        )
    print()
    for url, key in sources.items():
        print(f"[{key}]: {url}")


MUJOCO = ["halfcheetah", "hopper", "walker2d", "ant", "humanoid", "invertedpendulum", "pusher"]
PEERS = ["CleanRL", "RL Zoo (SB3)", "Tianshou"]


def mujoco(results: list, published: list) -> None:
    """ppo_continuous.py's defaults at 1M steps beside each peer's PPO figure at 1M on the same task (any version)."""
    print("| env | seeds | eval | training, last 20 (last 100) | CleanRL | RL Zoo | Tianshou |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in MUJOCO:
        rows = [r for r in results if r["experiment"] == name]
        if not rows:
            continue
        env_id = rows[0]["env_id"]
        train = training(rows)
        cells = []
        for project in PEERS:
            found = [
                p
                for p in published
                if p["project"] == project
                and p["our_script"] == "ppo_continuous.py"
                and p["steps"] == "1000000"
                and p["env"].split("-v")[0] == env_id.split("-v")[0]
            ]
            cells.append("; ".join(f"{published_value(p)} ({p['env']})" for p in found) or "—")
        evals = stat([float(r["eval_return_mean"]) for r in rows if r["eval_return_mean"]])
        print(f"| {env_id} | {len(rows)} | {evals} | {train} | " + " | ".join(cells) + " |")


def times(results: list) -> None:
    print("| script | default env | default steps | steps/s (experiment) | time |")
    print("| --- | --- | --- | --- | --- |")
    for script, env_id, steps, name in TIMES:
        sps = np.mean([float(r["sps"]) for r in results if r["experiment"] == name])
        seconds = steps / sps
        took = (
            f"{seconds / 3600:.1f} h"
            if seconds > 5400
            else f"{seconds / 60:.0f} min"
            if seconds > 120
            else f"{seconds:.0f} s"
        )
        print(f"| {script} | {env_id} | {steps:,} | {sps:.0f} (`{name}`) | {took} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--times", action="store_true", help="the default budgets and their time")
    parser.add_argument("--mujoco", action="store_true", help="ppo_continuous.py's MuJoCo table at 1M")
    args = parser.parse_args()
    results = read(RESULTS)
    if args.times:
        times(results)
        return
    if args.mujoco:
        mujoco(results, read(PUBLISHED))
        return
    glance(results, read(PUBLISHED))


if __name__ == "__main__":
    main()
