"""Tests of benchmarks/run.py: it runs, skips what is done, reruns what changed, collects."""

import csv

from conftest import load_script

bench = load_script("benchmarks/run")


def test_runner_runs_skips_reruns_and_collects(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    flags = "--num-envs 2 --num-steps 64 --num-minibatches 2 --eval-episodes 2".split()
    monkeypatch.setitem(
        bench.EXPERIMENTS, "tiny", {"script": "ppo_discrete.py", "env_id": "CartPole-v1", "steps": 256, "flags": flags}
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
