"""Tests of benchmarks/run.py: it runs, skips what is done, reruns what changed, collects."""

import csv

import torch

from conftest import load_script

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
    assert (
        set(rows) == {"1", "2"}
        and rows["2"]["commit"] == "abc1234"
        and rows["1"]["sps"] == row["sps"]
    )
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
