"""Proximal Policy Optimization (PPO) from pixels: Atari games, in one file.

PPO (Schulman et al. 2017, https://arxiv.org/abs/1707.06347) collects a batch of experience with the current policy,
estimates advantages with GAE (Schulman et al. 2015, https://arxiv.org/abs/1506.02438), then takes several epochs of
minibatch gradient steps on a clipped surrogate objective that keeps the new policy close to the one that collected it.
The network is the Nature DQN's (Mnih et al. 2015), shared by policy and value; the settings are the PPO paper's.

The games run in ale_py's C++ vector environment (ROMs included), which does the standard preprocessing in its own
threads: 84x84 grayscale frames, skipped, stacked and started with no-ops as the Atari settings below say. `--env-id`
takes the names users know: BreakoutNoFrameskip-v4, ALE/Breakout-v5, Breakout and breakout all name the same game.

Usage (the default budget is the README's Breakout run: 10M agent steps, 40M frames; a GPU makes it practical):
    python ppo_atari.py --cuda --seed 1                           # the README's Breakout figure
    torchrun --standalone --nproc-per-node N ppo_atari.py --cuda  # N processes share --num-envs and the batch
    python ppo_atari.py --checkpoint-every 100000                 # after a kill: --resume runs/<run>/checkpoint.pt
    python ppo_atari.py --eval-only runs/<run>/model.pt           # replays the games of the evaluation after training

Read from the top: the arguments, the environment, the math, the network, the training loop, evaluation. The last
section, "Plumbing", is what running a script needs and learning the algorithm does not.
"""

import difflib
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Optional

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from ale_py.vector_env import AtariVectorEnv
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    # Algorithm
    env_id: str = "BreakoutNoFrameskip-v4"
    """Atari game: BreakoutNoFrameskip-v4, ALE/Breakout-v5, Breakout, breakout: the same game"""
    total_timesteps: int = 10_000_000
    """total agent steps to train for, summed over all parallel games (one step = 4 frames)"""
    num_envs: int = 8
    """parallel games (ale_py's AtariVectorEnv)"""
    num_steps: int = 128
    """steps per environment per rollout; the batch is num_envs * num_steps"""
    learning_rate: float = 2.5e-4
    """Adam learning rate"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    lr_schedule_steps: int = 0
    """steps over which the learning rate decays to 0 (0: --total-timesteps; more: stop midway)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of generalized advantage estimation (0: one-step TD, 1: Monte Carlo)"""
    num_minibatches: int = 4
    """minibatches per epoch; the batch must divide evenly into them"""
    update_epochs: int = 4
    """passes over the batch per update"""
    norm_adv: bool = True
    """normalize advantages within each minibatch"""
    clip_coef: float = 0.1
    """surrogate clipping coefficient epsilon: the ratio is clipped to [1 - eps, 1 + eps]"""
    clip_vloss: bool = True
    """clip the value update to clip_coef around the old value, as in the original PPO code"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient norm clipping threshold"""
    target_kl: Optional[float] = None
    """stop the update's epochs early when the approximate KL exceeds this (None: never)"""

    # Atari environment (defaults: the NoFrameskip-v4 protocol of the PPO and CleanRL benchmarks)
    frame_skip: int = 4
    """emulator frames per agent step; the observation is the max of the last two"""
    frame_stack: int = 4
    """frames stacked into one observation"""
    noop_max: int = 30
    """at most this many random no-op actions start each game, so starts differ"""
    repeat_action_probability: float = 0.0
    """sticky actions: chance that the emulator repeats the previous action (ALE v5 uses 0.25)"""
    max_episode_frames: int = 108_000
    """a game is truncated after this many emulator frames (30 minutes of play)"""
    life_loss_ends_bootstrap: bool = True
    """a lost life ends the value bootstrap, as if the game were over (the score goes on)"""
    clip_rewards: bool = True
    """train on sign(reward) in {-1, 0, 1}; the logged returns are always the real game score"""

    # Run
    seed: int = 1
    """seed of torch, numpy, python and the environments: same seed, same CPU run, same numbers"""
    cuda: bool = False
    """train on the GPU; stops with an error when no CUDA device is present"""
    torch_threads: int = 0
    """torch CPU threads for the convolutions (0: the cores, shared among torchrun processes)"""
    env_threads: int = 0
    """threads of ale_py's vector environment (0: the cores, shared among torchrun processes)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic (slower on GPU, no effect on CPU)"""
    compile: bool = False
    """run the minibatch loss and the acting forward pass through torch.compile"""
    cudagraphs: bool = False
    """with --compile on a GPU: replay the compiled functions as CUDA graphs"""
    bf16: bool = False
    """on a GPU: run the convolutions in bfloat16 (autocast); the heads and losses stay float32"""
    eval_episodes: int = 10
    """full games (all lives) played after training, sampling actions as in training (0: skip)"""
    eval_greedy: bool = False
    """evaluate the greedy policy (argmax) instead; the published Atari scores sample"""
    eval_idle_frames: int = 18_000
    """an evaluation game ends after this many frames without a point (5 minutes; 0: never)"""
    eval_seed: Optional[int] = None
    """seed of the first evaluation episode, the next count up (default: seed + 10000)"""
    save_model: bool = True
    """write `model.pt` (weights, args) at the end of training"""
    checkpoint_every: int = 0
    """write `checkpoint.pt` every this many agent steps (0: never); `--resume` reads it"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to carry on from: its args, weights, optimizer, step and RNG"""
    eval_only: Optional[str] = None
    """path of a `model.pt`: evaluate it for `--eval-episodes` episodes and exit, no training"""
    capture_video: bool = False
    """record videos of the evaluation games to `{run_dir}/videos-eval` (training is unseen)"""
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
    dist_timeout: int = 300
    """under torchrun: seconds a process waits for the others before the job fails"""


# ---- Environment
def make_env(game: str, args: Args, capture_video: bool, video_dir: str) -> gym.Env:
    """One game with the vector env's preprocessing, for evaluation and video: the pixels the agent trained on."""
    env = ale_py.env.AtariEnv(
        game=game,
        frameskip=1,  # AtariPreprocessing skips the frames, keeping the last two for the max
        repeat_action_probability=args.repeat_action_probability,
        max_num_frames_per_episode=args.max_episode_frames,
        render_mode="rgb_array" if capture_video else None,
    )
    if capture_video:
        env = gym.wrappers.RecordVideo(env, video_dir, fps=60, disable_logger=True)  # every emulator frame
    env = gym.wrappers.AtariPreprocessing(env, noop_max=args.noop_max, frame_skip=args.frame_skip, screen_size=84)
    return gym.wrappers.FrameStackObservation(env, args.frame_stack, padding_type="zero")


def cores_per_process() -> int:
    """This machine's CPU cores divided among the processes torchrun started on it (1 without)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def make_vector_env(args: Args, game: str, num_envs: int) -> gym.vector.VectorEnv:
    envs = AtariVectorEnv(
        game,
        num_envs,
        num_threads=args.env_threads or cores_per_process(),
        # SAME_STEP: a finished env resets inside the step that ended it, so every returned
        # observation is one the agent acts on, and the real last one is in infos["final_obs"].
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        frameskip=args.frame_skip,
        stack_num=args.frame_stack,
        noop_max=args.noop_max,
        repeat_action_probability=args.repeat_action_probability,
        max_num_frames_per_episode=args.max_episode_frames,
        # The game goes on across lives and the rewards arrive unclipped, so the statistics below record real
        # scores; the training loop does the life loss and the clipping.
        episodic_life=False,
        reward_clipping=False,
        # Without a FIRE at reset the evaluation env above sees the very same frames; the agent learns to press
        # FIRE anyway, since it must after every lost life.
        use_fire_reset=False,
    )
    # Records the raw environment reward, whatever the agent is trained on.
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


# ---- The math, as pure functions
def compute_gae(rewards, values, dones, last_value, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalized advantage estimation, shapes [T] or [T, N].

    dones[t] = 1 when the episode ended at step t (terminated or truncated; a truncated step's
    reward already holds the bootstrap gamma * V(final_obs)); last_value = V(s_T).
        delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
    The returns (value targets) are advantages + values.
    """
    not_done = 1.0 - dones
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
    deltas = rewards + gamma * next_values * not_done - values
    decay = gamma * gae_lambda * not_done
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        next_advantage = deltas[t] + decay[t] * next_advantage
        advantages[t] = next_advantage
    return advantages


def policy_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Clipped surrogate loss: -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))."""
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def value_loss(new_values, old_values, returns, clip_coef: float, clip_vloss: bool) -> torch.Tensor:
    """0.5 * mean((V - R)^2); with clipping, the worse of the clipped and unclipped errors,
    where the clipped prediction stays within clip_coef of the value that collected the data.
    The range clip_coef is in the units of the values: of scaled rewards under --norm-reward."""
    unclipped = (new_values - returns) ** 2
    if not clip_vloss:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-8): advantages of one minibatch on a common scale."""
    return (x - x.mean()) / (x.std() + 1e-8)


def approx_kl(ratio: torch.Tensor) -> torch.Tensor:
    """Estimate of KL(old || new) from ratios r = pi_new / pi_old: mean((r - 1) - log r),
    unbiased and never negative (http://joschu.net/blog/kl-approx.html)."""
    return ((ratio - 1.0) - ratio.log()).mean()


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets): 1 is perfect, 0 no better than a constant."""
    var_targets = targets.var()
    if var_targets == 0:
        return float("nan")
    return (1.0 - (targets - predictions).var() / var_targets).item()


# ---- The network
def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights and zero bias, the initialization of the original PPO code."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """The Nature DQN network (three convolutions, a 512-unit layer) shared by the policy's logits and the value."""

    def __init__(self, frame_stack: int, n_actions: int, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(frame_stack, 32, 8, stride=4)),  # 84x84 -> 20x20
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),  # -> 9x9
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),  # -> 7x7
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        # A small last layer starts the policy near uniform.
        self.actor = layer_init(nn.Linear(512, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        # The uint8 frames become [0, 1] floats here, on the device; --bf16 runs the layers below in bfloat16.
        with torch.autocast(obs.device.type, torch.bfloat16, enabled=self.bf16):
            hidden = self.network(obs.float() / 255.0)
        return hidden.float()

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def sample_action(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None):
        """Gumbel-max sampling: a = argmax(logits + Gumbel noise) ~ softmax(logits); returns (a, log pi(a), V)."""
        hidden = self.features(obs)
        logits = self.actor(hidden)
        gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()
        action = torch.argmax(logits + gumbel, dim=-1)
        log_prob = torch.log_softmax(logits, dim=-1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return action, log_prob, self.critic(hidden).squeeze(-1)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.argmax(self.actor(self.features(obs)), dim=-1)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        """Log-probability of the given actions, entropy of the policy, and the value."""
        hidden = self.features(obs)
        log_probs = torch.log_softmax(self.actor(hidden), dim=-1)
        action_log_prob = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return action_log_prob, entropy, self.critic(hidden).squeeze(-1)


# ---- Training
def ppo_loss(agent, obs, actions, old_logprobs, advantages, old_values, returns, args) -> tuple:
    """The PPO objective of one minibatch as a loss to minimize,
        L = L_clip - ent_coef * entropy + vf_coef * L_value,
    its three parts, and the probability ratios pi_new / pi_old (for the diagnostics)."""
    new_logprob, entropy, new_value = agent.evaluate_actions(obs, actions)
    logratio = new_logprob - old_logprobs
    ratio = logratio.exp()
    if args.norm_adv:
        advantages = normalize(advantages)
    pg_loss = policy_loss(ratio, advantages, args.clip_coef)
    v_loss = value_loss(new_value, old_values, returns, args.clip_coef, args.clip_vloss)
    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
    return loss, pg_loss, v_loss, entropy_loss, ratio


def train(args: Args) -> dict:
    """Train with PPO; returns the step count, the episodes' returns, steps/s, the run folder and the model file."""
    args, checkpoint = load_settings(args)
    args, rank, world_size, device = start_processes(args)
    run_dir, writer = start_run(args, checkpoint, device)
    seed_everything(args.seed + rank, args.torch_deterministic)  # each rank samples its own actions and minibatches

    envs = make_vector_env(args, check_env(args.env_id), args.num_envs // world_size)
    obs_shape = envs.single_observation_space.shape  # (frame_stack, 84, 84), uint8
    agent = Agent(args.frame_stack, int(envs.single_action_space.n), args.bf16).to(device)
    # fused: one kernel updates all parameters, measurably faster for small networks.
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    global_step, start_iteration = restore(args, checkpoint, agent, optimizer, device)

    # The batch and minibatch sizes are global; each rank holds its share of the envs and of every minibatch. The
    # gradient averaged over ranks is that of the global minibatch, but each rank normalizes its own advantages.
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    schedule_iterations = (args.lr_schedule_steps or args.total_timesteps) // batch_size
    num_envs, local_batch, local_minibatch = (n // world_size for n in (args.num_envs, batch_size, minibatch_size))

    # Rollout storage. Frames stay uint8 on the device: 1 byte per pixel instead of 4. Rewards and dones stay
    # numpy until the rollout ends: one transfer per rollout, not per step. Unlike the other PPO scripts, which
    # compute the log-probs and values of the whole batch in one pass after the rollout, this one keeps those of
    # the acting pass: the convolutions are the cost, and acting has already run them with the same weights.
    obs = torch.zeros((args.num_steps, num_envs, *obs_shape), dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, num_envs), device=device)
    values = torch.zeros((args.num_steps, num_envs), device=device)
    rewards_np = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    dones_np = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    print(f"rollout buffer: frames {obs.numel() * obs.element_size() / 2**20:.1f} MiB (uint8) on {device}")

    # --compile: the same two functions, traced and fused by torch.compile (see maybe_compile).
    minibatch_loss = maybe_compile(ppo_loss, args)
    sample_action = maybe_compile(agent.sample_action, args)

    # Env i of rank r is env r * num_envs + i of the whole run; a resumed run starts fresh games, seeded anew.
    raw_obs, infos = envs.reset(seed=args.seed + rank * num_envs + (start_iteration - 1) * args.num_envs)
    next_obs = torch.as_tensor(raw_obs, device=device)
    lives = infos["lives"]
    episodic_returns = []  # what the env paid per finished episode, raw, in the order they ended
    start_time, start_step, last_checkpoint_step = time.time(), global_step, global_step
    sps, recent_return = 0, float("nan")  # recent_return: the mean of the last 20 episodes, for the progress bar
    bar = progress_bar(args.progress, args.total_timesteps, global_step)
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / schedule_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # ---- Rollout.
        truncated_slots, truncated_obs, finished = [], [], []
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            with torch.no_grad():
                action, logprobs[step], values[step] = sample_action(next_obs)
            actions[step] = action
            raw_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            rewards_np[step] = np.sign(reward) if args.clip_rewards else reward
            # A lost life ends the bootstrap (what follows is not counted) but not the game, whose score adds up.
            life_ended = (infos["lives"] < lives) & args.life_loss_ends_bootstrap
            lives = infos["lives"]
            dones_np[step] = terminations | truncations | life_ended
            next_obs = torch.as_tensor(raw_obs, device=device)

            # Time-limit truncation is not failure: remember the real last observation,
            # to bootstrap r_t + gamma * V(final_obs) below. Terminations get no bootstrap.
            for env_idx in np.flatnonzero(truncations & ~terminations & ~life_ended):
                truncated_slots.append((step, env_idx))
                truncated_obs.append(infos["final_obs"][env_idx])
            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    finished.append((global_step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))

        # ---- Advantages, with every value from the weights that acted.
        with torch.no_grad():
            rewards = torch.as_tensor(rewards_np, device=device).clone()
            dones = torch.as_tensor(dones_np, device=device)
            if truncated_obs:
                final_values = agent.get_value(torch.as_tensor(np.stack(truncated_obs), device=device))
                for (step, env_idx), final_value in zip(truncated_slots, final_values):
                    rewards[step, env_idx] += args.gamma * final_value
            next_value = agent.get_value(next_obs)
            advantages = compute_gae(rewards, values, dones, next_value, args.gamma, args.gae_lambda)
            returns = advantages + values  # the value targets
        # The games of every rank, so that the log covers every env (rank 0 writes them).
        for step, episodic_return, length in gather_lists(finished):
            episodic_returns.append(episodic_return)
            writer.add_scalar("charts/episodic_return", episodic_return, step)
            writer.add_scalar("charts/episodic_length", length, step)

        b_obs, b_actions = obs.reshape(-1, *obs_shape), actions.reshape(-1)
        b_logprobs, b_values = logprobs.reshape(-1), values.reshape(-1)
        b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)

        # ---- Update: several epochs of minibatch steps on the clipped objective.
        ratios = []  # of every minibatch, for the diagnostics
        for epoch in range(args.update_epochs):
            permutation = torch.randperm(local_batch, device=device)
            for start in range(0, local_batch, local_minibatch):
                mb = permutation[start : start + local_minibatch]
                loss, pg_loss, v_loss, entropy_loss, ratio = minibatch_loss(
                    agent, b_obs[mb], b_actions[mb], b_logprobs[mb], b_advantages[mb], b_values[mb], b_returns[mb], args
                )
                ratios.append(ratio.detach())
                optimizer.zero_grad()
                loss.backward()
                average_gradients(agent)  # under torchrun: the mean over ranks
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            # All ranks must take the same decision: they judge the mean KL over ranks.
            if args.target_kl is not None and all_reduce_mean(approx_kl(ratios[-1])) > args.target_kl:
                break

        # ---- Diagnostics, CleanRL's names: the losses and KL of the last minibatch (as CleanRL logs them), the clip
        # fraction and the ratio histogram over the whole update.
        all_ratios = torch.cat(ratios)
        sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
        scalars = {
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            "charts/SPS": sps,
            "charts/advantage_mean": b_advantages.mean().item(),
            "charts/advantage_std": b_advantages.std().item(),
            "losses/value_loss": v_loss.item(),
            "losses/policy_loss": pg_loss.item(),
            "losses/entropy": entropy_loss.item(),
            "losses/old_approx_kl": (-ratios[-1].log()).mean().item(),
            "losses/approx_kl": approx_kl(ratios[-1]).item(),
            "losses/clipfrac": ((all_ratios - 1.0).abs() > args.clip_coef).float().mean().item(),
            "losses/explained_variance": explained_variance(b_values, b_returns),
            "losses/grad_norm": grad_norm.item(),
        }
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step)
        writer.add_histogram("histograms/ratio", all_ratios.cpu(), global_step)
        recent_return = float(np.mean(episodic_returns[-20:])) if episodic_returns else float("nan")
        bar.update(batch_size)
        bar.set_postfix(sps=sps, ret=recent_return, refresh=False)

        # checkpoint.pt: the model and what --resume needs to carry on as if the run had not stopped.
        every = args.checkpoint_every
        if every > 0 and (global_step - last_checkpoint_step >= every or iteration == num_iterations):
            last_checkpoint_step = global_step
            resume = dict(optimizer=optimizer.state_dict(), iteration=iteration)
            save(run_dir, "checkpoint.pt", args, agent, global_step, **resume)

    bar.close()
    envs.close()
    if world_size > 1:
        dist.destroy_process_group()  # the ranks part; rank 0 saves and evaluates alone
    model_path = save(run_dir, "model.pt", args, agent, global_step) if args.save_model else None
    eval_returns = finish_run(args, run_dir, writer, agent, device)  # the policy on games training never saw
    print(f"done: {global_step} steps, {sps} steps/s, last 20 episodes {recent_return:.1f}")
    return {
        "global_step": global_step,
        "episodic_returns": episodic_returns,
        "eval_returns": eval_returns,
        "sps": sps,
        "run_dir": run_dir,
        "model_path": model_path,
        "checkpoint_path": os.path.join(run_dir, "checkpoint.pt") if args.checkpoint_every > 0 else None,
    }


# ---- Evaluation
@torch.no_grad()
def play(agent: Agent, args: Args, episodes: int, seed: int, device, video_dir=None, progress=False) -> list:
    """Scores of whole games (all lives), the first seeded `seed`, the next counting up, recorded to `video_dir` if
    given. The policy samples (its own seeded generator) or with args.eval_greedy takes the argmax. A game without a
    point for args.eval_idle_frames ends there: one that never presses FIRE would otherwise play to the frame limit."""
    env = make_env(check_env(args.env_id), args, video_dir is not None, video_dir)
    generator = torch.Generator(device).manual_seed(seed)
    returns = []
    bar = progress_bar(progress, episodes, desc="evaluating", unit="episode")
    for episode in range(episodes):
        raw_obs, _ = env.reset(seed=seed + episode)
        done, total, idle_frames = False, 0.0, 0
        while not done:
            obs = torch.as_tensor(np.asarray(raw_obs), device=device).unsqueeze(0)
            action = agent.greedy_action(obs) if args.eval_greedy else agent.sample_action(obs, generator)[0]
            raw_obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            idle_frames = 0 if reward != 0 else idle_frames + args.frame_skip
            stuck = args.eval_idle_frames > 0 and idle_frames >= args.eval_idle_frames
            done = terminated or truncated or stuck
        returns.append(total)
        bar.update(1)
        bar.set_postfix(ret=float(np.mean(returns)), refresh=False)
    bar.close()
    env.close()
    return returns


def evaluate(
    model_path: str, env_id=None, episodes=10, seed=None, cuda=False, capture_video=False, progress=False, greedy=None
):
    """Load a model.pt and return its scores over full games, played as `play` says; `greedy` (None: as its run
    was evaluated) picks the argmax policy. The default seed is that of the evaluation that ended its training."""
    agent, saved, _, device = load_agent(model_path, env_id, cuda)
    saved.eval_greedy = saved.eval_greedy if greedy is None else greedy
    video_dir = os.path.join(os.path.dirname(model_path), "videos-eval") if capture_video else None
    seed = first_eval_seed(saved) if seed is None else seed
    return play(agent, saved, episodes, seed, device, video_dir, progress)


# ---- Plumbing: errors, checkpoint files, run folders, progress, W&B. A reader of the algorithm may stop here.
class ConfigError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def validate(args: Args) -> None:
    """Refuse, in one line, the settings that cannot mean anything. Written as `not x > 0`, which NaN fails too."""
    rules = [
        ("must be positive", lambda x: x > 0, "total_timesteps num_envs num_steps num_minibatches update_epochs"),
        ("must be positive", lambda x: x > 0, "clip_coef max_grad_norm target_kl frame_skip frame_stack"),
        ("must be positive", lambda x: x > 0, "max_episode_frames dist_timeout"),
        ("must be 0 or more", lambda x: x >= 0, "learning_rate ent_coef vf_coef eval_episodes checkpoint_every"),
        ("must be 0 or more", lambda x: x >= 0, "noop_max torch_threads env_threads eval_idle_frames"),
        ("must be between 0 and 1", lambda x: 0 <= x <= 1, "gamma gae_lambda repeat_action_probability"),
        ("must be between 0 and 2**32 - 1", lambda x: 0 <= x < 2**32, "seed eval_seed"),  # numpy's seeds: 32 bits
    ]
    for requirement, holds, names in rules:
        for name in names.split():
            value = getattr(args, name)
            if value is not None and not holds(value):  # None: the optional target_kl, eval_seed
                raise ConfigError(f"{flag(name)} {requirement}, got {value}")
    if args.eval_only is not None and not args.eval_episodes > 0:
        raise ConfigError(f"--eval-episodes must be positive with --eval-only, got {args.eval_episodes}")
    if args.lr_schedule_steps != 0 and not args.lr_schedule_steps >= args.total_timesteps:
        raise ConfigError(f"--lr-schedule-steps must be 0 or at least --total-timesteps, got {args.lr_schedule_steps}")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise ConfigError(
            f"the batch (num_envs * num_steps = {batch_size}) does not divide into {args.num_minibatches} minibatches"
        )
    if args.total_timesteps < batch_size:
        raise ConfigError(
            f"--total-timesteps {args.total_timesteps} is less than one batch (num_envs * num_steps = {batch_size})"
        )
    if args.cudagraphs and not (args.compile and args.cuda):
        raise ConfigError("--cudagraphs needs --compile and --cuda: CUDA graphs run on a GPU")
    if args.bf16 and not args.cuda:
        raise ConfigError("--bf16 needs --cuda: bfloat16 convolutions are fast on a GPU only")
    world_size = int(os.environ.get("WORLD_SIZE", 1))  # torchrun's processes
    if args.num_envs % world_size != 0 or (batch_size // args.num_minibatches) % world_size != 0:
        raise ConfigError(f"--num-envs and the minibatch size must divide evenly over the {world_size} processes")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_env(env_id: str) -> str:
    """The ROM name of the game that env_id names ('BreakoutNoFrameskip-v4', 'ALE/Breakout-v5' -> 'breakout')."""
    rom_ids = ale_py.roms.get_all_rom_ids()
    name = re.sub(r"(-ram)?(NoFrameskip|Deterministic)?(-v\d+)?$", "", env_id.split("/")[-1])
    game = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()  # MsPacman -> ms_pacman
    if game in rom_ids:
        return game
    gym.register_envs(ale_py)
    if env_id in gym.registry:
        raise ConfigError(f"{env_id} is not an Atari game; use ppo_discrete.py or ppo_continuous.py")
    close = difflib.get_close_matches(game, rom_ids, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "ale_py's games: ale_py.roms.get_all_rom_ids()"
    raise ConfigError(f"unknown environment id {env_id!r}: no Atari game {game!r}; {hint}")


def select_device(cuda: bool, torch_threads: int, local_rank: int = 0) -> torch.device:
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda was given but torch finds no CUDA device; run without --cuda")
    gpus = torch.cuda.device_count() if cuda else 0
    if cuda and local_rank >= gpus:  # under torchrun, each process takes a GPU of its own: NCCL refuses two on one
        raise ConfigError(
            f"process {local_rank} on this machine has no GPU of its own: torch sees {gpus}; lower --nproc-per-node"
        )
    if not cuda:
        torch.set_num_threads(torch_threads or cores_per_process())
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    """All randomness of the script comes from torch; the envs have their own seeds."""
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
        checkpoint = load_file(args.resume, ("model", "optimizer", "args", "global_step", "iteration"))
        saved = Args(**checkpoint["args"])
        saved.resume, saved.cuda, saved.progress, saved.track = (args.resume, args.cuda, args.progress, args.track)
        args = saved
    validate(args)
    check_env(args.env_id)
    return args, checkpoint


def restore(args: Args, checkpoint: Optional[dict], agent: Agent, optimizer, device) -> tuple:
    """Load a checkpoint's weights, optimizer and RNG state; returns (global_step, first iteration): (0, 1) if new."""
    if dist.is_initialized():  # under torchrun, every rank takes rank 0's weights, so that all start equal
        for parameter in agent.parameters():
            dist.broadcast(parameter.data, src=0)
    if checkpoint is None:
        return 0, 1
    agent.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["torch_rng_state"])
    if device.type == "cuda" and "cuda_rng_state" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
    if dist.is_initialized() and dist.get_rank() > 0:  # rank 0 carries on the saved random stream, the others new ones
        torch.manual_seed(args.seed + dist.get_rank() + checkpoint["global_step"])
    print(f"resumed from {args.resume} at step {checkpoint['global_step']}")
    return checkpoint["global_step"], checkpoint["iteration"] + 1


def save(run_dir: str, filename: str, args: Args, agent: Agent, global_step: int, **resume_state) -> str:
    """model.pt: the weights, the args and the step, all that `evaluate` needs.
    checkpoint.pt: the same and what `--resume` needs: `resume_state`, the run folder to go on in, the random state."""
    path = os.path.join(run_dir, filename)
    state = {"model": agent.state_dict(), "args": asdict(args), "global_step": global_step, **resume_state}
    if resume_state:
        state.update(run_dir=run_dir, torch_rng_state=torch.get_rng_state())
        if next(agent.parameters()).is_cuda:
            state["cuda_rng_state"] = torch.cuda.get_rng_state()
    try:
        save_atomic(state, path)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def load_agent(model_path: str, env_id: Optional[str] = None, cuda: bool = False) -> tuple:
    """Rebuild a model.pt's Agent, weights included, for env_id (default: the one it trained on)."""
    data = load_file(model_path, ("model", "args"))
    saved = Args(**data["args"])
    env_id = saved.env_id = env_id or saved.env_id
    device = select_device(cuda, saved.torch_threads)
    env = make_env(check_env(env_id), saved, False, "")
    agent = Agent(saved.frame_stack, int(env.action_space.n)).to(device)
    env.close()
    try:
        agent.load_state_dict(data["model"])
    except RuntimeError as e:
        raise ConfigError(f"{model_path} does not fit {env_id}: {str(e).splitlines()[0]}") from None
    agent.eval()
    return agent, saved, env_id, device


def start_run(args: Args, checkpoint: Optional[dict], device: torch.device) -> tuple:
    """The run folder (a resumed run keeps its own) and its TensorBoard writer, mirrored to W&B with --track."""
    if checkpoint is not None and os.path.isdir(checkpoint.get("run_dir", "")):
        run_dir = checkpoint["run_dir"]
    else:
        env_name = args.env_id.replace("/", "-").replace(":", "-")
        script = os.path.basename(__file__)[:-3]
        run_dir = os.path.join(args.runs_dir, f"{env_name}__{script}__{args.seed}__{int(time.time())}")
    run_dir = gather_lists([run_dir])[0]  # rank 0's, named at rank 0's clock
    if dist.is_initialized() and dist.get_rank() != 0:  # torchrun's other ranks write nothing
        return run_dir, NullWriter()
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder under {args.runs_dir}: {e.strerror or e}") from None
    processes = f", {dist.get_world_size()} processes" if dist.is_initialized() else ""
    print(f"device: {device}, run: {run_dir}{processes}")
    if args.track:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--track needs Weights & Biases: pip install wandb") from None
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=asdict(args),
            name=os.path.basename(run_dir),
            save_code=True,
        )
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    return run_dir, writer


def finish_run(args: Args, run_dir: str, writer: SummaryWriter, agent: Agent, device: torch.device) -> list:
    """Play --eval-episodes games as `play` does (logged as eval/episodic_return), then close the logs and W&B."""
    eval_returns = []
    if args.eval_episodes > 0:
        video_dir = os.path.join(run_dir, "videos-eval") if args.capture_video else None
        eval_returns = play(agent, args, args.eval_episodes, first_eval_seed(args), device, video_dir, args.progress)
        for i, eval_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", eval_return, i)
        print_eval(eval_returns, "greedy games" if args.eval_greedy else "games")
    writer.close()
    if args.track:
        import wandb

        wandb.finish()
    return eval_returns


def print_eval(returns: list, what: str) -> None:
    print(f"eval: mean return {np.mean(returns):.1f} +- {np.std(returns):.1f} over {len(returns)} {what}")


def progress_bar(enabled: bool, total: int, initial: int = 0, desc: str = "training", unit: str = "step"):
    """A tqdm bar, silent unless stdout is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not (enabled and sys.stdout.isatty()))


# torchrun: each process (rank) runs its share of the envs, and gradients are averaged over ranks at every
# minibatch, so that all ranks keep identical parameters. Under plain `python`, none of this communicates.
def start_processes(args: Args) -> tuple:
    """Join torchrun's other processes and take this one's device; returns (args, rank, world_size, device)."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and not dist.is_initialized():
        # NCCL between GPUs, gloo between CPU processes; the timeout turns a dead rank into an error, not a hang.
        dist.init_process_group("nccl" if args.cuda else "gloo", timeout=timedelta(seconds=args.dist_timeout))
    if rank != 0:  # rank 0 alone prints, writes files and evaluates
        sys.stdout = open(os.devnull, "w")
        args = replace(args, save_model=False, eval_episodes=0, checkpoint_every=0, track=False)
    return args, rank, world_size, select_device(args.cuda, args.torch_threads, int(os.environ.get("LOCAL_RANK", 0)))


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's mean over the ranks, in place; itself when there is one process."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient by its mean over the ranks (each rank's is of its own minibatch)."""
    for parameter in model.parameters():
        all_reduce_mean(parameter.grad)


def gather_lists(items: list) -> list:
    """Every rank's list of plain Python items, concatenated in rank order."""
    if not dist.is_initialized():
        return items
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for rank_items in gathered for item in rank_items]


class NullWriter:  # the TensorBoard writer of the ranks other than 0: every call does nothing
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def maybe_compile(fn, args: Args):
    """fn itself, or with --compile fn through torch.compile: one traced graph of fused kernels. --cudagraphs replays a
    call's kernels as one CUDA graph ("reduce-overhead"): one launch, not hundreds; the policy's noise still varies."""
    if not args.compile:
        return fn
    if not args.cudagraphs:
        return torch.compile(fn)
    graphed = torch.compile(fn, mode="reduce-overhead")

    def copied(*inputs):
        # A replay writes its outputs where the next replay will: hand back copies, which the training loop may keep.
        out = graphed(*inputs)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()

    return copied


def main() -> None:
    """The command line: train, or with --eval-only evaluate a saved model; a ConfigError ends in one line."""
    args = tyro.cli(Args)
    try:
        if args.eval_only is None:
            train(args)
        else:
            validate(args)
            episodes, seed, video, greedy = args.eval_episodes, args.eval_seed, args.capture_video, args.eval_greedy
            returns = evaluate(args.eval_only, None, episodes, seed, args.cuda, video, args.progress, greedy)
            print_eval(returns, f"episodes: {returns}")
    except (ConfigError, OSError) as e:  # OSError: a file of the run (a video) that cannot be written
        print(f"{os.path.basename(__file__)}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
