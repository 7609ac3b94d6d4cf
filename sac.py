"""Soft Actor-Critic (SAC) for continuous (Box) action spaces, in one file.

SAC (Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290; automatic temperature in
https://arxiv.org/abs/1812.05905) is off-policy: every transition goes into a replay buffer, and
after `learning_starts` random steps every environment step is followed by one gradient step on
a minibatch drawn from it. Two Q networks regress on the soft Bellman target
    y = r + gamma * (1 - terminated) * (min(Q1'(s', a'), Q2'(s', a')) - alpha * log pi(a'|s')),
a' ~ pi(.|s'), where Q1', Q2' are slowly moving (Polyak) copies. The actor, a Gaussian squashed
by tanh into the action bounds, maximizes min(Q1, Q2) - alpha * log pi, and the temperature
alpha is tuned so that the policy's entropy stays near -|A|.

Works with any gymnasium environment whose action space is a bounded Box: Pendulum-v1 by
default, HalfCheetah-v4, BipedalWalker-v3, or your own registered as `my_module:MyEnv-v0`.
The defaults are CleanRL's sac_continuous_action.py settings.

Usage (the default budget is 20k steps of Pendulum-v1: 5k random ones, then 15k updates):
    python sac.py --seed 1                          # the README's Pendulum-v1 figure
    python sac.py --env-id HalfCheetah-v4 --total-timesteps 1000000 --cuda    # as CleanRL runs it
    python sac.py --checkpoint-every 10000          # write checkpoint.pt as it goes, then after a kill:
    python sac.py --resume runs/<run>/checkpoint.pt
    python sac.py --eval-only runs/<run>/model.pt   # replay the evaluation that ended its training
    python sac.py --help                            # every setting
TensorBoard: `tensorboard --logdir runs`.
"""

import functools
import math
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    # Algorithm
    env_id: str = "Pendulum-v1"
    """gymnasium id with a bounded Box action space (`module:EnvName-v0` imports `module` first)"""
    total_timesteps: int = 20_000
    """total environment steps to train for, summed over all parallel environments"""
    num_envs: int = 1
    """parallel environments (SyncVectorEnv); one gradient update per vector step, as in CleanRL"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions of (2 * obs + action + 2) float32 values each"""
    learning_starts: int = 5_000
    """environment steps of uniformly random actions before the first update"""
    batch_size: int = 256
    """transitions per gradient update, drawn uniformly (with replacement) from the replay buffer"""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor"""
    q_lr: float = 1e-3
    """Adam learning rate of the Q networks and of the temperature"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak coefficient of the target Q networks: target <- (1 - tau) * target + tau * online"""
    policy_frequency: int = 2
    """update the actor and temperature every this many Q updates, as many times (TD3's delay)"""
    target_network_frequency: int = 1
    """Polyak-update the target Q networks every this many Q updates"""
    alpha: float = 0.2
    """entropy temperature when --no-autotune (autotune starts from 1.0, as CleanRL)"""
    autotune: bool = True
    """tune the temperature so that the policy's entropy stays near the target -|A|"""
    hidden_size: int = 256
    """width of the two hidden layers of the actor and of each Q network"""

    # Run
    seed: int = 1
    """seed of torch, numpy, python and the environments: same seed, same CPU run, same numbers"""
    cuda: bool = False
    """train on the GPU; stops with an error when no CUDA device is present"""
    torch_threads: int = 1
    """torch CPU threads (small networks run fastest with one)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic (slower on GPU, no effect on CPU)"""
    compile: bool = False
    """run the update's losses and the acting forward pass through torch.compile"""
    cudagraphs: bool = False
    """with --compile on a GPU: replay the compiled functions as CUDA graphs"""
    eval_episodes: int = 10
    """episodes of the deterministic policy (tanh of the mean) played after training (0: skip)"""
    eval_seed: Optional[int] = None
    """seed of the first evaluation episode, the next count up (default: seed + 10000)"""
    save_model: bool = True
    """write `model.pt` (actor weights and action bounds, args) at the end of training"""
    checkpoint_every: int = 0
    """write `checkpoint.pt` every this many environment steps (0: never); `--resume` reads it"""
    checkpoint_buffer: bool = False
    """store the replay buffer too; without it, a resume refills it for `learning_starts` steps"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to carry on from: its args, weights, optimizers, step and RNG"""
    eval_only: Optional[str] = None
    """path of a `model.pt`: evaluate it for `--eval-episodes` episodes and exit, no training"""
    capture_video: bool = False
    """record videos of the first environment to `{run_dir}/videos`"""
    track: bool = False
    """send the TensorBoard scalars to Weights & Biases as well (needs `pip install wandb`)"""
    wandb_project_name: str = "reference-rl"
    """Weights & Biases project"""
    wandb_entity: Optional[str] = None
    """Weights & Biases team or user"""
    progress: bool = True
    """show a progress bar (only when stdout is a terminal)"""
    runs_dir: str = "runs"
    """where each run gets its folder `{env_id}__{script}__{seed}__{time}`"""


# ---- Environment
def make_env(env_id: str, idx: int, capture_video: bool, video_dir: str):
    """Return a thunk that builds one environment; vector envs call it in each slot."""

    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array", disable_env_checker=True)
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        else:
            env = gym.make(env_id, disable_env_checker=True)  # checked once in check_env
        # Dict, Tuple and Discrete observations become one flat float vector.
        if not isinstance(env.observation_space, gym.spaces.Box):
            env = gym.wrappers.FlattenObservation(env)
        return env

    return thunk


def make_vector_env(args: Args, video_dir: str) -> gym.vector.VectorEnv:
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, video_dir) for i in range(args.num_envs)],
        # SAME_STEP: a finished env resets inside the step that ended it, so every returned
        # observation is one the agent acts on, and the real last one is in infos["final_obs"].
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        # A new array at every step: the previous observation is stored after the step.
        copy=True,
    )
    # Records the raw environment reward, whatever the agent is trained on.
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


# ---- The math, as pure functions
def squashed_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, eps: float = 1e-6):
    """log pi(a|s) of the squashed action a = tanh(u), u ~ N(mean, exp(log_std)^2), summed over
    the action dimensions (the last one):
        log pi(a|s) = sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2 + eps)]
    The second term is the change of variables through tanh (Haarnoja et al. 2018, appendix C);
    eps keeps it finite where tanh saturates. This is the density of a in [-1, 1]^|A|: rescaling
    to the env's bounds would only add a constant, so the entropy target -|A| does not depend
    on the bounds."""
    log_normal = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return (log_normal - torch.log(1.0 - torch.tanh(u) ** 2 + eps)).sum(-1)


def soft_q_target(rewards, terminations, next_q1, next_q2, next_log_pi, alpha, gamma: float) -> torch.Tensor:
    """Soft Bellman target of both Q networks, with a' ~ pi(.|s') and the target networks' Q:
        y = r + gamma * (1 - terminated) * (min(Q1'(s', a'), Q2'(s', a')) - alpha * log pi(a'|s'))
    Only a termination cuts the bootstrap: at a time limit (truncation) s' is the real last
    observation and its value counts."""
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_pi
    return rewards + gamma * (1.0 - terminations) * soft_value


@torch.no_grad()
def polyak_update(params: Iterable[torch.Tensor], target_params: Iterable[torch.Tensor], tau: float) -> None:
    """In place: target <- (1 - tau) * target + tau * online, parameter by parameter."""
    for param, target_param in zip(params, target_params, strict=True):
        target_param.lerp_(param, tau)


# ---- The networks
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """Gaussian policy squashed by tanh: u ~ N(mean(s), std(s)), a = tanh(u) * scale + bias,
    where scale and bias map [-1, 1] onto the env's action bounds (buffers, saved with the
    weights)."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, hidden_size: int):
        super().__init__()
        act_dim = len(action_low)
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size), nn.ReLU()
        )
        self.fc_mean = nn.Linear(hidden_size, act_dim)
        self.fc_logstd = nn.Linear(hidden_size, act_dim)
        low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in (action_low, action_high))
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor):
        """Mean and log standard deviation of u, log_std squashed smoothly into [LOG_STD_MIN, LOG_STD_MAX]."""
        h = self.trunk(obs)
        log_std = torch.tanh(self.fc_logstd(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)
        return self.fc_mean(h), log_std

    def get_action(self, obs: torch.Tensor):
        """A sampled action in the env's bounds and its log pi(a|s), differentiable in the weights
        (reparameterization: u = mean + std * noise)."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u) * self.action_scale + self.action_bias, squashed_gaussian_log_prob(u, mean, log_std)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: tanh of the mean, rescaled to the env's bounds."""
        mean, _ = self(obs)
        return torch.tanh(mean) * self.action_scale + self.action_bias


class SoftQNetwork(nn.Module):
    """Q(s, a): an MLP on the observation and action, concatenated."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int):
        super().__init__()
        h = hidden_size
        self.net = nn.Sequential(
            nn.Linear(obs_dim + act_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1)
        )

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)


# The losses of one update, on the networks above: what --compile compiles.
def soft_q_losses(actor, qf1, qf2, qf1_target, qf2_target, batch, alpha, gamma) -> tuple:
    """Each Q network's mean squared error against the soft Bellman target of the batch
    (obs, actions, rewards, next_obs, terminations), with a' ~ pi(.|s') and the target
    networks' values; and the two networks' Q values, for the diagnostics."""
    obs, actions, rewards, next_obs, terminations = batch
    with torch.no_grad():
        next_actions, next_log_pi = actor.get_action(next_obs)
        next_q1, next_q2 = qf1_target(next_obs, next_actions), qf2_target(next_obs, next_actions)
        q_target = soft_q_target(rewards, terminations, next_q1, next_q2, next_log_pi, alpha, gamma)
    qf1_values, qf2_values = qf1(obs, actions), qf2(obs, actions)
    return F.mse_loss(qf1_values, q_target), F.mse_loss(qf2_values, q_target), qf1_values, qf2_values


def soft_actor_loss(actor, qf1, qf2, obs, alpha) -> tuple:
    """E[alpha * log pi(a|s) - min(Q1(s, a), Q2(s, a))] with a ~ pi(.|s) reparameterized, so
    that the gradient flows through the Q networks into the action; and log pi(a|s), which the
    temperature's loss needs."""
    pi, log_pi = actor.get_action(obs)
    min_q_pi = torch.min(qf1(obs, pi), qf2(obs, pi))
    return (alpha * log_pi - min_q_pi).mean(), log_pi


# ---- Training
class ReplayBuffer:
    """Transitions (obs, actions, rewards, next_obs, terminations) in preallocated float32 arrays, written in a circle
    (the oldest overwritten first) and sampled uniformly with replacement. `next_obs` is the real observation that
    followed the action, also where the episode ended; `terminations` is 1 only where it ended by termination, so a
    time limit still bootstraps. (2 * obs_dim + act_dim + 2) * 4 bytes per transition: 168 MB for 1M of HalfCheetah."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminations")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminations = np.zeros(capacity, dtype=np.float32)

    def add(self, obs, actions, rewards, next_obs, terminations) -> None:
        """Store one vector step: the first axis of every argument is the environment."""
        idx = (self.pos + np.arange(len(obs))) % self.capacity
        for name, value in zip(self.FIELDS, (obs, actions, rewards, next_obs, terminations)):
            getattr(self, name)[idx] = value
        self.pos = int(idx[-1] + 1) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple:
        """(obs, actions, rewards, next_obs, terminations) of batch_size random transitions."""
        idx = rng.integers(0, self.size, batch_size)
        return tuple(getattr(self, name)[idx] for name in self.FIELDS)

    def state_dict(self) -> dict:
        """The filled part as tensors, so that a checkpoint loads with weights_only=True."""
        tensors = {name: torch.from_numpy(getattr(self, name)[: self.size]) for name in self.FIELDS}
        return {"pos": self.pos, "size": self.size, **tensors}

    def load_state_dict(self, state: dict) -> None:
        for name in self.FIELDS:
            getattr(self, name)[: state["size"]] = state[name].numpy()
        self.pos, self.size = state["pos"], state["size"]


def train(args: Args) -> dict:
    """Train with SAC; returns the step count, the episodes' returns, steps/s, updates/s, the run
    folder and the model file (the rest of the plumbing is at the end of the file)."""
    args, checkpoint = load_settings(args)
    device = select_device(args.cuda, args.torch_threads)
    run_dir, writer = start_run(args, checkpoint, device)
    seed_everything(args.seed, args.torch_deterministic)
    # torch draws the policy's noise; this generator the random actions and the minibatches.
    rng = np.random.default_rng(args.seed)

    envs = make_vector_env(args, os.path.join(run_dir, "videos"))
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    action_low, action_high = envs.single_action_space.low, envs.single_action_space.high
    act_dim = len(action_low)

    actor = Actor(obs_dim, action_low, action_high, args.hidden_size).to(device)
    qf1, qf2, qf1_target, qf2_target = (SoftQNetwork(obs_dim, act_dim, args.hidden_size).to(device) for _ in range(4))
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_params = list(qf1.parameters()) + list(qf2.parameters())
    # One optimizer over both Q networks: their losses are summed and take one backward pass.
    # fused: one kernel updates all parameters, measurably faster for small networks.
    q_optimizer = torch.optim.Adam(q_params, lr=args.q_lr, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    # The temperature is learned as log(alpha), starting at alpha = 1; it is a tensor throughout,
    # so the loop never waits for a number to come back from the device.
    target_entropy = -float(act_dim)
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.q_lr, fused=True)
    buffer = ReplayBuffer(args.buffer_size, obs_dim, act_dim)

    # What checkpoint.pt holds besides model.pt's actor, the counters and the random states: named
    # once, for save and restore. The replay buffer only with --checkpoint-buffer.
    parts = dict(qf1=qf1, qf2=qf2, qf1_target=qf1_target, qf2_target=qf2_target, log_alpha=log_alpha)
    parts.update(actor_optimizer=actor_optimizer, q_optimizer=q_optimizer, alpha_optimizer=alpha_optimizer)
    if args.checkpoint_buffer:
        parts["buffer"] = buffer
    global_step, start_iteration, num_updates = restore(args, checkpoint, {"actor": actor, **parts}, rng, device)
    alpha = log_alpha.detach().exp() if args.autotune else torch.tensor(args.alpha, device=device)
    # Updates start after learning_starts steps; a resumed run whose buffer was not saved first
    # refills it with learning_starts steps (of the current policy, when past the random phase).
    refill = checkpoint is not None and buffer.size == 0
    updates_start = global_step + args.learning_starts if refill else args.learning_starts
    num_iterations = args.total_timesteps // args.num_envs

    to_tensor = functools.partial(torch.as_tensor, dtype=torch.float32, device=device)

    # --compile: these three functions through torch.compile (see maybe_compile), called by their names.
    compiled = SimpleNamespace(
        soft_q_losses=maybe_compile(soft_q_losses, args),
        soft_actor_loss=maybe_compile(soft_actor_loss, args),
        get_action=maybe_compile(actor.get_action, args),
    )

    episodic_returns = []
    start_time, start_step, start_updates = time.time(), global_step, num_updates
    updates_start_time, last_saved = None, global_step
    bar = progress_bar(args.progress, args.total_timesteps, global_step)
    # A resumed run starts fresh episodes, seeded differently from the first start.
    obs, _ = envs.reset(seed=args.seed + (start_iteration - 1) * args.num_envs)
    for iteration in range(start_iteration, num_iterations + 1):
        # ---- Act: uniformly random actions first, then samples of the policy.
        if global_step < args.learning_starts:
            actions = rng.uniform(action_low, action_high, size=(args.num_envs, act_dim)).astype(np.float32)
        else:
            with torch.no_grad():
                actions, _ = compiled.get_action(to_tensor(obs))
            actions = actions.cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        global_step += args.num_envs

        # Where an episode ended, next_obs already starts the next one (SAME_STEP autoreset): the
        # transition gets the real last observation. Only terminations are stored as the end of
        # the bootstrap; a truncated transition keeps its next state's value.
        real_next_obs = next_obs.copy()
        for env_idx in np.flatnonzero(terminations | truncations):
            real_next_obs[env_idx] = infos["final_obs"][env_idx]
        buffer.add(obs, actions, rewards, real_next_obs, terminations)
        obs = next_obs
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                episodic_returns.append(float(infos["episode"]["r"][i]))
                writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step)
                writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)

        # ---- Update: one gradient step of both Q networks per vector step, on the soft Bellman
        # target y = r + gamma * (1 - terminated) * (min Q'(s', a') - alpha log pi).
        if global_step > updates_start:
            updates_start_time = updates_start_time or time.time()
            num_updates += 1
            batch = tuple(map(to_tensor, buffer.sample(args.batch_size, rng)))
            qf1_loss, qf2_loss, qf1_values, qf2_values = compiled.soft_q_losses(
                actor, qf1, qf2, qf1_target, qf2_target, batch, alpha, args.gamma
            )
            qf_loss = qf1_loss + qf2_loss
            q_optimizer.zero_grad()
            qf_loss.backward()
            q_optimizer.step()

            # ---- Actor and temperature: delayed, then as many steps as were skipped.
            if num_updates % args.policy_frequency == 0:
                # The actor's gradient flows through the Q networks into the action; their own
                # weights need no gradient here.
                for p in q_params:
                    p.requires_grad_(False)
                for _ in range(args.policy_frequency):
                    actor_loss, log_pi = compiled.soft_actor_loss(actor, qf1, qf2, batch[0], alpha)
                    actor_optimizer.zero_grad()
                    actor_loss.backward()
                    actor_optimizer.step()

                    if args.autotune:
                        # Raises alpha when the entropy -log pi is below the target, lowers it above.
                        alpha_loss = (-log_alpha.exp() * (log_pi.detach() + target_entropy)).mean()
                        alpha_optimizer.zero_grad()
                        alpha_loss.backward()
                        alpha_optimizer.step()
                        alpha = log_alpha.detach().exp()
                for p in q_params:
                    p.requires_grad_(True)

            # ---- Targets: Polyak averages of the online Q networks.
            if num_updates % args.target_network_frequency == 0:
                polyak_update(qf1.parameters(), qf1_target.parameters(), args.tau)
                polyak_update(qf2.parameters(), qf2_target.parameters(), args.tau)

            # Diagnostics every 100 updates (.item() waits for the device), once the actor has been
            # updated in this process; qf_loss: the mean of the two, as CleanRL logs it.
            if num_updates % 100 == 0 and num_updates - start_updates >= args.policy_frequency:
                scalars = {
                    "losses/qf1_values": qf1_values.mean().item(),
                    "losses/qf2_values": qf2_values.mean().item(),
                    "losses/qf1_loss": qf1_loss.item(),
                    "losses/qf2_loss": qf2_loss.item(),
                    "losses/qf_loss": (qf_loss / 2.0).item(),
                    "losses/actor_loss": actor_loss.item(),
                    "losses/entropy": -log_pi.mean().item(),
                    "losses/alpha": alpha.item(),
                    "charts/updates_per_second": (num_updates - start_updates) / (time.time() - updates_start_time),
                }
                if args.autotune:
                    scalars["losses/alpha_loss"] = alpha_loss.item()
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, global_step)

        if iteration % 100 == 0 or iteration == num_iterations:
            sps = int((global_step - start_step) / (time.time() - start_time))
            writer.add_scalar("charts/SPS", sps, global_step)
            bar.update(global_step - bar.n)
            bar.set_postfix(sps=sps, ret=np.mean(episodic_returns[-20:] or np.nan), refresh=False)
        # checkpoint.pt: what --resume needs to carry on as if the run had not stopped.
        if args.checkpoint_every and (global_step - last_saved >= args.checkpoint_every or iteration == num_iterations):
            last_saved = global_step
            state = dict(iteration=iteration, num_updates=num_updates, numpy_rng_state=rng.bit_generator.state)
            save(run_dir, "checkpoint.pt", args, actor, global_step, **state, **parts)
    bar.close()
    envs.close()

    # The end: model.pt, the deterministic policy's evaluation, the summary.
    sps = int((global_step - start_step) / (time.time() - start_time))
    ups = (num_updates - start_updates) / (time.time() - (updates_start_time or 0.0))  # updates per second
    model_path = save(run_dir, "model.pt", args, actor, global_step) if args.save_model else None
    eval_returns = []
    if args.eval_episodes > 0:
        videos = os.path.join(run_dir, "videos-eval") if args.capture_video else None
        eval_returns = play(
            actor, args.env_id, args.eval_episodes, first_eval_seed(args), device, videos, args.progress
        )
        for i, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, i)
        mean, std = np.mean(eval_returns), np.std(eval_returns)
        print(f"eval: mean return {mean:.1f} +- {std:.1f} over {len(eval_returns)} deterministic episodes")
    recent = np.mean(episodic_returns[-20:] or np.nan)
    print(f"done: {global_step} steps, {sps} steps/s, {ups:.0f} updates/s, last 20 episodes {recent:.1f}")
    writer.close()
    if args.track:
        import wandb

        wandb.finish()
    result = dict(global_step=global_step, num_updates=num_updates, sps=sps, updates_per_second=ups)
    result.update(episodic_returns=episodic_returns, eval_returns=eval_returns)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt") if args.checkpoint_every > 0 else None
    return dict(result, run_dir=run_dir, model_path=model_path, checkpoint_path=checkpoint_path)


# ---- Evaluation
@torch.no_grad()
def play(actor: Actor, env_id: str, episodes: int, seed: int, device, video_dir=None, progress=False) -> list:
    """Run the deterministic policy (tanh of the mean, rescaled) for whole episodes, the first
    seeded `seed`, the next counting up; with a video_dir, record them there."""
    env = make_env(env_id, 0, video_dir is not None, video_dir)()
    returns = []
    bar = progress_bar(progress, episodes, desc="evaluating", unit="episode")
    for episode in range(episodes):
        raw_obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs = torch.as_tensor(raw_obs, dtype=torch.float32, device=device).reshape(1, -1)
            action = actor.greedy_action(obs)[0].cpu().numpy()
            raw_obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        bar.update(1)
        bar.set_postfix(ret=np.mean(returns), refresh=False)
    bar.close()
    env.close()
    return returns


def evaluate(model_path, env_id=None, episodes=10, seed=None, cuda=False, capture_video=False, progress=False) -> list:
    """Load a model.pt and return the episodic returns of its deterministic policy. The default
    seed is that of the evaluation at the end of its training, so that the same games are played."""
    actor, saved, env_id, device = load_agent(model_path, env_id, cuda)
    video_dir = os.path.join(os.path.dirname(model_path), "videos-eval") if capture_video else None
    seed = first_eval_seed(saved) if seed is None else seed
    return play(actor, env_id, episodes, seed, device, video_dir, progress)


# ---- Plumbing: errors, checkpoint files, run folders, progress, W&B. A reader of the algorithm may stop here.
class ConfigError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def validate(args: Args) -> None:
    """Refuse, in one line, the settings that cannot mean anything. Written as `not x > 0`, which NaN fails too."""
    rules = [
        ("must be positive", lambda x: x > 0, "total_timesteps num_envs buffer_size batch_size policy_frequency"),
        ("must be positive", lambda x: x > 0, "target_network_frequency hidden_size torch_threads"),
        ("must be 0 or more", lambda x: x >= 0, "policy_lr q_lr alpha eval_episodes checkpoint_every"),
        ("must be between 0 and 1", lambda x: 0 <= x <= 1, "gamma"),
        ("must be more than 0 and at most 1", lambda x: 0 < x <= 1, "tau"),
        ("must be between 0 and 2**32 - 1", lambda x: 0 <= x < 2**32, "seed eval_seed"),  # numpy's seeds: 32 bits
    ]
    for requirement, holds, names in rules:
        for name in names.split():
            value = getattr(args, name)
            if value is not None and not holds(value):  # None: the optional eval_seed
                raise ConfigError(f"{flag(name)} {requirement}, got {value}")
    if args.eval_only is not None and not args.eval_episodes > 0:
        raise ConfigError(f"--eval-episodes must be positive with --eval-only, got {args.eval_episodes}")
    if args.buffer_size < args.num_envs:
        raise ConfigError(f"--buffer-size {args.buffer_size} cannot hold one step of {args.num_envs} envs")
    if args.total_timesteps < args.num_envs:
        n, steps = args.num_envs, args.total_timesteps
        raise ConfigError(f"--total-timesteps {steps} is less than one step of all envs (num_envs = {n})")
    if not 0 <= args.learning_starts < args.total_timesteps:
        what = f"--learning-starts {args.learning_starts} must be in [0, --total-timesteps {args.total_timesteps})"
        raise ConfigError(f"{what}: otherwise no update ever happens")
    if args.cudagraphs and not (args.compile and args.cuda):
        raise ConfigError("--cudagraphs needs --compile and --cuda: CUDA graphs run on a GPU")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_env(env_id: str) -> None:
    """Build the environment once and refuse, in one line, what this script cannot train."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"environment {env_id!r} needs a package that is missing: {e}") from None
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        raise ConfigError(f"unknown environment id {env_id!r}: {e}") from None
    action_space, space = env.action_space, env.observation_space
    env.close()
    if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise ConfigError(f"{env_id} has a discrete action space; use ppo_discrete.py")
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(f"{env_id} has action space {action_space}; this script needs a Box of shape (n,)")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ConfigError(f"{env_id} has unbounded actions {action_space}; SAC squashes actions into finite bounds")
    try:
        gym.spaces.flatdim(space)
    except (NotImplementedError, ValueError, TypeError):
        raise ConfigError(
            f"{env_id}: the observation space {space} cannot be flattened into a vector; wrap the env in a "
            "gymnasium ObservationWrapper that encodes it as a Box, or drops the part"
        ) from None


def select_device(cuda: bool, torch_threads: int) -> torch.device:
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda was given but torch finds no CUDA device; run without --cuda")
    if not cuda:
        torch.set_num_threads(torch_threads)
    return torch.device("cuda" if cuda else "cpu")


def maybe_compile(fn, args: Args):
    """fn itself, or with --compile fn through torch.compile: the same code traced once into a graph, its small
    operations fused into fewer kernels. --cudagraphs adds "reduce-overhead" mode: a call's kernels recorded as a
    CUDA graph and replayed, one launch instead of hundreds (the policy's noise still differs between replays)."""
    if not args.compile:
        return fn
    if not args.cudagraphs:
        return torch.compile(fn)
    graphed = torch.compile(fn, mode="reduce-overhead")

    def copied(*inputs):
        # A replay writes its outputs into memory that a later replay reuses: hand back copies,
        # which the training loop may keep (the losses for the logs).
        out = graphed(*inputs)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()

    return copied


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    """The global generators; the envs have their own seeds, and train() its numpy generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def first_eval_seed(args: Args) -> int:
    """Evaluation plays games the training never saw."""
    return args.seed + 10_000 if args.eval_seed is None else args.eval_seed


def save_atomic(obj: dict, path: str) -> None:
    """Write to a temporary file and rename it: a kill never leaves a broken file."""
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)


def load_file(path: str, required_keys: tuple) -> dict:
    """Load a model.pt or checkpoint.pt: plain tensors and data only (weights_only=True)."""
    if not os.path.isfile(path):
        raise ConfigError(f"no such file: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot read {path}: {reason}") from None
    missing = [k for k in required_keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConfigError(f"{path} is not a model or checkpoint of this script (missing {missing})")
    return data


def load_settings(args: Args) -> tuple:
    """The settings of the run, checked: a resumed run takes them from its checkpoint, and only
    how it is run (device, progress, W&B) may change. Returns (args, checkpoint or None)."""
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_file(args.resume, ("actor", "args", "global_step", "iteration", "num_updates"))
        saved = Args(**checkpoint["args"])
        saved.resume, saved.cuda, saved.progress, saved.track = (args.resume, args.cuda, args.progress, args.track)
        args = saved
    validate(args)
    check_env(args.env_id)
    return args, checkpoint


def restore(args: Args, checkpoint: Optional[dict], parts: dict, rng: np.random.Generator, device) -> tuple:
    """Load a checkpoint's parts (networks, optimizers, temperature, replay buffer) and random
    states; returns (global_step, first iteration, num_updates), which are (0, 1, 0) for a new run."""
    if checkpoint is None:
        return 0, 1, 0
    for name, part in parts.items():
        if isinstance(part, torch.Tensor):
            part.detach().copy_(checkpoint[name])  # in place, outside autograd (log_alpha)
        else:
            part.load_state_dict(checkpoint[name])
    torch.set_rng_state(checkpoint["torch_rng_state"])
    if device.type == "cuda" and "cuda_rng_state" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
    rng.bit_generator.state = checkpoint["numpy_rng_state"]
    size = parts["buffer"].size if "buffer" in parts else 0
    print(f"resumed from {args.resume} at step {checkpoint['global_step']}, replay buffer of {size} transitions")
    return checkpoint["global_step"], checkpoint["iteration"] + 1, checkpoint["num_updates"]


def save(run_dir: str, filename: str, args: Args, actor: Actor, global_step: int, **resume_state) -> str:
    """model.pt: what evaluate needs (the actor's weights and action bounds, the args, the step).
    checkpoint.pt: the same, and what --resume needs: resume_state (a part with a state_dict is
    stored as that), the run folder and torch's random states. Returns the file's path."""
    state = {"actor": actor.state_dict(), "args": asdict(args), "global_step": global_step}
    if resume_state:
        state.update({k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in resume_state.items()})
        state.update(run_dir=run_dir, torch_rng_state=torch.get_rng_state())
        if torch.cuda.is_initialized():
            state["cuda_rng_state"] = torch.cuda.get_rng_state()
    path = os.path.join(run_dir, filename)
    save_atomic(state, path)
    return path


def load_agent(model_path: str, env_id: Optional[str] = None, cuda: bool = False) -> tuple:
    """Rebuild the Actor of a model.pt (weights and action bounds) for env_id (default: the one
    it was trained on). Returns (actor, saved Args, env_id, device)."""
    data = load_file(model_path, ("actor", "args"))
    saved = Args(**data["args"])
    env_id = env_id or saved.env_id
    check_env(env_id)
    device = select_device(cuda, saved.torch_threads)
    env = make_env(env_id, 0, False, "")()
    obs_dim = int(np.prod(env.observation_space.shape))
    actor = Actor(obs_dim, env.action_space.low, env.action_space.high, saved.hidden_size).to(device)
    env.close()
    try:
        actor.load_state_dict(data["actor"])
    except RuntimeError as e:
        raise ConfigError(f"{model_path} does not fit {env_id}: {str(e).splitlines()[0]}") from None
    return actor.eval(), saved, env_id, device


def start_run(args: Args, checkpoint: Optional[dict], device: torch.device) -> tuple:
    """The run's folder (a resumed run keeps its own) and its TensorBoard writer, which sends
    the same scalars to W&B with --track. Returns (run_dir, writer)."""
    if checkpoint is not None and os.path.isdir(checkpoint.get("run_dir", "")):
        run_dir = checkpoint["run_dir"]
    else:
        env_name = args.env_id.replace("/", "-").replace(":", "-")
        script = os.path.basename(__file__)[:-3]
        run_dir = os.path.join(args.runs_dir, f"{env_name}__{script}__{args.seed}__{int(time.time())}")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder under {args.runs_dir}: {e.strerror or e}") from None
    print(f"device: {device}, run: {run_dir}")
    if args.track:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--track needs Weights & Biases: pip install wandb") from None
        where = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=os.path.basename(run_dir))
        wandb.init(**where, config=asdict(args), sync_tensorboard=True, save_code=True)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    return run_dir, writer


def progress_bar(enabled: bool, total: int, initial: int = 0, desc: str = "training", unit: str = "step"):
    """A tqdm bar, silent unless stdout is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not (enabled and sys.stdout.isatty()))


def main() -> None:
    """The command line: train, or with --eval-only evaluate a saved model. A bad setting, or a
    file or folder that cannot be written, is printed as one line with exit code 2."""
    args = tyro.cli(Args)
    try:
        if args.eval_only is None:
            train(args)
        else:
            validate(args)
            returns = evaluate(
                args.eval_only, None, args.eval_episodes, args.eval_seed, args.cuda, args.capture_video, args.progress
            )
            mean, std = np.mean(returns), np.std(returns)
            print(f"eval: mean return {mean:.1f} +- {std:.1f} over {len(returns)} episodes: {returns}")
    except (ConfigError, OSError) as e:
        print(f"{os.path.basename(__file__)}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
