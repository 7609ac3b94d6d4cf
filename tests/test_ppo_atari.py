"""Tests of ppo_atari.py beyond the parts of the shared PPO contract that fit a pixel agent
(tests/test_ppo_contract.py, on real Breakout with short truncated games) and the --compile tests
(tests/test_compile_contract.py): the Atari bookkeeping, learning on a synthetic pixel game that
stands in for the emulator, and torchrun."""

import os
import signal
import socket
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import ROOT, SCRIPTS, cli_flags, read_scalars, run_cli

SCRIPT = SCRIPTS["ppo_atari"]
atari = SCRIPT.module


def test_bf16_rounds_the_convolutions_only(tmp_path):
    # Autocast on the CPU runs the same code path as on a GPU: the features are computed in
    # bfloat16 (8 bits of mantissa, so close to float32's but not equal), and come back as float32
    # for the heads, whose log-probabilities and values stay float32.
    torch.manual_seed(0)
    agent = atari.Agent(frame_stack=4, n_actions=4)
    frames = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 4, (8,))
    full = agent.evaluate_actions(frames, actions)
    agent.bf16 = True
    rounded = agent.evaluate_actions(frames, actions)
    assert agent.features(frames).dtype == torch.float32
    for exact, approx in zip(full, rounded):
        assert approx.dtype == torch.float32
        assert not torch.equal(exact, approx)
        torch.testing.assert_close(approx, exact, rtol=0.05, atol=0.01)
    with pytest.raises(atari.ConfigError, match="--bf16 needs --cuda"):
        atari.train(SCRIPT.args(tmp_path, bf16=True))


# ---------------------------------------------------------------------------------------------
# The emulator's frames
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["BreakoutNoFrameskip-v4", "ALE/Breakout-v5", "Breakout", "breakout"])
def test_the_usual_ids_name_the_same_game(env_id):
    assert atari.check_env(env_id) == "breakout"


def test_camel_case_names_become_rom_names():
    assert atari.check_env("MsPacmanNoFrameskip-v4") == "ms_pacman"
    assert atari.check_env("ALE/SpaceInvaders-v5") == "space_invaders"


def test_an_unknown_game_lists_close_matches():
    with pytest.raises(atari.ConfigError, match="no Atari game 'breakot'; close matches: breakout"):
        atari.check_env("BreakotNoFrameskip-v4")


def test_frames_are_stacked_84x84_uint8():
    envs = atari.make_vector_env(atari.Args(), "breakout", num_envs=2)
    obs, infos = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert envs.single_action_space == gym.spaces.Discrete(4)
    assert list(infos["lives"]) == [5, 5]
    envs.close()


def test_evaluation_sees_the_pixels_training_saw():
    # Without random no-ops both start identically; then the same actions give the same frames.
    args = atari.Args(noop_max=0)
    envs = atari.make_vector_env(args, "breakout", num_envs=1)
    env = atari.make_env("breakout", args, capture_video=False, video_dir="")
    vector_obs, _ = envs.reset(seed=0)
    single_obs, _ = env.reset(seed=0)
    for action in [1, 2, 2, 3, 0, 1, 3, 3, 2, 0]:
        np.testing.assert_array_equal(vector_obs[0], single_obs)
        vector_obs, *_ = envs.step(np.array([action]))
        single_obs, *_ = env.step(action)
    envs.close()
    env.close()


def test_rollout_buffer_keeps_frames_as_uint8(tmp_path, capsys):
    atari.train(SCRIPT.args(tmp_path, eval_episodes=0, save_model=False))
    # 64 steps x 2 envs x 4 x 84 x 84 bytes.
    assert "rollout buffer: frames 3.4 MiB (uint8)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# A synthetic game in the emulator's place: known rewards, lives and answers
# ---------------------------------------------------------------------------------------------
class SideGame(gym.vector.VectorEnv):
    """Takes AtariVectorEnv's place (same constructor and infos). Each frame shows a bright
    square on the left or the right; moving toward it (RIGHT = 2, LEFT = 3) scores 3 points,
    any other action costs one of 3 lives. A game ends with its last life (terminated) or
    after 30 steps (truncated). A random policy scores about 3; a perfect one 90."""

    def __init__(self, game, num_envs, **kwargs):
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        self.single_action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def frames(self):
        self.right = self.rng.random(self.num_envs) < 0.5
        obs = np.zeros((self.num_envs, 4, 84, 84), dtype=np.uint8)
        obs[self.right, :, 30:54, 60:84] = 255
        obs[~self.right, :, 30:54, 0:24] = 255
        return obs

    def reset(self, *, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.lives, self.t = np.full(self.num_envs, 3), np.zeros(self.num_envs, dtype=int)
        return self.frames(), {"lives": self.lives.copy()}

    def step(self, actions):
        correct = actions == np.where(self.right, 2, 3)
        reward = np.where(correct, 3.0, 0.0)
        self.lives -= ~correct
        self.t += 1
        terminated = self.lives == 0
        truncated = (self.t == 30) & ~terminated
        self.lives[terminated | truncated], self.t[terminated | truncated] = 3, 0
        obs = self.frames()
        return obs, reward, terminated, truncated, {"lives": self.lives.copy(), "final_obs": obs}


@pytest.fixture
def side_game(monkeypatch):
    monkeypatch.setattr(atari, "AtariVectorEnv", SideGame)


def side_game_args(tmp_path, **overrides):
    settings = dict(
        num_envs=8,
        num_steps=32,
        num_minibatches=2,
        update_epochs=2,
        learning_rate=1e-3,
        eval_episodes=0,
    )
    return SCRIPT.args(tmp_path, save_model=False, **{**settings, **overrides})


@pytest.mark.parametrize("life_loss_ends_bootstrap", [True, False])
def test_a_lost_life_cuts_the_bootstrap_but_not_the_score(side_game, tmp_path, monkeypatch, life_loss_ends_bootstrap):
    seen = []
    original = atari.compute_gae
    monkeypatch.setattr(
        atari,
        "compute_gae",
        lambda r, v, d, *a: seen.append((r.clone(), d.clone())) or original(r, v, d, *a),
    )
    result = atari.train(
        side_game_args(tmp_path, total_timesteps=512, life_loss_ends_bootstrap=life_loss_ends_bootstrap)
    )
    rewards, dones = (torch.cat(x).flatten() for x in zip(*seen))
    # Trained on clipped rewards; an unrewarded step is a lost life in this game.
    assert set(rewards.unique().tolist()) <= {0.0, 1.0}
    lost_life = rewards == 0
    if life_loss_ends_bootstrap:
        # Every lost life is an end; the only other ends are games truncated after a scoring step.
        assert torch.all(dones[lost_life] == 1)
        assert dones[~lost_life].sum() <= len(result["episodic_returns"])
    else:
        assert dones.sum() == len(result["episodic_returns"]) < lost_life.sum()
    # The score is the whole game's, unclipped: 3 points a step, over all 3 lives.
    assert all(r % 3 == 0 for r in result["episodic_returns"])
    assert max(result["episodic_returns"]) > 3
    assert min(v for _, v in read_scalars(result["run_dir"])["charts/episodic_length"]) >= 3


def side_game_score(tmp_path) -> float:
    returns = atari.train(side_game_args(tmp_path, total_timesteps=4096))["episodic_returns"]
    return float(np.mean(returns[-20:]))


def test_learns_the_side_game(side_game, tmp_path):
    assert side_game_score(tmp_path) >= 45.0


def test_flipped_policy_gradient_does_not_learn_the_side_game(side_game, tmp_path, monkeypatch):
    original = atari.policy_loss
    monkeypatch.setattr(atari, "policy_loss", lambda ratio, adv, clip: original(ratio, -adv, clip))
    assert side_game_score(tmp_path) < 10.0


# ---------------------------------------------------------------------------------------------
# Evaluation: whole games that end, reproducibly
# ---------------------------------------------------------------------------------------------
def counted_steps(monkeypatch) -> list:
    """Patch make_env so that the evaluation's env counts its steps per game into the list."""
    counts, original = [], atari.make_env

    class Counting(gym.Wrapper):
        def reset(self, **kwargs):
            counts.append(0)
            return self.env.reset(**kwargs)

        def step(self, action):
            counts[-1] += 1
            return self.env.step(action)

    monkeypatch.setattr(atari, "make_env", lambda *a, **k: Counting(original(*a, **k)))
    return counts


def test_a_first_run_evaluates_in_games_that_end(tmp_path, monkeypatch):
    # An untrained agent on real Breakout, games not cut (108,000 frames): sampling, it presses
    # FIRE and loses its 5 lives within a few hundred steps; greedy, it may never press FIRE,
    # and the idle limit ends the game after 18,000 frames without a point (4,500 steps).
    counts = counted_steps(monkeypatch)
    args = SCRIPT.args(tmp_path, max_episode_frames=108_000, eval_episodes=2)
    result = atari.train(args)
    assert len(counts) == 2 and max(counts) < 2_000
    assert len(result["eval_returns"]) == 2
    counts.clear()
    agent, saved, *_ = atari.load_agent(result["model_path"])
    monkeypatch.setattr(atari.Agent, "greedy_action", lambda self, obs: torch.tensor([0]))  # NOOP
    saved.eval_greedy, saved.max_episode_frames = True, 108_000
    assert atari.play(agent, saved, 1, 0, torch.device("cpu")) == [0.0]
    assert counts == [18_000 // 4]


def test_the_sampling_evaluation_replays_with_its_seed(tmp_path):
    result = atari.train(SCRIPT.args(tmp_path, eval_episodes=2))
    again = atari.evaluate(result["model_path"], episodes=2)
    assert again == result["eval_returns"]


# ---------------------------------------------------------------------------------------------
# Video and the command line
# ---------------------------------------------------------------------------------------------
def test_capture_video_records_the_evaluation_game(tmp_path):
    atari.train(SCRIPT.args(tmp_path, capture_video=True, eval_episodes=1))
    assert list((tmp_path / "runs").glob("*/videos-eval/*.mp4"))


def test_cli_names_close_matches_of_an_unknown_game(in_tmp):
    proc = run_cli("ppo_atari.py", "--env-id", "ALE/Pongg-v5", "--no-progress", cwd=in_tmp)
    assert proc.returncode == 2 and "close matches: pong" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Data parallelism under torchrun (gloo on CPU)
# ---------------------------------------------------------------------------------------------
def torchrun(tmp_path, *flags: str, nproc: int = 2, wait: bool = True):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
    ]
    command += [str(ROOT / "ppo_atari.py"), "--no-progress", *flags]
    if not wait:
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_two_processes_log_every_env_write_one_run_and_resume(tmp_path):
    # One env per rank, 256 steps each, games cut every 100 steps: 2 games per env.
    proc = torchrun(
        tmp_path,
        *cli_flags({**SCRIPT.tiny, "total_timesteps": 512, "checkpoint_every": 512, "eval_episodes": 1}),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("device: cpu") == 1 and "2 processes" in proc.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "model.pt").exists()
    assert len(read_scalars(str(run_dir))["charts/episodic_return"]) == 4  # rank 0 alone would log 2
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 512

    # Both ranks carry on from rank 0's checkpoint, here given a longer budget.
    checkpoint["args"]["total_timesteps"] = 768
    torch.save(checkpoint, tmp_path / "longer.pt")
    proc = torchrun(tmp_path, f"--resume={tmp_path / 'longer.pt'}")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == 768


def test_each_process_needs_a_gpu_of_its_own(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(atari.ConfigError, match="process 2 on this machine has no GPU of its own: torch sees 2"):
        atari.select_device(True, 0, local_rank=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchrun_with_cuda_takes_one_gpu_per_process(tmp_path):
    def one_env_per_process(processes: int) -> list:
        return cli_flags(
            {
                **SCRIPT.tiny,
                "num_envs": processes,
                "total_timesteps": 2 * SCRIPT.tiny["num_steps"] * processes,
            }
        )

    gpus = torch.cuda.device_count()
    proc = torchrun(tmp_path, "--cuda", *one_env_per_process(min(gpus, 2)), nproc=min(gpus, 2))
    assert proc.returncode == 0, proc.stderr
    assert "device: cuda:0" in proc.stdout
    proc = torchrun(tmp_path, "--cuda", *one_env_per_process(gpus + 1), nproc=gpus + 1)
    assert proc.returncode != 0
    assert f"ppo_atari.py: error: process {gpus} on this machine has no GPU of its own" in proc.stderr


def run_ranks(target, world_size: int, *args) -> None:
    """Run target(rank, world_size, *args) in world_size spawned processes joined by gloo."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=target, args=(rank, world_size, port, *args)) for rank in range(world_size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        assert process.exitcode == 0


def join_world(rank, world_size, port):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo")


def record_parameters_after_every_step(rank, world_size, port, tmp_path):
    join_world(rank, world_size, port)
    sums, step = [], torch.optim.Adam.step

    def step_and_record(self, *args, **kwargs):
        step(self, *args, **kwargs)
        sums.append(torch.cat([p.detach().reshape(-1) for group in self.param_groups for p in group["params"]]))

    torch.optim.Adam.step = step_and_record
    atari.train(SCRIPT.args(tmp_path / f"rank{rank}", eval_episodes=0, save_model=False))
    torch.save(torch.stack(sums), tmp_path / f"rank{rank}.pt")


def test_ranks_keep_identical_parameters(tmp_path):
    run_ranks(record_parameters_after_every_step, 2, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert len(rank0) == 2 * SCRIPT.tiny["update_epochs"] * SCRIPT.tiny["num_minibatches"]
    assert torch.equal(rank0, rank1)
    assert not torch.equal(rank0[0], rank0[-1])  # and they did change


def fixed_batch_gradient(rank: int, world_size: int) -> torch.Tensor:
    """The PPO loss gradient on this rank's share of one fixed batch of 8, averaged over ranks."""
    torch.manual_seed(0)
    agent = atari.Agent(4, 4)
    obs, actions = (
        torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8),
        torch.randint(0, 4, (8,)),
    )
    advantages, old_logprobs = torch.randn(8), torch.randn(8) - 1.5
    share = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
    logprob, _, value = agent.evaluate_actions(obs[share], actions[share])
    loss = atari.policy_loss((logprob - old_logprobs[share]).exp(), advantages[share], 0.1) + value.pow(2).mean()
    loss.backward()
    if world_size > 1:
        atari.average_gradients(agent)
    return torch.cat([p.grad.reshape(-1) for p in agent.parameters()])


def save_fixed_batch_gradient(rank, world_size, port, tmp_path):
    join_world(rank, world_size, port)
    torch.save(fixed_batch_gradient(rank, world_size), tmp_path / f"grad{rank}.pt")


def test_two_ranks_average_to_the_gradient_of_the_whole_batch(tmp_path):
    run_ranks(save_fixed_batch_gradient, 2, tmp_path)
    whole = fixed_batch_gradient(0, 1)
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / f"grad{rank}.pt"), whole, rtol=1e-4, atol=1e-6)


def test_a_dead_rank_ends_the_job(tmp_path):
    proc = torchrun(tmp_path, "--env-id=Breakout", "--total-timesteps=10000000", "--torch-threads=1", wait=False)
    try:
        assert "rollout buffer" in proc.stdout.readline() + proc.stdout.readline()  # training has started
        workers = worker_pids(proc.pid)
        (rank1,) = [pid for pid in workers if b"RANK=1\0" in open(f"/proc/{pid}/environ", "rb").read()]
        os.kill(rank1, signal.SIGKILL)
        proc.wait(timeout=120)  # no hang: torchrun stops the other rank and fails
        assert proc.returncode != 0
        assert "ppo_atari.py FAILED" in proc.stderr.read()
        time.sleep(1)
        assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]  # no orphan left
    finally:
        proc.kill()


def worker_pids(parent: int) -> list:
    children = (
        open(f"/proc/{parent}/task/{parent}/children").read().split() if os.path.exists(f"/proc/{parent}") else []
    )
    return [int(pid) for pid in children]
