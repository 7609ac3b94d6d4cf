"""Tests of benchmarks/run.py: it runs, skips what is done, reruns what changed, collects."""

import csv
import subprocess
import sys

import optuna
import pytest
import torch
import yaml

from helpers import assert_refused_in_one_line, load_script, write_study

bench = load_script("benchmarks/run")


def test_runner_runs_skips_reruns_and_collects(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    flags = "--num-envs 2 --num-steps 64 --num-minibatches 2 --eval-episodes 2".split()
    monkeypatch.setitem(
        bench.EXPERIMENTS,
        "tiny",
        {"script": "ppo_discrete.py", "env_id": "CartPole-v1", "steps": 256, "flags": flags},
    )
    assert "done in" in bench.run_one("tiny", 1, {})
    assert bench.run_one("tiny", 1, {}) == "tiny seed 1: already done"

    bench.collect(["tiny"])
    with open(tmp_path / "results" / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["experiment"] == "tiny" and row["seed"] == "1"
    assert float(row["eval_return_mean"]) >= 8 and int(row["sps"]) > 0
    assert (tmp_path / "results" / "tiny.png").stat().st_size > 0
    assert "| tiny | CartPole-v1 | 256 | 1 |" in (tmp_path / "results" / "summary.md").read_text()
    # What it ran on: the torch of this interpreter and this machine's CPU.
    assert row["torch"] == torch.__version__ and row["cpu"] and row["gpu"] == ""

    # A committed seed that was not rerun here stays in every output, and counts in the table.
    with open(tmp_path / "results" / "summary.csv", "a") as f:
        f.write("tiny,CartPole-v1,2,250,20.0,20.0,999,abc1234,2.0,some cpu,avx2,\n")
    with open(tmp_path / "results" / "curves.csv", "a") as f:
        f.write("tiny,2,256,20.0\n")
    bench.collect(["tiny"])
    with open(tmp_path / "results" / "summary.csv") as f:
        rows = {r["seed"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"1", "2"} and rows["2"]["commit"] == "abc1234" and rows["1"]["sps"] == row["sps"]
    with open(tmp_path / "results" / "curves.csv") as f:
        assert {r["seed"] for r in csv.DictReader(f)} == {"1", "2"}
    assert "| tiny | CartPole-v1 | 256 | 2 |" in (tmp_path / "results" / "summary.md").read_text()

    # Other flags: the old run no longer counts and is replaced.
    bench.EXPERIMENTS["tiny"]["flags"] = [*flags[:-1], "1"]
    assert "done in" in bench.run_one("tiny", 1, {})
    assert len(list((tmp_path / "runs" / "tiny" / "seed1" / "runs").iterdir())) == 1

    # A changed script: its old results no longer count either.
    script = tmp_path / "ppo_discrete_copy.py"
    script.write_bytes((bench.ROOT / "ppo_discrete.py").read_bytes())
    bench.EXPERIMENTS["tiny"]["script"] = str(script)
    assert "done in" in bench.run_one("tiny", 1, {})
    assert bench.run_one("tiny", 1, {}) == "tiny seed 1: already done"
    script.write_text(script.read_text() + "# changed\n")
    assert "done in" in bench.run_one("tiny", 1, {})


def test_tuner_records_trials_prunes_and_resumes(tmp_path, monkeypatch, capsys):
    tune = load_script("benchmarks/tune")
    monkeypatch.setattr(tune, "POLL_SECONDS", 0.2)
    study_file = tmp_path / "tiny.yaml"
    write_study(study_file, start=[{"learning_rate": 0.0042}])  # the first trial tries it
    tune.main([str(study_file)])
    out = capsys.readouterr().out
    assert "trial 0:" in out and "1/1 done" in out and "best command: python ppo_discrete.py" in out

    # Started again with a larger budget of trials, it continues the same study; a pruner that
    # stops every trial below an unreachable return marks the new trial pruned.
    write_study(study_file, trials=2, pruner={"type": "threshold", "lower": 1e9})
    tune.main([str(study_file)])
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED"]
    assert study.trials[1].intermediate_values  # reported while it ran
    assert study.trials[0].params == {"learning_rate": 0.0042}
    assert "--num-envs 4" in study.trials[0].user_attrs["flags"]
    assert "--learning-rate 0.0042" in study.trials[0].user_attrs["flags"]
    assert study.trials[1].params["learning_rate"] != 0.0042  # sampled: enqueued only once
    with open(tmp_path / "tiny-trials.csv") as f:
        assert [row["state"] for row in csv.DictReader(f)] == states
    assert (tmp_path / "tiny-history.png").stat().st_size > 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"space": {"learning_rat": {"type": "float", "low": 0.1, "high": 1}}}, "no argument"),
        ({"objective": "best"}, "objective must be train or eval"),
        ({"pruner": {"type": "hyperband2"}}, "pruner type must be one of"),
        ({"space": {"gamma": {"type": "float", "low": 1, "high": 0.5}}}, "needs low < high"),
        ({"fixed": {"seed": 3}}, "set by the study itself"),
        ({"start": [{"learning_rate": 0.5}]}, "learning_rate = 0.5 is outside its range"),
        ({"start": [{"learning_rate": "fast"}]}, "learning_rate = 'fast' is outside its range"),
    ],
)
def test_a_bad_study_file_is_refused_in_one_line(tmp_path, change, message):
    study_file = tmp_path / "bad.yaml"
    write_study(study_file, **change)
    proc = subprocess.run(
        [sys.executable, str(bench.ROOT / "benchmarks" / "tune.py"), str(study_file)],
        capture_output=True,
        text=True,
    )
    assert_refused_in_one_line(proc, "tune.py", message)


def test_every_experiment_is_written_out_and_listed_as_its_command():
    with open(bench.ROOT / "benchmarks" / "experiments.yaml") as f:
        raw = yaml.safe_load(f)
    assert list(bench.EXPERIMENTS) == list(raw)
    for name, exp in raw.items():
        assert isinstance(exp["flags"], str) and exp["steps"] > 0, name
        assert exp.get("baseline") or (bench.ROOT / exp["script"]).is_file(), name
        assert all(shown in raw for shown in exp.get("plot_with", [])), name
    listing = subprocess.run(
        [sys.executable, str(bench.ROOT / "benchmarks" / "run.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(listing) == len(raw)
    for line, (name, exp) in zip(listing, raw.items()):
        assert line.split()[0] == name
        assert f"--env-id {exp['env_id']} --total-timesteps {exp['steps']}" in line
        assert line.rstrip().endswith(exp["flags"])


def test_every_experiment_runs_with_flags_its_script_has():
    # A flag a script no longer has would stop its experiment at the first seed; archived experiments run at their
    # own commit (benchmarks/experiments-archive.yaml).
    import tyro

    for name, exp in bench.EXPERIMENTS.items():
        if not exp.get("baseline"):
            script = load_script(exp["script"].removesuffix(".py"))
            tyro.cli(script.Args, args=["--env-id", exp["env_id"], *exp["flags"]])  # SystemExit: unknown flag
