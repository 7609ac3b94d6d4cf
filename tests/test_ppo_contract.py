"""The tests every PPO script must pass, written once and run for each script that has what a
test needs (helpers.for_scripts): test_learns[ppo_discrete], test_learns[ppo_continuous], ...
A few of them (the GAE, the file habits, a GPU resume) run for a3c.py and sac.py too.
Script-specific tests (the action distribution, learning budgets) live in the script's own file.
"""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import (
    ACTOR_CRITIC_TAGS,
    assert_refused_in_one_line,
    assert_run_logged,
    assert_scalars_match_recording,
    cli_flags,
    eval_only_returns,
    for_scripts,
    greedy_returns,
    learning_score,
    read_scalars,
    run_cli,
    scripts_with,
)


# ---------------------------------------------------------------------------------------------
# The math
# ---------------------------------------------------------------------------------------------
@for_scripts("gae")
def test_gae_matches_seed_example(sut):
    # Seed 002: gamma = lambda = 0.9, three rewards of 1, values 0.5, V(s_3) = 0.
    advantages = sut.module.compute_gae(
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


@for_scripts("gae")
def test_gae_batch_with_episode_ends_in_the_middle(sut):
    rng = np.random.default_rng(0)
    T, N = 7, 3
    rewards, values, last_value = (
        rng.normal(size=(T, N)),
        rng.normal(size=(T, N)),
        rng.normal(size=N),
    )
    dones = np.zeros((T, N))
    dones[2, 0] = dones[5, 0] = 1  # two episodes end in env 0
    dones[0, 1] = 1  # env 1 ends at its first step
    dones[6, 2] = 1  # env 2 ends at the last step: last_value must not leak in
    expected = gae_by_sums(rewards, values, dones, last_value, 0.97, 0.9)
    t = [torch.tensor(x, dtype=torch.float64) for x in (rewards, values, dones, last_value)]
    got = sut.module.compute_gae(*t, 0.97, 0.9)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The last step of env 2 is an episode end: its advantage is r - V, nothing bootstrapped.
    assert got[6, 2].item() == pytest.approx(rewards[6, 2] - values[6, 2])


@pytest.mark.parametrize(
    "advantage, ratio, objective",
    # Seed 001, epsilon = 0.2: the clipped objective min(r A, clip(r, 0.8, 1.2) A).
    [
        (1, 0.5, 0.5),
        (1, 1.0, 1.0),
        (1, 1.5, 1.2),
        (1, 2.0, 1.2),
        (-1, 0.5, -0.8),
        (-1, 1.0, -1.0),
        (-1, 1.5, -1.5),
    ],
)
@for_scripts("ppo")
def test_policy_loss_matches_clipping_table(sut, advantage, ratio, objective):
    loss = sut.module.policy_loss(torch.tensor([ratio]), torch.tensor([float(advantage)]), clip_coef=0.2)
    assert loss.item() == pytest.approx(-objective)


@for_scripts("ppo")
def test_policy_loss_is_the_mean_over_the_batch(sut):
    ratio = torch.tensor([0.5, 1.5, 1.5])
    advantages = torch.tensor([1.0, 1.0, -1.0])
    assert sut.module.policy_loss(ratio, advantages, 0.2).item() == pytest.approx(-(0.5 + 1.2 - 1.5) / 3)


@for_scripts("ppo")
def test_value_loss_clipping_takes_the_worse_error(sut):
    new, old, target = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert sut.module.value_loss(new, old, target, 0.2, clip_vloss=False).item() == pytest.approx(0.5 * 1.0)
    # Clipped prediction 0.2 is 2.8 from the target: the clipped error is the larger one.
    assert sut.module.value_loss(new, old, target, 0.2, clip_vloss=True).item() == pytest.approx(0.5 * 2.8**2)


@for_scripts("ppo")
def test_approx_kl_is_zero_for_equal_policies_and_positive_otherwise(sut):
    assert sut.module.approx_kl(torch.ones(5)).item() == 0.0
    assert sut.module.approx_kl(torch.tensor([0.5, 2.0])).item() > 0.0


@for_scripts("ppo", "gym_envs")
def test_running_mean_std_matches_numpy_over_chunks(sut):
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = sut.module.RunningMeanStd((4,))
    for chunk in np.array_split(data, [1, 10, 300, 301, 999]):
        rms.update(torch.tensor(chunk))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-10)
    assert rms.count.item() == 1000


# ---------------------------------------------------------------------------------------------
# Truncation is bootstrapped, termination is not
# ---------------------------------------------------------------------------------------------
def learned_value(sut, tmp_path, end: str) -> float:
    args = sut.args(
        tmp_path,
        env_id=f"test/Constant{end}{sut.test_env_suffix}-v0",
        total_timesteps=12_800,
        num_envs=4,
        num_steps=32,
        num_minibatches=1,
        update_epochs=10,
        gamma=0.9,
        anneal_lr=False,
        eval_episodes=0,
        max_grad_norm=10.0,
        norm_obs=False,
        norm_reward=False,
    )
    result = sut.module.train(args)
    agent, *_ = sut.module.load_agent(result["model_path"])
    return agent.get_value(torch.zeros(1, 1)).item()


@for_scripts("ppo", "gym_envs")
def test_time_limit_is_bootstrapped_and_termination_is_not(sut, tmp_path):
    # Reward 1 per step, episodes of 5 steps, gamma 0.9. Cut by a time limit, the true value is
    # 1 / (1 - 0.9) = 10; after a real termination it is between 1 and 4.1 (2.6 on average). An
    # agent with memory can tell the steps apart: for it, one observation is the first step, 4.1.
    truncated = learned_value(sut, tmp_path, "Truncate")
    terminated = learned_value(sut, tmp_path, "Terminate")
    assert truncated > 7.0, truncated
    assert 1.5 < terminated < 4.5, terminated


@pytest.mark.parametrize("end", ["Terminate", "Truncate"])
@for_scripts("ppo", "gym_envs")
def test_reward_scaling_restarts_the_return_at_every_episode_end(sut, tmp_path, end):
    # Reward 1, episodes of 5 steps, gamma 0.9: each env's discounted return runs 1, 1.9, 2.71,
    # 3.439, 4.0951 and starts again, whether the episode terminated or hit its time limit.
    env_id = f"test/Constant{end}{sut.test_env_suffix}-v0"
    result = sut.module.train(sut.args(tmp_path, env_id=env_id, norm_reward=True, gamma=0.9, eval_episodes=0))
    saved = torch.load(result["model_path"], weights_only=True)["model"]
    per_env = [sum(0.9**k for k in range(t % 5 + 1)) for t in range(result["global_step"] // sut.tiny["num_envs"])]
    assert saved["return_rms.mean"].item() == pytest.approx(np.mean(per_env))
    assert saved["return_rms.var"].item() == pytest.approx(np.var(per_env))
    assert result["episodic_returns"][0] == 5.0  # logged returns stay raw


# ---------------------------------------------------------------------------------------------
# Runs, logs, models, evaluation
# ---------------------------------------------------------------------------------------------
@for_scripts("ppo")
def test_tiny_run_logs_saves_and_evaluates(sut, tmp_path):
    result = sut.module.train(sut.args(tmp_path))
    assert result["global_step"] == 2 * sut.batch
    ppo_tags = ("charts/learning_rate", "losses/approx_kl", "losses/old_approx_kl", "losses/clipfrac")
    scalars = assert_run_logged(result, f"{sut.env_id}__{sut.name}", ACTOR_CRITIC_TAGS + ppo_tags)
    # Annealing: the second (last) update runs at half the learning rate.
    lr = sut.module.Args().learning_rate
    assert [v for _, v in scalars["charts/learning_rate"]] == pytest.approx([lr, lr / 2])

    greedy_returns(sut.module.evaluate, result["model_path"], episodes=3)


@for_scripts("ppo")
def test_every_update_starts_from_the_policy_that_acted(sut, tmp_path, monkeypatch):
    # With a learning rate of 0 the policy never changes, so every ratio pi_new / pi_old of every
    # minibatch must be 1: the update must see the inputs the policy acted on, with the
    # observation statistics of that rollout (they move after it), and the logged KL and clip
    # fraction must be 0.
    ratios, original = [], sut.module.policy_loss

    def record(ratio, advantages, clip_coef):
        ratios.append(ratio.detach())
        return original(ratio, advantages, clip_coef)

    monkeypatch.setattr(sut.module, "policy_loss", record)
    norm = {"norm_obs": True} if hasattr(sut.module.Args, "norm_obs") else {}
    result = sut.module.train(sut.args(tmp_path, learning_rate=0.0, eval_episodes=0, **norm))
    assert (torch.cat(ratios) - 1.0).abs().max().item() < 1e-5
    scalars = read_scalars(result["run_dir"])
    for tag in ["losses/approx_kl", "losses/clipfrac"]:
        assert max(abs(v) for _, v in scalars[tag]) < 1e-6, tag


@for_scripts("ppo", "lr_schedule")
def test_a_longer_schedule_stops_training_partway_down(sut, tmp_path):
    # The same 2 updates on a schedule of 8: the learning rate has decayed by 1/8 at the second.
    args = sut.args(tmp_path, lr_schedule_steps=8 * sut.batch, eval_episodes=0, save_model=False)
    result = sut.module.train(args)
    lrs = [v for _, v in read_scalars(result["run_dir"])["charts/learning_rate"]]
    assert lrs == pytest.approx([args.learning_rate, args.learning_rate * 7 / 8])


@for_scripts("ppo")
def test_same_seed_same_numbers(sut, tmp_path):
    runs = [sut.module.train(sut.args(tmp_path / name, seed=seed)) for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    assert runs[0]["episodic_returns"] == runs[1]["episodic_returns"]
    weights = [torch.load(r["model_path"], weights_only=True)["model"] for r in runs]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert any(not torch.equal(weights[0][n], weights[2][n]) for n in weights[0])


@for_scripts("ppo", "gym_envs")
def test_dict_observations_are_flattened(sut, tmp_path):
    result = sut.module.train(sut.args(tmp_path, env_id=f"test/DictObs{sut.test_env_suffix}-v0"))
    assert result["global_step"] == 2 * sut.batch
    assert len(sut.module.evaluate(result["model_path"], episodes=1)) == 1


@for_scripts("ppo", "gym_envs")
def test_an_observation_that_cannot_be_flattened_is_named(sut, tmp_path):
    env_id = f"test/SequenceObs{sut.test_env_suffix}-v0"
    with pytest.raises(sut.module.ConfigError, match=r"space Dict\('items': Sequence.* cannot be flattened"):
        sut.module.train(sut.args(tmp_path, env_id=env_id))


@for_scripts("ppo", "gym_envs")
def test_env_from_a_users_module(sut, tmp_path):
    # `module:EnvId` imports the module first, where a user's module registers its envs (here:
    # helpers, whose envs tests/conftest.py has registered already).
    env_id = f"helpers:test/DictObs{sut.test_env_suffix}-v0"
    result = sut.module.train(sut.args(tmp_path, env_id=env_id, eval_episodes=0))
    assert result["global_step"] == 2 * sut.batch
    assert os.path.basename(result["run_dir"]).startswith(f"helpers-test-DictObs{sut.test_env_suffix}-v0__")


@for_scripts("ppo", "gym_envs")
def test_capture_video_writes_videos(sut, tmp_path):
    sut.module.train(sut.args(tmp_path, capture_video=True, eval_episodes=1))
    assert list((tmp_path / "runs").glob("*/videos/*.mp4"))
    assert list((tmp_path / "runs").glob("*/videos-eval/*.mp4"))


@for_scripts("ppo", "gym_envs")
def test_observation_statistics_are_saved_with_the_model(sut, tmp_path):
    result = sut.module.train(sut.args(tmp_path, norm_obs=True))
    saved = torch.load(result["model_path"], weights_only=True)["model"]
    # Every observation the agent acted on was counted, once.
    assert saved["obs_rms.count"].item() == result["global_step"]
    assert not torch.equal(saved["obs_rms.mean"], torch.zeros_like(saved["obs_rms.mean"]))
    agent, *_ = sut.module.load_agent(result["model_path"])
    torch.testing.assert_close(agent.obs_rms.var, saved["obs_rms.var"])
    # Evaluation uses the statistics frozen: the agent's copy does not move.
    sut.module.evaluate(result["model_path"], episodes=2)
    torch.testing.assert_close(agent.obs_rms.mean, saved["obs_rms.mean"])


@for_scripts("ppo")
def test_no_model_when_not_asked(sut, tmp_path):
    result = sut.module.train(sut.args(tmp_path, save_model=False, eval_episodes=0))
    assert result["model_path"] is None
    assert not os.path.exists(os.path.join(result["run_dir"], "model.pt"))


# ---------------------------------------------------------------------------------------------
# Checkpoints and resume
# ---------------------------------------------------------------------------------------------
@for_scripts("ppo")
def test_resume_carries_on_where_the_checkpoint_left_off(sut, tmp_path, monkeypatch):
    # 6 updates, a checkpoint every 3; keep a copy of the first one, as a run killed between the
    # two checkpoints would have left it.
    ppo, batch = sut.module, sut.batch
    kept = tmp_path / "mid.pt"
    original_save = ppo.save_atomic

    def save_and_keep(obj, path):
        original_save(obj, path)
        if path.endswith("checkpoint.pt") and not kept.exists():
            original_save(obj, str(kept))

    monkeypatch.setattr(ppo, "save_atomic", save_and_keep)
    args = sut.args(tmp_path, total_timesteps=6 * batch, checkpoint_every=3 * batch, eval_episodes=0)
    full = ppo.train(args)
    assert full["checkpoint_path"] and os.path.isfile(full["checkpoint_path"])
    mid = torch.load(kept, weights_only=True)
    assert mid["global_step"] == 3 * batch and mid["iteration"] == 3

    # The resumed run takes its settings from the checkpoint, not from these defaults.
    resumed = ppo.train(ppo.Args(resume=str(kept), progress=False))
    assert resumed["global_step"] == 6 * batch
    assert resumed["run_dir"] == full["run_dir"]
    final = torch.load(os.path.join(resumed["run_dir"], "checkpoint.pt"), weights_only=True)
    assert final["global_step"] == 6 * batch and final["iteration"] == 6
    # The optimizer carried on: Adam's step count continued from the checkpoint's.
    adam_steps = [s["step"].item() for s in final["optimizer"]["state"].values()]
    assert adam_steps == [6 * args.update_epochs * args.num_minibatches] * len(adam_steps)
    # The learning rate carried on down the same schedule: updates 4, 5, 6 of 6.
    lrs = [v for s, v in read_scalars(resumed["run_dir"])["charts/learning_rate"] if s > 3 * batch]
    assert lrs[-3:] == pytest.approx([args.learning_rate * (1 - k / 6) for k in (3, 4, 5)])


def resume_twice_as_saved_and_once_changed(sut, first: dict, tmp_path, rng: str, other_state, cuda: bool) -> list:
    """From `first` run's checkpoint, with the budget doubled: resume twice as saved and once with
    checkpoint[rng] replaced by other_state. Returns the three resumed runs' results and weights."""
    checkpoint = torch.load(first["checkpoint_path"], weights_only=True)
    checkpoint["args"]["total_timesteps"] *= 2
    checkpoint["run_dir"] = ""
    paths = [tmp_path / "same_a.pt", tmp_path / "same_b.pt", tmp_path / "other.pt"]
    for path in paths[:2]:
        torch.save(checkpoint, path)
    checkpoint[rng] = other_state
    torch.save(checkpoint, paths[2])
    runs = []
    for path in paths:
        result = sut.module.train(sut.module.Args(resume=str(path), cuda=cuda, progress=False))
        saved = torch.load(result["checkpoint_path"], weights_only=True)
        runs.append((result, saved["model"] if "model" in saved else saved["actor"]))  # sac.py: "actor"
    return runs


@for_scripts("ppo")
def test_resume_restores_the_random_state(sut, tmp_path):
    first = sut.module.train(
        sut.args(tmp_path / "a", total_timesteps=sut.batch, checkpoint_every=sut.batch, eval_episodes=0)
    )
    other = torch.Generator().manual_seed(999).get_state()
    runs = resume_twice_as_saved_and_once_changed(sut, first, tmp_path, "torch_rng_state", other, cuda=False)
    assert [result["global_step"] for result, _ in runs] == [2 * sut.batch] * 3
    weights = [w for _, w in runs]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert any(not torch.equal(weights[0][n], weights[2][n]) for n in weights[0])


@for_scripts("file_habits")
def test_interrupted_save_keeps_the_previous_file(sut, tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    sut.module.save_atomic({"global_step": 1}, path)

    def crash_halfway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        sut.module.save_atomic({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 1}


# ---------------------------------------------------------------------------------------------
# Clear errors: one line, non-zero exit, no traceback
# ---------------------------------------------------------------------------------------------
BAD_INPUT = [
    (dict(env_id="NoSuchEnv-v0"), "unknown environment id 'NoSuchEnv-v0'"),
    (dict(env_id="no_such_module:Env-v0"), "unknown environment id"),
    (dict(total_timesteps=0), "--total-timesteps must be positive"),
    (dict(total_timesteps=-5), "--total-timesteps must be positive"),
    (dict(num_envs=3, num_steps=5, num_minibatches=4), "does not divide into 4 minibatches"),
    (dict(total_timesteps=100), "less than one batch"),
    (dict(resume="missing/checkpoint.pt"), "no such file: missing/checkpoint.pt"),
    # Every knob with a meaningful range: refused before anything runs.
    (dict(num_envs=0), "--num-envs must be positive, got 0"),
    (dict(num_steps=-1), "--num-steps must be positive"),
    (dict(update_epochs=0), "--update-epochs must be positive"),
    (dict(learning_rate=-1.0), "--learning-rate must be 0 or more, got -1.0"),
    (dict(gamma=1.5), "--gamma must be between 0 and 1, got 1.5"),
    (dict(gae_lambda=2.0), "--gae-lambda must be between 0 and 1"),
    (dict(gae_lambda=float("nan")), "--gae-lambda must be between 0 and 1"),
    (dict(clip_coef=-0.2), "--clip-coef must be positive"),
    (dict(ent_coef=-0.01), "--ent-coef must be 0 or more"),
    (dict(vf_coef=-1.0), "--vf-coef must be 0 or more"),
    (dict(max_grad_norm=0.0), "--max-grad-norm must be positive"),
    (dict(target_kl=0.0), "--target-kl must be positive"),
    (dict(eval_episodes=-1), "--eval-episodes must be 0 or more"),
    (dict(checkpoint_every=-5), "--checkpoint-every must be 0 or more"),
    (dict(lr_schedule_steps=100), "--lr-schedule-steps must be 0 or at least --total-timesteps"),
    (dict(torch_threads=-1), "--torch-threads must be"),  # 0 means "all cores" in ppo_atari.py
    (dict(seed=-1), "--seed must be between 0 and 2\\*\\*32 - 1, got -1"),
    (dict(seed=2**32), "--seed must be between 0 and 2\\*\\*32 - 1"),
    # /dev/null is no folder, even for root: the run's folder cannot be made under it.
    (dict(runs_dir="/dev/null/runs"), "cannot create the run folder under /dev/null/runs"),
]


# Each script with each case, but --lr-schedule-steps only where the script has it.
@pytest.mark.parametrize(
    "sut, overrides, message",
    [
        pytest.param(script, overrides, message, id=f"{script.name}-overrides{i}-{message}")
        for script in scripts_with("ppo")
        for i, (overrides, message) in enumerate(BAD_INPUT)
        if "lr_schedule_steps" not in overrides or "lr_schedule" in script.features
    ],
    indirect=["sut"],
)
def test_bad_input_is_refused_clearly(sut, tmp_path, overrides, message):
    with pytest.raises(sut.module.ConfigError, match=message):
        sut.module.train(sut.args(tmp_path, **overrides))


@for_scripts("ppo")
def test_wrong_action_space_names_the_right_script(sut, tmp_path):
    with pytest.raises(sut.module.ConfigError, match=sut.wrong_env_message):
        sut.module.train(sut.args(tmp_path, env_id=sut.wrong_env_id))


@for_scripts("ppo", "gym_envs")
def test_missing_env_dependency_says_what_to_install(sut, tmp_path, monkeypatch):
    def make_without_mujoco(env_id, **kwargs):
        raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`')

    monkeypatch.setattr(gym, "make", make_without_mujoco)
    with pytest.raises(sut.module.ConfigError, match="needs a package that is missing.*pip install"):
        sut.module.train(sut.args(tmp_path, env_id="HalfCheetah-v4"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@for_scripts("ppo")
def test_cuda_without_a_gpu_is_refused(sut, tmp_path):
    with pytest.raises(sut.module.ConfigError, match="--cuda was given but torch finds no CUDA device"):
        sut.module.train(sut.args(tmp_path, cuda=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@for_scripts("cuda_resume")
def test_gpu_run_resumes_its_random_state_and_its_model_plays_without_a_gpu(sut, tmp_path):
    # --cuda end to end: the checkpoint holds the GPU's random state and a resume restores it
    # (two resumes from one checkpoint agree; one with another GPU state does not); the saved
    # model plays in a process that sees no GPU.
    args = sut.args(tmp_path, cuda=True, eval_episodes=0)
    args.checkpoint_every = args.total_timesteps
    first = sut.module.train(args)
    other = torch.Generator("cuda").manual_seed(999).get_state()
    weights = [
        w for _, w in resume_twice_as_saved_and_once_changed(sut, first, tmp_path, "cuda_rng_state", other, cuda=True)
    ]

    def largest_difference(a: dict, b: dict) -> float:
        return max((a[n].float() - b[n].float()).abs().max().item() for n in a)

    # GPU kernels may sum in another order from run to run: equal up to rounding.
    assert largest_difference(weights[0], weights[1]) < 1e-5
    assert largest_difference(weights[0], weights[2]) > 1e-4

    proc = run_cli(
        f"{sut.name}.py",
        "--eval-only",
        first["model_path"],
        "--eval-episodes",
        "1",
        cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "over 1 episodes" in proc.stdout


@for_scripts("ppo")
def test_corrupt_or_foreign_files_are_refused(sut, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(sut.module.ConfigError, match="cannot read"):
        sut.module.evaluate(str(garbage))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(sut.module.ConfigError, match="missing"):
        sut.module.train(sut.args(tmp_path, resume=str(foreign)))


@pytest.mark.parametrize(
    "case", ["unknown env", "corrupt model", "wrong action space", "out of range", "no evaluation episodes"]
)
@for_scripts("ppo")
def test_cli_errors_are_one_line_without_traceback(sut, in_tmp, case):
    (in_tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    argv, message = {
        "unknown env": (["--env-id", "NoSuchEnv-v0"], "unknown environment id"),
        "out of range": (["--gae-lambda", "2"], "--gae-lambda must be between 0 and 1, got 2.0"),
        "corrupt model": (["--eval-only", "garbage.pt"], "cannot read garbage.pt"),
        "wrong action space": (["--env-id", sut.wrong_env_id], sut.wrong_env_message),
        "no evaluation episodes": (
            ["--eval-only", "garbage.pt", "--eval-episodes", "0"],
            "--eval-episodes must be positive",
        ),
    }[case]
    proc = run_cli(f"{sut.name}.py", *argv, "--no-progress", cwd=in_tmp)
    assert_refused_in_one_line(proc, f"{sut.name}.py", message)


@for_scripts("ppo")
def test_cli_run_matches_the_recorded_scalars_and_its_model_replays(sut, in_tmp):
    flags = [*cli_flags(sut.tiny), *sut.recorded_flags]
    proc = run_cli(f"{sut.name}.py", "--env-id", sut.env_id, *flags, "--eval-episodes", "1", cwd=in_tmp)
    assert proc.returncode == 0, proc.stderr
    assert "device: cpu" in proc.stdout and "eval: mean return" in proc.stdout
    (model,) = (in_tmp / "runs").glob(f"{sut.env_id}__{sut.name}__1__*/model.pt")
    assert_scalars_match_recording(sut.name, model.parent)
    # --eval-only replays the games of the evaluation that ended the training, then the next
    # ones; a fresh process that reloads the model plays exactly the games this one plays.
    printed = eval_only_returns(f"{sut.name}.py", model, cwd=in_tmp)
    logged = read_scalars(str(model.parent))["eval/episodic_return"][0][1]  # a float32
    assert printed[0] == pytest.approx(logged, rel=1e-6)
    assert printed == sut.module.evaluate(str(model), episodes=2)


@for_scripts("ppo")
def test_help_reads_like_a_manual(sut, in_tmp):
    proc = run_cli(f"{sut.name}.py", "--help", cwd=in_tmp)
    assert proc.returncode == 0
    for text in [
        "--env-id",
        "--total-timesteps",
        "--clip-coef",
        "surrogate clipping",
        "--resume",
        "--no-progress",
    ]:
        assert text in proc.stdout, text


@for_scripts("file_habits")
def test_importing_does_nothing(sut, in_tmp):
    path = str(sut.module.__file__)
    code = (
        f"import importlib.util as u; s = u.spec_from_file_location('m', {path!r}); "
        "s.loader.exec_module(u.module_from_spec(s))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    assert list(in_tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Learning: the script learns, and the same budget with a broken update does not
# ---------------------------------------------------------------------------------------------
@for_scripts("learns")
def test_learns(sut, tmp_path):
    assert learning_score(sut, tmp_path) >= sut.learned_at_least


@for_scripts("flipped_gradient")
def test_flipped_policy_gradient_does_not_learn(sut, tmp_path, monkeypatch):
    original = sut.module.policy_loss
    monkeypatch.setattr(sut.module, "policy_loss", lambda ratio, adv, clip: original(ratio, -adv, clip))
    assert learning_score(sut, tmp_path) < sut.broken_at_most
