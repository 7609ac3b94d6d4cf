"""Tests of ppo_discrete.py: its math against hand numbers, its CLI, checkpoints, clear errors,
and that it learns (and stops learning when the update is broken)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import load_script, read_scalars, run_cli

ppo = load_script("ppo_discrete")

# A run that takes a second or two: 2 updates of 2 envs x 64 steps.
TINY = dict(total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, eval_episodes=2, progress=False)  # fmt: skip


def tiny_args(tmp_path, **overrides) -> "ppo.Args":
    return ppo.Args(**{**TINY, "runs_dir": str(tmp_path / "runs"), **overrides})


# ---------------------------------------------------------------------------------------------
# The math
# ---------------------------------------------------------------------------------------------
def test_gae_matches_seed_example():
    # Seed 002: gamma = lambda = 0.9, three rewards of 1, values 0.5, V(s_3) = 0.
    advantages = ppo.compute_gae(
        torch.tensor([1.0, 1.0, 1.0]),
        torch.tensor([0.5, 0.5, 0.5]),
        torch.tensor([0.0, 0.0, 0.0]),
        torch.tensor(0.0),
        gamma=0.9,
        gae_lambda=0.9,
    )
    torch.testing.assert_close(advantages, torch.tensor([2.04755, 1.355, 0.5]))


def gae_by_sums(rewards, values, dones, last_value, gamma, lam):
    """Reference: A_t = sum_l (gamma * lam)^l delta_{t+l}, summed until the episode ends."""
    T, N = rewards.shape
    next_values = np.vstack([values[1:], last_value[None]])
    deltas = rewards + gamma * next_values * (1 - dones) - values
    advantages = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for k in range(t, T):
                advantages[t, n] += (gamma * lam) ** (k - t) * deltas[k, n]
                if dones[k, n]:
                    break
    return advantages


def test_gae_batch_with_episode_ends_in_the_middle():
    rng = np.random.default_rng(0)
    T, N = 7, 3
    rewards, values, last_value = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=N)
    dones = np.zeros((T, N))
    dones[2, 0] = dones[5, 0] = 1  # two episodes end in env 0
    dones[0, 1] = 1  # env 1 ends at its first step
    dones[6, 2] = 1  # env 2 ends at the last step: last_value must not leak in
    expected = gae_by_sums(rewards, values, dones, last_value, 0.97, 0.9)
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    got = ppo.compute_gae(as_tensor(rewards), as_tensor(values), as_tensor(dones), as_tensor(last_value), 0.97, 0.9)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The last step of env 2 is an episode end: its advantage is r - V, nothing bootstrapped.
    assert got[6, 2].item() == pytest.approx(rewards[6, 2] - values[6, 2])


@pytest.mark.parametrize(
    "advantage, ratio, objective",
    # Seed 001, epsilon = 0.2: the clipped objective min(r A, clip(r, 0.8, 1.2) A).
    [(1, 0.5, 0.5), (1, 1.0, 1.0), (1, 1.5, 1.2), (1, 2.0, 1.2), (-1, 0.5, -0.8), (-1, 1.0, -1.0), (-1, 1.5, -1.5)],
)
def test_policy_loss_matches_clipping_table(advantage, ratio, objective):
    loss = ppo.policy_loss(torch.tensor([ratio]), torch.tensor([float(advantage)]), clip_coef=0.2)
    assert loss.item() == pytest.approx(-objective)


def test_policy_loss_is_the_mean_over_the_batch():
    ratio = torch.tensor([0.5, 1.5, 1.5])
    advantages = torch.tensor([1.0, 1.0, -1.0])
    assert ppo.policy_loss(ratio, advantages, 0.2).item() == pytest.approx(-(0.5 + 1.2 - 1.5) / 3)


def test_value_loss_clipping_takes_the_worse_error():
    new, old, target = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert ppo.value_loss(new, old, target, 0.2, clip_vloss=False).item() == pytest.approx(0.5 * 1.0)
    # Clipped prediction 0.2 is 2.8 from the target: the clipped error is the larger one.
    assert ppo.value_loss(new, old, target, 0.2, clip_vloss=True).item() == pytest.approx(0.5 * 2.8**2)


def test_approx_kl_is_zero_for_equal_policies_and_positive_otherwise():
    assert ppo.approx_kl(torch.ones(5)).item() == 0.0
    assert ppo.approx_kl(torch.tensor([0.5, 2.0])).item() > 0.0


def test_running_mean_std_matches_numpy_over_chunks():
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = ppo.RunningMeanStd((4,))
    for chunk in np.array_split(data, [1, 10, 300, 301, 999]):
        rms.update(torch.tensor(chunk))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-10)
    assert rms.count.item() == 1000


def test_gumbel_max_sampling_follows_the_softmax():
    torch.manual_seed(0)
    agent = ppo.Agent(obs_dim=3, n_actions=3, hidden_size=8, norm_obs=False)
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        agent.actor[-1].weight.zero_()
        actions = agent.sample_action(torch.zeros(20_000, 3))
    frequencies = torch.bincount(actions, minlength=3) / 20_000
    torch.testing.assert_close(frequencies, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=0.01, rtol=0)


# ---------------------------------------------------------------------------------------------
# Truncation is bootstrapped, termination is not
# ---------------------------------------------------------------------------------------------
def learned_value(tmp_path, env_id: str) -> float:
    args = tiny_args(
        tmp_path, env_id=env_id, total_timesteps=12_800, num_envs=4, num_steps=32, update_epochs=10,
        gamma=0.9, anneal_lr=False, eval_episodes=0, max_grad_norm=10.0,
    )  # fmt: skip
    result = ppo.train(args)
    data = torch.load(result["model_path"], weights_only=True)
    agent = ppo.Agent(1, 2, args.hidden_size, norm_obs=False)
    agent.load_state_dict(data["model"])
    return agent.get_value(torch.zeros(1, 1)).item()


def test_time_limit_is_bootstrapped_and_termination_is_not(tmp_path):
    # Reward 1 per step, episodes of 5 steps, gamma 0.9. Cut by a time limit, the true value is
    # 1 / (1 - 0.9) = 10; after a real termination it is between 1 and 4.1 (2.6 on average).
    truncated = learned_value(tmp_path, "test/ConstantTruncate-v0")
    terminated = learned_value(tmp_path, "test/ConstantTerminate-v0")
    assert truncated > 7.0, truncated
    assert 1.5 < terminated < 4.0, terminated


# ---------------------------------------------------------------------------------------------
# Runs, logs, models, evaluation
# ---------------------------------------------------------------------------------------------
def test_tiny_run_logs_saves_and_evaluates(tmp_path):
    result = ppo.train(tiny_args(tmp_path))
    assert result["global_step"] == 256
    assert os.path.dirname(result["model_path"]) == result["run_dir"]
    assert os.path.basename(result["run_dir"]).startswith("CartPole-v1__ppo_discrete__1__")
    assert all(isinstance(r, float) for r in result["episodic_returns"]) and result["episodic_returns"]

    scalars = read_scalars(result["run_dir"])
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
                "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl",
                "losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/grad_norm",
                "charts/advantage_mean", "charts/advantage_std", "eval/episodic_return"]:  # fmt: skip
        assert tag in scalars, tag
    logged = [v for _, v in scalars["charts/episodic_return"]]
    np.testing.assert_allclose(logged, result["episodic_returns"], rtol=1e-6)
    # Annealing: the second (last) update runs at half the learning rate.
    assert [v for _, v in scalars["charts/learning_rate"]] == pytest.approx([1e-3, 5e-4])

    returns = ppo.evaluate(result["model_path"], episodes=3, seed=5)
    assert len(returns) == 3 and all(isinstance(r, float) and r >= 1 for r in returns)
    # Greedy play of the same model with the same seeds is reproducible.
    assert ppo.evaluate(result["model_path"], episodes=3, seed=5) == returns


def test_same_seed_same_numbers(tmp_path):
    first = ppo.train(tiny_args(tmp_path / "a", seed=3))
    second = ppo.train(tiny_args(tmp_path / "b", seed=3))
    other = ppo.train(tiny_args(tmp_path / "c", seed=4))
    assert first["episodic_returns"] == second["episodic_returns"]
    weights = [torch.load(r["model_path"], weights_only=True)["model"] for r in (first, second, other)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert any(not torch.equal(weights[0][n], weights[2][n]) for n in weights[0])


def test_dict_observations_are_flattened(tmp_path):
    result = ppo.train(tiny_args(tmp_path, env_id="test/DictObs-v0"))
    assert result["global_step"] == 256
    assert len(ppo.evaluate(result["model_path"], episodes=1)) == 1


def test_env_from_a_users_module(tmp_path):
    # `module:EnvId` imports the module first, which registers the env (here: conftest).
    result = ppo.train(tiny_args(tmp_path, env_id="conftest:test/DictObs-v0", eval_episodes=0))
    assert result["global_step"] == 256
    assert os.path.basename(result["run_dir"]).startswith("conftest-test-DictObs-v0__ppo_discrete__")


def test_capture_video_writes_videos(tmp_path):
    result = ppo.train(tiny_args(tmp_path, capture_video=True, eval_episodes=1))
    assert list((tmp_path / "runs").glob("*/videos/*.mp4"))
    assert list((tmp_path / "runs").glob("*/videos-eval/*.mp4"))
    assert result["global_step"] == 256


def test_observation_statistics_are_saved_with_the_model(tmp_path):
    result = ppo.train(tiny_args(tmp_path, norm_obs=True))
    saved = torch.load(result["model_path"], weights_only=True)["model"]
    # Every observation the agent saw was counted: the initial ones and one per env step.
    assert saved["obs_rms.count"].item() == 256 + 2
    assert not torch.equal(saved["obs_rms.mean"], torch.zeros(4))
    agent = ppo.Agent(4, 2, 64, norm_obs=True)
    agent.load_state_dict(saved)
    torch.testing.assert_close(agent.obs_rms.var, saved["obs_rms.var"])
    # Evaluation leaves the statistics as they were saved.
    ppo.evaluate(result["model_path"], episodes=2)
    assert torch.equal(
        torch.load(result["model_path"], weights_only=True)["model"]["obs_rms.mean"], saved["obs_rms.mean"]
    )


@pytest.mark.parametrize("env_id", ["test/ConstantTerminate-v0", "test/ConstantTruncate-v0"])
def test_reward_scaling_restarts_the_return_at_every_episode_end(tmp_path, env_id):
    # Reward 1, episodes of 5 steps, gamma 0.9: each env's discounted return runs 1, 1.9, 2.71,
    # 3.439, 4.0951 and starts again, whether the episode terminated or hit its time limit.
    result = ppo.train(tiny_args(tmp_path, env_id=env_id, norm_reward=True, gamma=0.9, eval_episodes=0))
    saved = torch.load(result["model_path"], weights_only=True)["model"]
    per_env = [sum(0.9**k for k in range(t % 5 + 1)) for t in range(128)]
    assert saved["return_rms.mean"].item() == pytest.approx(np.mean(per_env))
    assert saved["return_rms.var"].item() == pytest.approx(np.var(per_env))
    assert result["episodic_returns"][0] == 5.0  # logged returns stay raw


def test_no_model_when_not_asked(tmp_path):
    result = ppo.train(tiny_args(tmp_path, save_model=False, eval_episodes=0))
    assert result["model_path"] is None
    assert not os.path.exists(os.path.join(result["run_dir"], "model.pt"))


# ---------------------------------------------------------------------------------------------
# Checkpoints and resume
# ---------------------------------------------------------------------------------------------
def test_resume_carries_on_where_the_checkpoint_left_off(tmp_path, monkeypatch):
    # 6 updates of 128 steps, a checkpoint every 3 updates; keep a copy of the first one, as a
    # run killed between the two checkpoints would have left it.
    saves = []
    original_save = ppo.save_atomic

    def save_and_keep(obj, path):
        original_save(obj, path)
        if path.endswith("checkpoint.pt") and not saves:
            saves.append(tmp_path / "mid.pt")
            original_save(obj, str(saves[0]))

    monkeypatch.setattr(ppo, "save_atomic", save_and_keep)
    args = tiny_args(tmp_path, total_timesteps=768, checkpoint_every=384, eval_episodes=0)
    full = ppo.train(args)
    assert full["checkpoint_path"] and os.path.isfile(full["checkpoint_path"])
    mid = torch.load(saves[0], weights_only=True)
    assert mid["global_step"] == 384 and mid["iteration"] == 3

    # The resumed run takes its settings from the checkpoint, not from these defaults.
    resumed = ppo.train(ppo.Args(resume=str(saves[0]), progress=False))
    assert resumed["global_step"] == 768
    assert resumed["run_dir"] == full["run_dir"]
    final = torch.load(os.path.join(resumed["run_dir"], "checkpoint.pt"), weights_only=True)
    assert final["global_step"] == 768 and final["iteration"] == 6
    # The optimizer carried on: Adam's step count continued from the checkpoint's.
    steps_per_update = args.update_epochs * args.num_minibatches
    adam_steps = [s["step"].item() for s in final["optimizer"]["state"].values()]
    assert adam_steps == [6 * steps_per_update] * len(adam_steps)
    # The learning rate carried on down the same schedule: updates 4, 5, 6 of 6.
    lrs = [v for s, v in read_scalars(resumed["run_dir"])["charts/learning_rate"] if s > 384]
    assert lrs[-3:] == pytest.approx([1e-3 * (1 - 3 / 6), 1e-3 * (1 - 4 / 6), 1e-3 * (1 - 5 / 6)])


def test_resume_restores_the_random_state(tmp_path):
    first = ppo.train(tiny_args(tmp_path / "a", total_timesteps=128, checkpoint_every=128, eval_episodes=0))
    checkpoint = torch.load(first["checkpoint_path"], weights_only=True)
    # Extend the budget by one update and resume twice: once as saved, once with another RNG state.
    checkpoint["args"]["total_timesteps"] = 256
    checkpoint["run_dir"] = ""
    paths = [tmp_path / "same_a.pt", tmp_path / "same_b.pt", tmp_path / "other.pt"]
    for path in paths[:2]:
        torch.save(checkpoint, path)
    checkpoint["torch_rng_state"] = torch.Generator().manual_seed(999).get_state()
    torch.save(checkpoint, paths[2])
    weights = []
    for path in paths:
        result = ppo.train(ppo.Args(resume=str(path), progress=False))
        assert result["global_step"] == 256
        weights.append(torch.load(result["checkpoint_path"], weights_only=True)["model"])
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert any(not torch.equal(weights[0][n], weights[2][n]) for n in weights[0])


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    ppo.save_atomic({"global_step": 1}, path)

    def crash_halfway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        ppo.save_atomic({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 1}


# ---------------------------------------------------------------------------------------------
# Clear errors: one line, non-zero exit, no traceback
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="NoSuchEnv-v0"), "unknown environment id 'NoSuchEnv-v0'"),
        (dict(env_id="no_such_module:Env-v0"), "unknown environment id"),
        (dict(env_id="Pendulum-v1"), "use ppo_continuous.py"),
        (dict(total_timesteps=0), "--total-timesteps must be positive"),
        (dict(total_timesteps=-5), "--total-timesteps must be positive"),
        (dict(num_envs=3, num_steps=5, num_minibatches=4), "does not divide into 4 minibatches"),
        (dict(total_timesteps=100), "less than one batch"),
        (dict(resume="missing/checkpoint.pt"), "no such file: missing/checkpoint.pt"),
    ],
)
def test_bad_input_is_refused_clearly(tmp_path, overrides, message):
    with pytest.raises(ppo.ConfigError, match=message.replace("(", r"\(")):
        ppo.train(tiny_args(tmp_path, **overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused(tmp_path):
    with pytest.raises(ppo.ConfigError, match="--cuda was given but torch finds no CUDA device"):
        ppo.train(tiny_args(tmp_path, cuda=True))


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(ppo.ConfigError, match="cannot read"):
        ppo.evaluate(str(garbage))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ppo.ConfigError, match="missing"):
        ppo.train(tiny_args(tmp_path, resume=str(foreign)))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env-id", "NoSuchEnv-v0"], "unknown environment id"),
        (["--eval-only", "garbage.pt"], "cannot read garbage.pt"),
        (["--env-id", "Pendulum-v1"], "ppo_continuous.py"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(in_tmp, argv, message):
    (in_tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    proc = run_cli("ppo_discrete.py", *argv, "--no-progress", cwd=in_tmp)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppo_discrete.py: error:") and message in lines[0], proc.stderr


def test_cli_trains_then_evaluates_the_saved_model(in_tmp):
    proc = run_cli(
        "ppo_discrete.py", *"--total-timesteps 256 --num-envs 2 --num-steps 64 --eval-episodes 2".split(), cwd=in_tmp
    )
    assert proc.returncode == 0, proc.stderr
    assert "device: cpu" in proc.stdout and "eval: mean return" in proc.stdout
    (model,) = (in_tmp / "runs").glob("CartPole-v1__ppo_discrete__1__*/model.pt")
    proc = run_cli("ppo_discrete.py", "--eval-only", str(model), "--eval-episodes", "2", cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    assert "over 2 episodes" in proc.stdout


def test_help_reads_like_a_manual(in_tmp):
    proc = run_cli("ppo_discrete.py", "--help", cwd=in_tmp)
    assert proc.returncode == 0
    for text in ["--env-id", "--total-timesteps", "--clip-coef", "surrogate clipping", "--resume", "--no-progress"]:
        assert text in proc.stdout, text


def test_importing_does_nothing(in_tmp):
    code = f"import importlib.util as u; s = u.spec_from_file_location('m', {ppo.__file__!r}); s.loader.exec_module(u.module_from_spec(s))"
    done = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    assert list(in_tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------------------------
LEARN = dict(total_timesteps=40_960, eval_episodes=10, save_model=False, progress=False)


def learning_score(tmp_path) -> float:
    result = ppo.train(ppo.Args(**LEARN, runs_dir=str(tmp_path)))
    return float(np.mean(result["eval_returns"]))


def test_cartpole_learns(tmp_path):
    # A uniformly random policy scores about 22 on CartPole-v1.
    assert learning_score(tmp_path) >= 150


def test_flipped_policy_gradient_does_not_learn(tmp_path, monkeypatch):
    original = ppo.policy_loss
    monkeypatch.setattr(ppo, "policy_loss", lambda ratio, adv, clip: original(ratio, -adv, clip))
    assert learning_score(tmp_path) < 60


def test_zeroed_advantages_do_not_learn(tmp_path, monkeypatch):
    original = ppo.compute_gae
    monkeypatch.setattr(ppo, "compute_gae", lambda *a, **k: torch.zeros_like(original(*a, **k)))
    assert learning_score(tmp_path) < 60
