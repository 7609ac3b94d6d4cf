"""Tests of a3c.py: its math against hand numbers, the shared model and optimizer across real
processes, the fault handling (a failing worker, Ctrl-C, a killed worker: a clear message, no
orphan process, no hang), runs, checkpoints, clear errors, and that it learns with 2 workers
(and does not when the gradients never reach the shared model). Every test that starts
processes has a timeout. Its GAE and file habits are checked with the PPO scripts'
(tests/test_ppo_contract.py)."""

import importlib.util
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers import (
    ACTOR_CRITIC_TAGS,
    ROOT,
    SCRIPTS,
    assert_refused_in_one_line,
    assert_run_logged,
    assert_scalars_match_recording,
    cli_flags,
    eval_only_returns,
    greedy_returns,
    read_scalars,
    run_cli,
)

SCRIPT = SCRIPTS["a3c"]  # a run of a few seconds: 2 workers, rollouts of 2 envs x 4 steps
a3c = SCRIPT.module
TESTS = Path(__file__).resolve().parent
TINY = SCRIPT.tiny
ROLLOUT = TINY["num_envs"] * TINY["num_steps"]
tiny_args = SCRIPT.args


# ---------------------------------------------------------------------------------------------
# Test environments: one whose actions no head fits, one that fails on purpose in one worker
# ---------------------------------------------------------------------------------------------
class MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])


class FailingEnv(gym.Env):
    """CartPole-like spaces; its 30th step raises in the first env that gets there, among all
    the processes of one test (the claim is a file created with O_EXCL, named by the env var
    A3C_TEST_FAIL_FLAG). Without the variable it never fails."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        flag = os.environ.get("A3C_TEST_FAIL_FLAG")
        if flag and self.t == 30:
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                raise RuntimeError("the test env fails on purpose")
        return np.zeros(4, np.float32), 1.0, self.t % 20 == 0, False, {}


if "test/A3CFailing-v0" not in gym.registry:
    gym.register("test/A3CMultiDiscrete-v0", MultiDiscreteEnv)
    gym.register("test/A3CFailing-v0", FailingEnv)


# ---------------------------------------------------------------------------------------------
# The math
# ---------------------------------------------------------------------------------------------
def test_n_step_returns_match_hand_numbers():
    # With lambda = 1, GAE's returns are the paper's n-step returns R_t = r_t + gamma R_{t+1},
    # bootstrapped from V(s_T) = 10. gamma 0.9: R_2 = 3 + 9 = 12, R_1 = 2 + 10.8 = 12.8,
    # R_0 = 1 + 11.52 = 12.52. An episode end at t = 1 cuts the sum: R_1 = 2, R_0 = 2.8.
    rewards, values = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -1.0, 2.0])
    for dones, expected in [
        ([0.0, 0.0, 0.0], [12.52, 12.8, 12.0]),
        ([0.0, 1.0, 0.0], [2.8, 2.0, 12.0]),
    ]:
        advantages = a3c.compute_gae(rewards, values, torch.tensor(dones), torch.tensor(10.0), 0.9, 1.0)
        torch.testing.assert_close(advantages + values, torch.tensor(expected))


def test_actor_critic_losses_match_hand_numbers():
    # -mean(log pi * A) = -mean(-0.5 * 2, -2 * 1) = 1.5; 0.5 * mean((1 - 2)^2, (3 - 0)^2) = 2.5.
    loss = a3c.policy_gradient_loss(torch.tensor([-0.5, -2.0]), torch.tensor([2.0, 1.0]))
    assert loss.item() == pytest.approx(1.5)
    assert a3c.value_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])).item() == pytest.approx(2.5)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-2.0, 2.0, (2,), np.float32)])
def test_policy_heads_match_torch_distributions(space):
    torch.manual_seed(0)
    agent = a3c.Agent(obs_dim=3, action_space=space, args=a3c.Args(hidden_size=8, init_log_std=-0.5))
    obs = torch.randn(5, 3)
    actions = agent.sample_action(obs)
    log_prob, entropy, value = agent.evaluate_actions(obs, actions)
    out = agent.actor(obs)
    if isinstance(space, gym.spaces.Box):
        dist = torch.distributions.Normal(out, agent.actor_logstd.exp())
        expected_log_prob, expected_entropy = dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)
        assert actions.shape == (5, 2) and torch.equal(agent.greedy_action(obs), out)
    else:
        dist = torch.distributions.Categorical(logits=out)
        expected_log_prob, expected_entropy = dist.log_prob(actions), dist.entropy()
        assert actions.shape == (5,) and torch.equal(agent.greedy_action(obs), out.argmax(-1))
    torch.testing.assert_close(log_prob, expected_log_prob)
    torch.testing.assert_close(entropy, expected_entropy)
    torch.testing.assert_close(value, agent.critic(obs).squeeze(-1))


def test_box_actions_are_clipped_for_the_env_only():
    box = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    np.testing.assert_array_equal(a3c.to_env_action(np.array([3.0, -0.5]), box), [2.0, -0.5])
    np.testing.assert_array_equal(a3c.to_env_action(np.array([1, 0]), gym.spaces.Discrete(2)), [1, 0])


def test_each_worker_gets_its_own_deterministic_seed():
    seeds = a3c.worker_seeds(1, 0, 8)
    assert len(set(seeds)) == 8 and seeds == a3c.worker_seeds(1, 0, 8)
    assert not set(seeds) & set(a3c.worker_seeds(2, 0, 8))  # another run's seed
    assert not set(seeds) & set(a3c.worker_seeds(1, 4096, 8))  # the same run, resumed


# ---------------------------------------------------------------------------------------------
# The shared model and optimizer, across real processes
# ---------------------------------------------------------------------------------------------
def step_with_gradients(models: list, gradients: list) -> None:
    """Run in a spawned process too: one optimizer step of each (agent, optimizer) pair."""
    for (agent, optimizer), model_gradients in zip(models, gradients):
        for param, gradient in zip(agent.parameters(), model_gradients):
            param.grad = gradient.clone()
        optimizer.step()


def test_a_step_taken_in_one_process_is_seen_in_another():
    # Two optimizer steps, the first in this process and the second in a spawned one, give
    # exactly what two steps in one process give: the second step saw the statistics (Adam's
    # moments, RMSProp's average, the step count) of the first, and this process sees the result.
    torch.manual_seed(0)
    shared, reference, gradients = [], [], []
    for optimizer_name in ["adam", "rmsprop"]:
        args = a3c.Args(hidden_size=4, optimizer=optimizer_name, learning_rate=0.01)
        agent = a3c.Agent(2, gym.spaces.Discrete(2), args)
        copy = a3c.Agent(2, gym.spaces.Discrete(2), args)
        copy.load_state_dict(agent.state_dict())
        agent.share_memory()
        shared.append((agent, a3c.make_shared_optimizer(agent, args)))
        reference.append((copy, a3c.make_shared_optimizer(copy, args)))
        gradients.append([[torch.randn_like(p) for p in agent.parameters()] for _ in range(2)])

    step_with_gradients(shared, [g[0] for g in gradients])
    process = mp.get_context("spawn").Process(target=step_with_gradients, args=(shared, [g[1] for g in gradients]))
    process.start()
    process.join(timeout=60)
    if process.is_alive():
        process.kill()
    assert process.exitcode == 0
    for step in range(2):
        step_with_gradients(reference, [g[step] for g in gradients])

    for (agent, optimizer), (copy, copy_optimizer) in zip(shared, reference):
        for param, copy_param in zip(agent.parameters(), copy.parameters()):
            torch.testing.assert_close(param, copy_param)
        for state, copy_state in zip(optimizer.state.values(), copy_optimizer.state.values()):
            assert state["step"].item() == 2
            for key in state:
                torch.testing.assert_close(state[key], copy_state[key], msg=key)


def test_rmsprop_step_is_the_papers_formula():
    # The paper's shared RMSProp (section 4), alpha 0.99 and eps 0.1:
    #     g = alpha g + (1 - alpha) grad^2,   theta <- theta - lr grad / sqrt(g + eps).
    # By hand, a weight 1 with gradient 2 at lr 0.01: g = 0.01 * 4 = 0.04 and theta = 1 - 0.02 / sqrt(0.14) = 0.9465478
    # (epsilon outside the root, as torch's RMSprop puts it, would give 1 - 0.02 / 0.3 = 0.9333333).
    torch.manual_seed(0)
    args = a3c.Args(hidden_size=4, optimizer="rmsprop", learning_rate=0.01)
    agent = a3c.Agent(2, gym.spaces.Discrete(2), args)
    optimizer = a3c.make_shared_optimizer(agent, args)
    params = list(agent.parameters())
    with torch.no_grad():
        params[0].fill_(1.0)
    expected = [param.detach().clone() for param in params]
    square_avgs = [torch.zeros_like(param) for param in params]
    for step in range(2):  # the second step divides by the statistics of both
        for param in params:
            param.grad = torch.full_like(param, 2.0) if step == 0 else torch.randn_like(param)
        optimizer.step()
        if step == 0:
            torch.testing.assert_close(params[0], torch.full_like(params[0], 0.9465478))
        for theta, g, param in zip(expected, square_avgs, params):
            g.copy_(0.99 * g + 0.01 * param.grad**2)
            theta.copy_(theta - 0.01 * param.grad / torch.sqrt(g + 0.1))
            torch.testing.assert_close(param, theta)


# ---------------------------------------------------------------------------------------------
# Truncation is bootstrapped, termination is not
# ---------------------------------------------------------------------------------------------
def learned_value(tmp_path, end: str) -> float:
    # The Box-action variants: this also runs the Gaussian head end to end.
    args = tiny_args(
        tmp_path,
        env_id=f"test/Constant{end}Box-v0",
        num_workers=1,
        total_timesteps=6400,
        num_envs=4,
        num_steps=8,
        gamma=0.9,
        learning_rate=3e-3,
        anneal_lr=False,
        max_grad_norm=10.0,
        eval_episodes=0,
    )
    agent, *_ = a3c.load_agent(a3c.train(args)["model_path"])
    assert agent.actor_logstd.shape == (1,)
    return agent.get_value(torch.zeros(1, 1)).item()


def test_time_limit_is_bootstrapped_and_termination_is_not(tmp_path):
    # Reward 1 per step, episodes of 5 steps, gamma 0.9. Cut by a time limit, the true value is
    # 1 / (1 - 0.9) = 10; after a real termination it is between 1 and 4.1 (2.6 on average).
    truncated = learned_value(tmp_path / "truncate", "Truncate")
    terminated = learned_value(tmp_path / "terminate", "Terminate")
    assert truncated > 7.0, truncated
    assert 1.5 < terminated < 4.0, terminated


# ---------------------------------------------------------------------------------------------
# Runs, logs, models, checkpoints
# ---------------------------------------------------------------------------------------------
def test_tiny_run_logs_saves_and_evaluates(tmp_path):
    # 100 rollouts shared by 2 workers.
    args = tiny_args(tmp_path, total_timesteps=100 * ROLLOUT, log_every=1, checkpoint_every=10**9)
    result = a3c.train(args)
    assert result["global_step"] == 100 * ROLLOUT
    # The main process logged every episode the workers reported, in the order it got them.
    assert_run_logged(result, "CartPole-v1__a3c", ACTOR_CRITIC_TAGS)

    # The gradients of both workers reached the shared model: each did some of the updates, the
    # shared optimizer counted one step per rollout (lock-free: two increments at the same
    # instant could lose one, rarely), and every weight moved from its initialization.
    assert sum(result["updates_per_worker"]) == 100 and min(result["updates_per_worker"]) > 0
    checkpoint = torch.load(result["checkpoint_path"], weights_only=True)
    assert all(abs(s["step"].item() - 100) <= 2 for s in checkpoint["optimizer"]["state"].values())
    torch.manual_seed(args.seed)
    initial = a3c.Agent(4, gym.spaces.Discrete(2), args).state_dict()
    assert all(not torch.equal(initial[name], checkpoint["model"][name]) for name in initial)

    greedy_returns(a3c.evaluate, result["model_path"], episodes=3)


def test_resume_carries_on_from_the_checkpoint(tmp_path, monkeypatch):
    # One worker, so that the optimizer's step count is exact. Checkpoints are written while
    # the worker runs, and a last one when it is done.
    written = []
    original_save = a3c.save_atomic
    monkeypatch.setattr(a3c, "save_atomic", lambda obj, path: (written.append(obj), original_save(obj, path)))
    args = tiny_args(tmp_path, num_workers=1, total_timesteps=50 * ROLLOUT, checkpoint_every=5 * ROLLOUT)
    first = a3c.train(args)
    steps = [obj["global_step"] for obj in written if "optimizer" in obj]
    assert len(steps) >= 3 and steps[0] < 50 * ROLLOUT and steps[-1] == 50 * ROLLOUT
    checkpoint = torch.load(first["checkpoint_path"], weights_only=True)
    assert checkpoint["global_step"] == 50 * ROLLOUT

    # A larger budget: the step count and the optimizer's statistics carry on, in the same run.
    checkpoint["args"]["total_timesteps"] = 80 * ROLLOUT
    extended = tmp_path / "extended.pt"
    torch.save(checkpoint, extended)
    resumed = a3c.train(a3c.Args(resume=str(extended), num_workers=1, progress=False, eval_episodes=0))
    assert resumed["global_step"] == 80 * ROLLOUT and resumed["updates_per_worker"] == [30]
    assert resumed["run_dir"] == first["run_dir"]
    final = torch.load(resumed["checkpoint_path"], weights_only=True)
    assert [s["step"].item() for s in final["optimizer"]["state"].values()] == [80.0] * len(final["model"])


# ---------------------------------------------------------------------------------------------
# Clear errors: one line, non-zero exit, no traceback
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="NoSuchEnv-v0"), "unknown environment id 'NoSuchEnv-v0'"),
        (dict(env_id="test/A3CMultiDiscrete-v0"), r"needs Discrete\(n\) or a 1-D Box"),
        (dict(total_timesteps=0), "--total-timesteps must be positive"),
        (dict(total_timesteps=5), "less than one rollout"),
        (dict(resume="missing/checkpoint.pt"), "no such file: missing/checkpoint.pt"),
        (dict(cuda=True), "--cuda is not supported: A3C's workers are CPU processes"),
        # Every knob with a meaningful range: refused before anything runs.
        (dict(total_timesteps=-5), "--total-timesteps must be positive, got -5"),
        (dict(num_workers=0), "--num-workers must be positive, got 0"),
        (dict(num_envs=0), "--num-envs must be positive, got 0"),
        (dict(num_steps=-1), "--num-steps must be positive, got -1"),
        (dict(max_grad_norm=0.0), "--max-grad-norm must be positive, got 0.0"),
        (dict(reward_scale=-1.0), "--reward-scale must be positive, got -1.0"),
        (dict(hidden_size=0), "--hidden-size must be positive, got 0"),
        (dict(torch_threads=0), "--torch-threads must be positive, got 0"),
        (dict(log_every=0), "--log-every must be positive, got 0"),
        (dict(learning_rate=-1.0), "--learning-rate must be 0 or more, got -1.0"),
        (dict(learning_rate=float("nan")), "--learning-rate must be 0 or more, got nan"),
        (dict(ent_coef=-0.01), "--ent-coef must be 0 or more, got -0.01"),
        (dict(vf_coef=-1.0), "--vf-coef must be 0 or more, got -1.0"),
        (dict(eval_episodes=-1), "--eval-episodes must be 0 or more, got -1"),
        (dict(checkpoint_every=-5), "--checkpoint-every must be 0 or more, got -5"),
        (dict(gamma=1.5), "--gamma must be between 0 and 1, got 1.5"),
        (dict(gae_lambda=2.0), "--gae-lambda must be between 0 and 1, got 2.0"),
        (dict(gae_lambda=float("nan")), "--gae-lambda must be between 0 and 1, got nan"),
        (dict(seed=-1), "--seed must be between 0 and 2\\*\\*32 - 1, got -1"),
        (dict(seed=2**32), "--seed must be between 0 and 2\\*\\*32 - 1, got 4294967296"),
        # /dev/null is no folder, even for root: the run's folder cannot be made under it.
        (dict(runs_dir="/dev/null/runs"), "cannot create the run folder under /dev/null/runs: Not a directory"),
    ],
)
def test_bad_input_is_refused_clearly(tmp_path, overrides, message):
    with pytest.raises(a3c.ConfigError, match=message):
        a3c.train(tiny_args(tmp_path, **overrides))
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_an_observation_that_cannot_be_flattened_is_named(tmp_path):
    with pytest.raises(
        a3c.ConfigError, match=r"the observation space Dict\('items': Sequence\(Discrete\(3\).* cannot be flat"
    ):
        a3c.train(tiny_args(tmp_path, env_id="test/SequenceObs-v0"))


@pytest.mark.parametrize("case", ["unknown env", "corrupt model", "cuda", "out of range", "no evaluation episodes"])
def test_cli_errors_are_one_line_without_traceback(in_tmp, case):
    (in_tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    argv, message = {
        "unknown env": (["--env-id", "NoSuchEnv-v0"], "unknown environment id"),
        "corrupt model": (["--eval-only", "garbage.pt"], "cannot read garbage.pt"),
        "cuda": (["--cuda"], "--cuda is not supported"),
        "out of range": (["--gamma", "2"], "--gamma must be between 0 and 1, got 2.0"),
        # Refused before the (here unreadable) model file is read.
        "no evaluation episodes": (
            ["--eval-only", "garbage.pt", "--eval-episodes", "0"],
            "--eval-episodes must be positive with --eval-only, got 0",
        ),
    }[case]
    proc = run_cli("a3c.py", *argv, "--no-progress", cwd=in_tmp, timeout=60)
    assert_refused_in_one_line(proc, "a3c.py", message)


def test_cli_run_matches_the_recorded_scalars_and_its_model_replays(in_tmp):
    flags = cli_flags(TINY)
    proc = run_cli(
        "a3c.py",
        *flags,
        "--num-workers=1",
        "--eval-episodes=1",
        "--log-every=1",
        "--no-progress",
        cwd=in_tmp,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "device: cpu" in proc.stdout and "training with 1 worker process\n" in proc.stdout
    (model,) = (in_tmp / "runs").glob("CartPole-v1__a3c__1__*/model.pt")
    # One worker updates the shared model alone, in a fixed order: deterministic but for the
    # learning rate's log, written by the main process at the moments its clock decides.
    assert_scalars_match_recording("a3c", model.parent, skip=("charts/learning_rate",))
    # --eval-only replays the games of the evaluation that ended the training, then the next
    # ones; a fresh process that reloads the model plays exactly the games this one plays.
    printed = eval_only_returns("a3c.py", model, cwd=in_tmp, timeout=60)
    assert printed[0] == read_scalars(str(model.parent))["eval/episodic_return"][0][1]
    assert printed == a3c.evaluate(str(model), episodes=2)


def test_help_says_workers_are_cpu_processes(in_tmp):
    proc = run_cli("a3c.py", "--help", cwd=in_tmp, timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.replace("│", " ").split())  # tyro wraps lines in a box
    for words in [
        "--num-workers",
        "--num-steps",
        "--total-timesteps",
        "--resume",
        "--no-progress",
        "A3C's workers are CPU processes",
        "default: the number of cores",
    ]:
        assert words in text, words


# ---------------------------------------------------------------------------------------------
# Faults: a worker that raises, Ctrl-C, a worker that is killed
# ---------------------------------------------------------------------------------------------
def live_processes_in_group(pgid: int) -> list:
    """Processes of a process group that are still running (zombies excluded), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def start_cli(tmp_path, *argv, env=None) -> subprocess.Popen:
    """a3c.py in its own process group (so that the test can find every process it started),
    able to import this file's test envs (and whatever the caller's PYTHONPATH holds)."""
    python_path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "a3c.py"), "--no-progress", "--runs-dir", str(tmp_path / "runs"), *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            if text in line:
                return
            assert line, f"exited before printing {text!r}: {proc.stderr.read()}"
    raise AssertionError(f"no {text!r} within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple:
    """Wait for the run to end; then no process of its group may be left. Kills everything
    it started if it hangs, so that a failing test leaves nothing behind either."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"a3c.py did not stop within {timeout} s") from None
    deadline = time.time() + 10
    while live_processes_in_group(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = live_processes_in_group(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"orphan processes: {left}"
    return proc.returncode, stdout, stderr


def test_a_worker_that_raises_stops_all_workers_with_its_error(tmp_path):
    # One worker's env raises; the other would run for a billion steps if nobody stopped it.
    flag = str(tmp_path / "failed")
    proc = start_cli(
        tmp_path,
        "--env-id",
        "test_a3c:test/A3CFailing-v0",
        "--total-timesteps",
        "1000000000",
        "--num-workers",
        "2",
        env={"A3C_TEST_FAIL_FLAG": flag},
    )
    rc, _, stderr = finish(proc)
    assert rc == 1 and os.path.exists(flag)
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("a3c.py: error: worker ") and "RuntimeError: the test env fails on purpose" in lines[-1]
    assert lines[-1].endswith("all workers stopped")
    assert "Traceback" in stderr and "in step" in stderr  # the worker's own traceback, above


def test_ctrl_c_stops_all_workers(tmp_path):
    proc = start_cli(tmp_path, "--total-timesteps", "1000000000", "--num-workers", "2")
    wait_for_line(proc, "training with 2 worker processes")
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to the whole process group
    rc, _, stderr = finish(proc)
    assert rc == 130
    assert stderr.strip().splitlines() == ["a3c.py: interrupted; all workers stopped"]


def test_a_killed_worker_stops_the_run(tmp_path):
    proc = start_cli(tmp_path, "--total-timesteps", "1000000000", "--num-workers", "2")
    wait_for_line(proc, "training with 2 worker processes")
    workers = [
        pid for pid in live_processes_in_group(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    rc, _, stderr = finish(proc)
    assert rc == 1
    assert "died with exit code -9" in stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# Learning: 2 workers learn CartPole; the same budget with a broken update does not
# ---------------------------------------------------------------------------------------------
def load_mutant(tmp_path, name: str, old: str, new: str):
    """a3c.py with one line changed, saved and loaded under its own name (the workers import it
    by that name, so a monkeypatch of this process would not reach them)."""
    source = (ROOT / "a3c.py").read_text()
    assert source.count(old) == 1, old
    path = tmp_path / f"{name}.py"
    path.write_text(source.replace(old, new))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def learning_score(module, tmp_path) -> float:
    """Mean return of the last 20 training episodes (the stochastic policy) after 40k steps."""
    args = module.Args(
        num_workers=2,
        total_timesteps=40_000,
        progress=False,
        eval_episodes=0,
        save_model=False,
        runs_dir=str(tmp_path / "runs"),
    )
    return float(np.mean(module.train(args)["episodic_returns"][-20:]))


def test_learns_cartpole_with_two_workers(tmp_path):
    # A uniformly random policy scores about 22. The workers' interleaving varies from run to
    # run: 12 runs of this test scored between 143 and 496.
    assert learning_score(a3c, tmp_path) >= 75.0


def test_gradients_that_never_reach_the_shared_model_do_not_learn(tmp_path):
    mutant = load_mutant(
        tmp_path,
        "a3c_no_shared_gradient",
        "shared_param.grad.copy_(local_param.grad)",
        "shared_param.grad.zero_()",
    )
    assert learning_score(mutant, tmp_path) < 40.0
