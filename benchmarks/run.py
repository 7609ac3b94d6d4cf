"""Benchmark runner: experiments x seeds as separate processes, resumable, one CSV, plots.

    python benchmarks/run.py --list
    python benchmarks/run.py cartpole lunarlander acrobot --seeds 1 2 3 --jobs 2
    python benchmarks/run.py cartpole-speed cleanrl-speed cleanrl-speed-1thread --seeds 1 2 3 \
        --jobs 1 --baseline cleanrl-speed=/path/to/cleanrl/ppo.py \
        --baseline cleanrl-speed-1thread=/path/to/cleanrl/ppo.py

The experiments are data, in benchmarks/experiments.yaml. Each (experiment, seed) runs in
`benchmarks/runs/<experiment>/seed<S>/` with its log; a `done.json` there marks it finished, so a
stopped benchmark carries on where it was (a run whose flags or script have changed since is run
again). Then the TensorBoard events of every finished run are merged, by experiment and seed, into:
    benchmarks/results/curves.csv    mean training return per step bin, per run
    benchmarks/results/summary.csv   per run: final evaluation, last 20 and 100 training returns,
                                     steps/s, and what it ran on (script commit, torch, CPU, GPU)
    benchmarks/results/summary.md    mean ± sample standard deviation over seeds of every experiment
    benchmarks/results/<experiment>.png  learning curves, mean and range over seeds
A seed run here replaces its old results; the committed results of other seeds stay.
Speed is only comparable between runs of one invocation with --jobs 1.
"""

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs"
RESULTS = ROOT / "benchmarks" / "results"


def load_experiments(path: Path = ROOT / "benchmarks" / "experiments.yaml") -> dict:
    """The experiments, as data: benchmarks/experiments.yaml says what each key means. Flags
    become a list, `published` a list of (label, [(step, value), ...])."""
    with open(path) as f:
        experiments = yaml.safe_load(f)
    for exp in experiments.values():
        exp["flags"] = exp["flags"].split()
        exp["published"] = [(label, [tuple(p) for p in points]) for label, points in exp.get("published", {}).items()]
    return experiments


EXPERIMENTS = load_experiments()
# Former defaults, ablations and runs of removed flags: no longer run here, still in the results' tables.
ARCHIVED = load_experiments(ROOT / "benchmarks" / "experiments-archive.yaml")


def run_one(name: str, seed: int, baselines: dict) -> str:
    exp = EXPERIMENTS[name]
    work = RUNS / name / f"seed{seed}"
    script = baselines[name] if exp.get("baseline") else str(ROOT / exp["script"])
    launcher = [sys.executable]
    if "torchrun" in exp:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={exp['torchrun']}",
        ]
    cmd = [
        *launcher,
        script,
        "--env-id",
        exp["env_id"],
        "--seed",
        str(seed),
        "--total-timesteps",
        str(exp["steps"]),
        *exp["flags"],
    ]
    if not exp.get("baseline"):
        cmd += ["--runs-dir", "runs", "--no-progress"]
    script_hash = hashlib.sha256(Path(script).read_bytes()).hexdigest()
    done = work / "done.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record["command"][1:] == cmd[1:] and record.get("script_sha256") == script_hash:
            return f"{name} seed {seed}: already done"
    # Not run yet, stopped halfway, or run with other flags or another version of the script.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    where = ran_on(script, "--cuda" in cmd)  # before the run: the script may change meanwhile
    start = time.time()
    with open(work / "log.txt", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        env = {**os.environ, **exp.get("env", {})}
        rc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        return f"{name} seed {seed}: FAILED (exit {rc}), see {work / 'log.txt'}"
    record = {
        "command": cmd,
        "script_sha256": script_hash,
        "seconds": round(time.time() - start, 1),
        "ran_on": where,
    }
    (work / "done.json").write_text(json.dumps(record, indent=1))
    return f"{name} seed {seed}: done in {record['seconds']} s"


def ran_on(script: str, cuda: bool) -> dict:
    """What a run ran on: the commit of the script (with "+changes" when the file differs from
    it), the torch version, the CPU model and its wide vector units, and the GPU when used."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h", "--", script)
    if commit and git("status", "--porcelain", "--", script):
        commit += "+changes"
    probe = "import torch; print(torch.__version__); print(torch.cuda.get_device_name(0) if {} else '')"
    out = subprocess.run([sys.executable, "-c", probe.format(cuda)], capture_output=True, text=True).stdout
    torch_version, gpu = ([*out.splitlines(), "", ""])[:2]
    cpu, flags = "", set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu:
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    units = [name for name, flag in (("avx2", "avx2"), ("avx512", "avx512f"), ("amx", "amx_tile")) if flag in flags]
    return {
        "commit": commit,
        "torch": torch_version,
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "cpu_units": "+".join(units),
        "gpu": gpu,
    }


def latest_run(work: Path):
    """The newest run folder under a seed's `work/runs/` (the scripts name them by start time),
    or None before the script has made one."""
    dirs = sorted(p for p in (work / "runs").glob("*") if p.is_dir())
    return dirs[-1] if dirs else None


def read_scalars(run_dir: str) -> dict:
    """{tag: [(step, value), ...]} of every scalar in the TensorBoard events under run_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


SUMMARY_FIELDS = [
    "experiment",
    "env_id",
    "seed",
    "last_episode_step",
    "eval_return_mean",
    "last20_train_return",
    "sps",
    "commit",
    "torch",
    "cpu",
    "cpu_units",
    "gpu",
    "last100_train_return",
]
CURVE_FIELDS = ["experiment", "seed", "step", "mean_return"]


def collect(names: list, bins: int = 50) -> None:
    """Read every finished run of these experiments into the CSVs, then redraw their plots and
    the summary table. Results merge by (experiment, seed): a seed run here replaces its old
    rows, and the committed rows of the seeds not run here stay."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    curves, summary = [], []
    for name in names:
        exp = EXPERIMENTS[name]
        edges = np.linspace(0, exp["steps"], bins + 1)
        for work in sorted((RUNS / name).glob("seed*")):
            if not (work / "done.json").exists():
                continue
            seed = int(work.name[4:])
            record = json.loads((work / "done.json").read_text())
            scalars = read_scalars(str(latest_run(work)))
            returns = scalars.get("charts/episodic_return", [])
            steps = np.array([s for s, _ in returns])
            values = np.array([v for _, v in returns])
            for lo, hi in zip(edges[:-1], edges[1:]):
                in_bin = (steps > lo) & (steps <= hi)
                if in_bin.any():
                    curves.append([name, seed, int(hi), round(float(values[in_bin].mean()), 2)])
            evals = [v for _, v in scalars.get("eval/episodic_return", [])]
            sps = scalars.get("charts/SPS", [])
            where = record.get("ran_on", {})
            summary.append(
                [
                    name,
                    exp["env_id"],
                    seed,
                    int(steps.max()) if len(steps) else 0,
                    rounded(np.mean(evals)) if evals else "",
                    rounded(values[-20:].mean()) if len(values) else "",
                    int(sps[-1][1]) if sps else "",
                    *(where.get(key, "") for key in SUMMARY_FIELDS[7:12]),
                    # The statistic CleanRL and RL Zoo publish: the last 100 training episodes.
                    rounded(values[-100:].mean()) if len(values) else "",
                ]
            )
    all_curves = merge_csv(RESULTS / "curves.csv", CURVE_FIELDS, curves)
    all_summary = merge_csv(RESULTS / "summary.csv", SUMMARY_FIELDS, summary)
    for name in names:
        shown = [name, *EXPERIMENTS[name].get("plot_with", [])]
        plot(name, [row for row in all_curves if row[0] in shown])
    write_table(all_summary, names)


def merge_csv(path: Path, header: list, rows: list) -> list:
    """Merge rows into the CSV by (experiment, seed): the new rows replace the old rows of their
    (experiment, seed), every other old row stays (columns the old file lacks are left empty).
    Returns all the rows, old and new, sorted by experiment and seed."""
    seed = header.index("seed")
    new_keys = {(str(row[0]), str(row[seed])) for row in rows}
    kept = []
    if path.exists():
        with open(path) as f:
            for old in csv.DictReader(f):
                if (old["experiment"], old["seed"]) not in new_keys:
                    kept.append([old.get(column) or "" for column in header])
    merged = kept + [[str(v) for v in row] for row in rows]
    merged.sort(key=lambda row: (row[0], int(row[seed])))  # stable: a run's bins stay in order
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(merged)
    return merged


def plot(name: str, rows: list) -> None:
    """Learning curves of `name` and of its `plot_with` experiments, mean and range over seeds;
    rows: [experiment, seed, step, mean return], as numbers or as read from the CSV."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for shown in [name, *EXPERIMENTS[name].get("plot_with", [])]:
        by_seed = {}
        for _, seed, step, value in (row for row in rows if row[0] == shown):
            by_seed.setdefault(int(seed), {})[int(step)] = float(value)
        if not by_seed:
            continue
        steps = sorted({step for values in by_seed.values() for step in values})
        grid = np.array([[by_seed[s].get(step, np.nan) for step in steps] for s in sorted(by_seed)])
        prefix = "" if shown == name else f"{shown}: "
        ax.plot(
            steps,
            np.nanmean(grid, 0),
            label=f"{prefix}mean of {len(by_seed)} seed{'s' * (len(by_seed) > 1)}",
        )
        ax.fill_between(steps, np.nanmin(grid, 0), np.nanmax(grid, 0), alpha=0.25, label=f"{prefix}min to max")
    # Published values of other projects at their budgets, one marker shape per source.
    for marker, (label, points) in zip("osD^v<>", EXPERIMENTS[name].get("published", [])):
        steps, values = zip(*points)
        ax.plot(steps, values, marker, color="black", markerfacecolor="none", markersize=8, label=label)
    ax.set_title(f"{name}: {EXPERIMENTS[name]['env_id']}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return (training)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=100)
    plt.close(fig)


def decimals(magnitude: float) -> int:
    """Decimals of a return in the tables: one, three where returns are small (POPGym's lie in
    [-1, 1])."""
    return 1 if magnitude >= 10 else 3


def rounded(x) -> float:
    return round(float(x), decimals(abs(x)))


def write_table(summary: list, names: list) -> None:
    """Write results/summary.md, mean +- sample std over seeds of every experiment in summary.csv
    (returns for the learning experiments, steps/s for the speed ones: names with "speed"),
    and print the rows of `names`."""
    by_exp = {}
    for row in summary:
        by_exp.setdefault(row[0], []).append(row[4:7])  # eval mean, last-20 training mean, sps
    lines = {}
    for name, rows in sorted(by_exp.items()):
        columns = (2,) if "speed" in name else (0, 1)
        cells = []
        for column in columns:
            values = [float(r[column]) for r in rows if r[column] != ""]
            digits = decimals(np.abs(values).max()) if values else 1
            spread = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""  # sample std
            cells.append(f"{np.mean(values):.{digits}f}{spread}" if values else "")
        exp = EXPERIMENTS.get(name) or ARCHIVED.get(name)
        env_id, steps = (exp["env_id"], f"{exp['steps']:,}") if exp else ("", "")
        shown = f"{name} (archived)" if name in ARCHIVED else name
        lines[name] = f"| {shown} | {env_id} | {steps} | {len(rows)} | " + " | ".join(cells) + " |"
    print("\n".join(lines[name] for name in names if name in lines))
    head = "| experiment | env | steps | seeds |"
    text = "± is the sample standard deviation over seeds (ddof=1); a single seed shows its value alone.\n"
    text += "(archived): in benchmarks/experiments-archive.yaml, which says where it runs. The provenance of each run\n"
    text += "(script commit, torch, CPU, GPU) is in summary.csv; rows without a commit predate those columns.\n\n"
    text += "Returns: mean ± std over seeds; eval is the final evaluation's mean return (the deterministic\n"
    text += "policy, except where the script's page in docs/ says otherwise).\n\n"
    text += head + " eval | last 20 training episodes |\n"
    text += "| --- | --- | --- | --- | --- | --- |\n"
    text += "".join(line + "\n" for name, line in lines.items() if "speed" not in name)
    text += "\nSpeed: steps per second, mean ± std over seeds.\n\n" + head + " steps/s |\n"
    text += "| --- | --- | --- | --- | --- |\n"
    text += "".join(line + "\n" for name, line in lines.items() if "speed" in name)
    (RESULTS / "summary.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="names from --list")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (1 for speed comparisons)")
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="NAME=PATH", help="script that a baseline experiment runs"
    )
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--collect-only", action="store_true", help="only read finished runs into results/")
    parser.add_argument("--table-only", action="store_true", help="only rewrite results/summary.md from summary.csv")
    args = parser.parse_args()

    if args.table_only:
        with open(RESULTS / "summary.csv") as f:
            write_table(list(csv.reader(f))[1:], [])
        return
    if args.list or not args.experiments:
        for name, exp in EXPERIMENTS.items():
            what = "baseline script" if exp.get("baseline") else exp["script"]
            print(
                f"{name:16s} {what} --env-id {exp['env_id']} --total-timesteps {exp['steps']} " + " ".join(exp["flags"])
            )
        return
    unknown = [n for n in args.experiments if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"run.py: error: unknown experiment(s) {unknown}; see --list")
    baselines = dict(item.split("=", 1) for item in args.baseline)
    missing = [n for n in args.experiments if EXPERIMENTS[n].get("baseline") and n not in baselines]
    if missing and not args.collect_only:
        sys.exit(f"run.py: error: {missing} need --baseline NAME=PATH")

    if not args.collect_only:
        # Seed-major order, so with --jobs 1 the experiments alternate and share the same noise.
        jobs = [(name, seed) for seed in args.seeds for name in args.experiments]
        with ThreadPoolExecutor(args.jobs) as pool:
            for message in pool.map(lambda job: run_one(*job, baselines), jobs):
                print(message, flush=True)
    collect(args.experiments)


if __name__ == "__main__":
    main()
