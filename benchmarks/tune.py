"""Hyperparameter search with Optuna over any of the six scripts, each trial a run of its CLI.

    python benchmarks/tune.py benchmarks/studies/cartpole.yaml              # run it, or resume it
    python benchmarks/tune.py benchmarks/studies/cartpole.yaml --jobs 2     # 2 trials side by side
    python benchmarks/tune.py benchmarks/studies/cartpole.yaml --report     # results only

A study file (YAML) names the script, the fixed flags, the search space over `Args` fields and
the objective:

    script: ppo_discrete.py
    env_id: CartPole-v1
    total_timesteps: 50000
    trials: 20                    # finished (complete or pruned) trials the study stops at
    seeds: [1]                    # each trial runs these seeds side by side and averages them
    objective: train              # train: mean of the last `last_episodes` training episodes;
    last_episodes: 20             # eval: the mean of the final evaluation (eval/episodic_return)
    direction: maximize
    pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 10000}  # or successive_halving,
    report_every: 5000            # threshold (lower, upper) or none; a report every 5000 steps
    fixed: {num_envs: 8}          # flags of every trial
    space:
      learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      update_epochs: {type: int, low: 2, high: 20}
      norm_obs: {type: categorical, choices: [true, false]}
    start:                        # optional: settings the first trials try, before the sampler
      - {learning_rate: 3.0e-4, update_epochs: 10, norm_obs: true}  # (any it omits: sampled)

While a trial runs, its TensorBoard events are read every few seconds, and the mean of the last
`last_episodes` training episodes is reported to Optuna at each `report_every` steps, so the
pruner can stop a trial that falls behind (the process is killed; the trial is marked pruned).

Storage: by default an SQLite file next to the study file (`<study>.db`), so a fresh machine
needs no server, and starting the same command again continues the same study; a trial whose
process was killed with the command is marked failed and tried again. To search on several
machines, start the same command on each with `--storage` pointing at one PostgreSQL database,
`--storage postgresql+psycopg://user:password@host/optuna` (driver: `pip install
"psycopg[binary]"`, in requirements-dev.txt); every machine then adds trials to the one study
until it has `trials` finished ones, and writes the report once the trials running elsewhere
have ended too. Machines may start at the same moment on an empty database: the first to get
there creates the tables and the study, the others find them. See docs/tuning.md.

Output, next to the study file: `<study>-trials.csv` (every trial: number, state, value, flags),
`<study>-history.png` and `<study>-importances.png` (Optuna's own plots), and on stdout the best
trial as a command line ready to run.
"""

import argparse
import csv
import dataclasses
import importlib.util
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, latest_run, read_scalars  # noqa: E402  (benchmarks/ is a folder of scripts)

REQUIRED = ("script", "env_id", "total_timesteps", "trials", "space")
OPTIONAL = {
    "seeds": [1],
    "objective": "train",
    "last_episodes": 20,
    "direction": "maximize",
    "pruner": {"type": "median"},
    "report_every": None,  # default: a tenth of the budget
    "fixed": {},
    "start": [],
    "sampler_seed": 0,
}
POLL_SECONDS = 2.0
CREATE_TRIES = 10  # workers that start together on an empty database: tries to create its tables
# The database drivers SQLAlchemy loads for a URL: module -> (what to install, the URL's scheme).
DRIVERS = {
    "psycopg": ('"psycopg[binary]"', "postgresql+psycopg://"),
    "psycopg2": ("psycopg2-binary", "postgresql+psycopg2://"),
    "pymysql": ("PyMySQL", "mysql+pymysql://"),
    "MySQLdb": ("mysqlclient", "mysql+mysqldb://"),
}


class StudyError(Exception):
    """A problem with the study file or the command line: one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# The study file
# ---------------------------------------------------------------------------------------------
def load_study_file(path: str) -> dict:
    """Read and check a study file; returns it with the optional keys filled in."""
    import yaml

    if not os.path.isfile(path):
        raise StudyError(f"no such study file: {path}")
    try:
        with open(path) as f:
            study = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise StudyError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(study, dict):
        raise StudyError(f"{path}: a study file is a mapping of keys (script, space, ...)")
    missing = [key for key in REQUIRED if key not in study]
    unknown = [key for key in study if key not in REQUIRED and key not in OPTIONAL]
    if missing or unknown:
        raise StudyError(f"{path}: missing keys {missing}, unknown keys {unknown}")
    study = {**OPTIONAL, **study}
    script = ROOT / study["script"]
    if not script.is_file():
        raise StudyError(f"{path}: no such script {study['script']!r} in {ROOT}")
    if study["objective"] not in ("train", "eval"):
        raise StudyError(f"{path}: objective must be train or eval, not {study['objective']!r}")
    if study["direction"] not in ("maximize", "minimize"):
        raise StudyError(f"{path}: direction must be maximize or minimize")
    if not isinstance(study["seeds"], list) or not study["seeds"]:
        raise StudyError(f"{path}: seeds must be a list of one or more seeds")
    fields = args_fields(script)
    for where in ("fixed", "space"):
        if not isinstance(study[where], dict):
            raise StudyError(f"{path}: {where} must map Args fields to values")
        for name in study[where]:
            if name not in fields:
                raise StudyError(
                    f"{path}: {where}: {study['script']} has no argument {name!r} "
                    f"(its Args fields: {', '.join(sorted(fields))})"
                )
    reserved = {"env_id", "total_timesteps", "seed", "runs_dir", "progress"}
    clash = reserved & (set(study["fixed"]) | set(study["space"]))
    if clash:
        raise StudyError(f"{path}: {sorted(clash)} are set by the study itself, not per trial")
    for name, spec in study["space"].items():
        check_distribution(path, name, spec)
    check_start(path, study["start"], study["space"])
    study["report_every"] = study["report_every"] or max(1, int(study["total_timesteps"]) // 10)
    study["pruner"] = make_pruner(path, study["pruner"])
    return study


def args_fields(script: Path) -> set:
    """The names of the script's Args fields (importing a script runs nothing)."""
    spec = importlib.util.spec_from_file_location(f"tuned_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {field.name for field in dataclasses.fields(module.Args)}


def check_distribution(path: str, name: str, spec) -> None:
    kinds = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
    if not isinstance(spec, dict) or spec.get("type") not in kinds:
        raise StudyError(f"{path}: space: {name} needs type float, int or categorical")
    missing = [key for key in kinds[spec["type"]] if key not in spec]
    if missing:
        raise StudyError(f"{path}: space: {name} ({spec['type']}) needs {missing}")
    if spec["type"] != "categorical" and not spec["low"] < spec["high"]:
        raise StudyError(f"{path}: space: {name} needs low < high")


def check_start(path: str, start, space: dict) -> None:
    """The starting points: mappings of space names to values inside their ranges."""
    if not isinstance(start, list) or not all(isinstance(point, dict) for point in start):
        raise StudyError(f"{path}: start must be a list of mappings of space names to values")
    for point in start:
        for name, value in point.items():
            if name not in space:
                raise StudyError(f"{path}: start: {name!r} is not in the search space")
            spec = space[name]
            if spec["type"] == "categorical":
                inside = value in spec["choices"]
            else:
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                inside = number and spec["low"] <= value <= spec["high"]
            if not inside:
                raise StudyError(f"{path}: start: {name} = {value!r} is outside its range")


def make_pruner(path: str, spec: dict):
    import optuna

    pruners = {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }
    spec = dict(spec) if isinstance(spec, dict) else {"type": spec}
    kind = spec.pop("type", None)
    if kind not in pruners:
        raise StudyError(f"{path}: pruner type must be one of {', '.join(pruners)}")
    try:
        return pruners[kind](**spec)
    except TypeError as e:
        raise StudyError(f"{path}: pruner {kind}: {e}") from None


def suggest(trial, space: dict) -> dict:
    """One trial's values of the search space."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            values[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            values[name] = trial.suggest_categorical(name, spec["choices"])
    return values


def to_flags(settings: dict) -> list:
    """Args settings as the scripts' flags: {"norm_obs": False, "gamma": 0.99} ->
    ["--no-norm-obs", "--gamma", "0.99"]."""
    flags = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


# ---------------------------------------------------------------------------------------------
# A trial: the script's runs, watched while they run
# ---------------------------------------------------------------------------------------------
def episode_returns(run_dir: Path) -> list:
    """[(step, return), ...] of the training episodes the run has logged so far."""
    latest = latest_run(run_dir)
    return read_scalars(str(latest)).get("charts/episodic_return", []) if latest else []


def value_at(returns: list, step: int, last: int) -> float:
    """The mean return of the last `last` episodes that ended by `step`."""
    done = [value for s, value in returns if s <= step]
    return float(np.mean(done[-last:])) if done else float("nan")


def final_value(run_dir: Path, objective: str, last: int) -> float:
    latest = latest_run(run_dir)
    scalars = read_scalars(str(latest)) if latest else {}
    tag = "eval/episodic_return" if objective == "eval" else "charts/episodic_return"
    values = [v for _, v in scalars.get(tag, [])]
    if not values:
        raise RuntimeError(f"the run in {run_dir} logged no {tag}")
    return float(np.mean(values if objective == "eval" else values[-last:]))


def run_trial(trial, study: dict, work: Path) -> float:
    """Run the trial's seeds side by side, report their mean running return to the pruner,
    and return the objective averaged over seeds."""
    import optuna

    settings = {**study["fixed"], **suggest(trial, study["space"])}
    trial.set_user_attr("flags", " ".join(to_flags(settings)))
    base = [
        sys.executable,
        str(ROOT / study["script"]),
        "--env-id",
        study["env_id"],
        "--total-timesteps",
        str(study["total_timesteps"]),
        "--runs-dir",
        "runs",
        "--no-progress",
        *to_flags(settings),
    ]
    runs = []
    for seed in study["seeds"]:
        run_dir = work / f"trial{trial.number}" / f"seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        log = open(run_dir / "log.txt", "w")
        process = subprocess.Popen([*base, "--seed", str(seed)], cwd=run_dir, stdout=log, stderr=subprocess.STDOUT)
        runs.append((run_dir, process, log))
    every, next_report = study["report_every"], study["report_every"]

    def report_and_judge() -> None:
        # Every report_every steps that all seeds have passed: the mean over seeds of their
        # running return, then the pruner's verdict. Also after the runs end, so that a run too
        # short to be watched is judged on the same steps.
        nonlocal next_report
        per_seed = [episode_returns(run_dir) for run_dir, _, _ in runs]
        reached = min((r[-1][0] if r else 0) for r in per_seed)
        while next_report <= reached:
            values = [value_at(r, next_report, study["last_episodes"]) for r in per_seed]
            if not np.isnan(values).any():
                trial.report(float(np.mean(values)), next_report)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {next_report}")
            next_report += every

    try:
        while any(process.poll() is None for _, process, _ in runs):
            time.sleep(POLL_SECONDS)
            report_and_judge()
        report_and_judge()
        for run_dir, process, _ in runs:
            if process.returncode != 0:
                tail = (run_dir / "log.txt").read_text().strip().splitlines()[-1:]
                raise RuntimeError(f"{run_dir} failed (exit {process.returncode}): {tail}")
        values = [final_value(d, study["objective"], study["last_episodes"]) for d, _, _ in runs]
        return float(np.mean(values))
    finally:
        for _, process, log in runs:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


# ---------------------------------------------------------------------------------------------
# The study: storage, progress, results
# ---------------------------------------------------------------------------------------------
def open_study(study: dict, name: str, storage_url: str):
    """The study in its storage, and whether this call created it. Workers started at the same
    moment on an empty database all get here: the first creates the tables and the study, the
    others are refused by the database, try again, and find them."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    for attempt in range(CREATE_TRIES):
        try:
            # The heartbeat marks a trial whose command was killed as failed after the grace
            # period, and the callback enqueues it again with the same parameters.
            storage = RDBStorage(
                storage_url,
                heartbeat_interval=30,
                grace_period=90,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Another worker created the same table, type or version row first (PostgreSQL:
            # "duplicate key", "already exists"); this worker's transaction was rolled back whole.
            if attempt == CREATE_TRIES - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0))
    sampler = optuna.samplers.TPESampler(seed=study["sampler_seed"], n_startup_trials=5)
    try:
        new_study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=study["pruner"], direction=study["direction"]
        )
        return new_study, True
    except optuna.exceptions.DuplicatedStudyError:
        # Joining a study another worker made, or resuming one: the sampler draws points of its
        # own, as the seed would draw again those its first process drew.
        sampler.reseed_rng()
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=study["pruner"]), False


def check_storage(storage_url: str) -> str:
    """Refuse in one line a URL that is not a database's, or whose driver is not installed;
    return the URL as it may be printed (no password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "postgresql+psycopg://user:password@host/optuna"
    try:
        url = make_url(storage_url)
        shown = url.render_as_string(hide_password=True)
        url.get_dialect().import_dbapi()
    except ArgumentError as e:  # also an unknown dialect, such as postgres://
        raise StudyError(f"--storage: not a database URL ({e}); for example {example}") from None
    except ImportError as e:
        package, scheme = DRIVERS.get(e.name, (e.name, url.drivername + "://"))
        others = [f"with {p} installed, {s}..." for m, (p, s) in DRIVERS.items() if m != e.name and s[:5] == scheme[:5]]
        raise StudyError(
            f"--storage {shown} needs the driver {e.name}: pip install {package}"
            + (f" (or, {others[0]})" if others else "")
        ) from None
    return shown


def connection_error(e: Exception, shown: str) -> StudyError:
    """A server that cannot be reached, a wrong password, a missing database: the driver's own
    first line."""
    reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
    return StudyError(f"--storage {shown}: cannot open the database: {reason}")


def wait_for_others(optuna_study) -> None:
    """Wait until no trial of the study is running (other machines' trials end up in the
    report too); a trial whose machine stopped beating is failed after the grace period."""
    import optuna
    from optuna.trial import TrialState

    said = False
    while running := optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not said:
            print(f"waiting for the trials running elsewhere: {[t.number for t in running]}", flush=True)
            said = True
        time.sleep(POLL_SECONDS)
        optuna.storages.fail_stale_trials(optuna_study)


def finished(optuna_study) -> list:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return optuna_study.get_trials(deepcopy=False, states=states)


def print_progress(optuna_study, trial, total: int, lock: threading.Lock) -> None:
    with lock:
        done = finished(optuna_study)
        pruned = sum(t.state.name == "PRUNED" for t in done)
        value = {"PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, f"{trial.value}")
        best = ""
        if any(t.state.name == "COMPLETE" for t in done):
            best = f", best {optuna_study.best_value:.2f} (trial {optuna_study.best_trial.number})"
        print(f"trial {trial.number}: {value}; {len(done)}/{total} done, {pruned} pruned{best}", flush=True)


def write_report(optuna_study, study: dict, out: Path) -> None:
    """The trials' table, Optuna's plots and the best trial's command line."""
    trials = optuna_study.get_trials(deepcopy=False)
    with open(f"{out}-trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", "last_step", "flags"])
        for t in trials:
            last_step = max(t.intermediate_values, default="")
            value = "" if t.value is None else round(t.value, 3)
            writer.writerow([t.number, t.state.name, value, last_step, t.user_attrs.get("flags")])
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    print(f"{len(trials)} trials: {len(completed)} complete, {pruned} pruned; table: {out}-trials.csv")
    if not completed:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots

    for name, draw in (("history", plots.plot_optimization_history), ("importances", plots.plot_param_importances)):
        if name == "importances" and (len(completed) < 2 or len(study["space"]) < 2):
            continue
        try:
            axes = draw(optuna_study)
        except (ValueError, RuntimeError) as e:  # e.g. importances of identical trials
            print(f"no {name} plot: {e}")
            continue
        axes.figure.set_size_inches(7, 4.5)
        axes.figure.tight_layout()
        axes.figure.savefig(f"{out}-{name}.png", dpi=100)
        plt.close(axes.figure)
    best = optuna_study.best_trial
    command = [
        "python",
        study["script"],
        "--env-id",
        study["env_id"],
        "--total-timesteps",
        str(study["total_timesteps"]),
        best.user_attrs.get("flags", ""),
    ]
    print(f"best: trial {best.number}, value {best.value:.2f}")
    print("best command: " + " ".join(part for part in command if part))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the study file (YAML)")
    parser.add_argument("--jobs", type=int, default=1, help="trials side by side on this machine")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite next to the file)")
    parser.add_argument("--report", action="store_true", help="only write the results")
    args = parser.parse_args(argv)
    try:
        study = load_study_file(args.study)
        if args.jobs < 1:
            raise StudyError(f"--jobs must be positive, got {args.jobs}")
    except StudyError as e:
        print(f"tune.py: error: {e}", file=sys.stderr)
        sys.exit(2)

    import optuna
    import sqlalchemy.exc
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    path = Path(args.study).resolve()
    out = path.with_suffix("")
    storage = args.storage or f"sqlite:///{out}.db"
    try:
        shown = check_storage(storage)
        try:
            optuna_study, created = open_study(study, path.stem, storage)
        except sqlalchemy.exc.OperationalError as e:
            raise connection_error(e, shown) from None
    except StudyError as e:
        print(f"tune.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    if created:  # a new study: its starting points come first, enqueued once
        for point in study["start"]:
            optuna_study.enqueue_trial(point)
    total = int(study["trials"])
    remaining = total - len(finished(optuna_study))
    if not args.report and remaining > 0:
        print(f"study {path.stem}: {total - remaining}/{total} trials done, storage {shown}")
        work = out.parent / "runs" / path.stem  # the trials' run folders (not committed)
        lock = threading.Lock()
        optuna_study.optimize(
            lambda trial: run_trial(trial, study, work),
            n_jobs=args.jobs,
            callbacks=[
                MaxTrialsCallback(total, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                lambda s, t: print_progress(s, t, total, lock),
            ],
            catch=(RuntimeError,),
            # Each job runs at most the trials still missing; other machines may add some too.
            n_trials=math.ceil(remaining),
        )
        wait_for_others(optuna_study)
    write_report(optuna_study, study, out)


if __name__ == "__main__":
    main()
