"""Asynchronous Advantage Actor-Critic (A3C) with real parallel workers, in one file.

A3C (Mnih et al. 2016, https://arxiv.org/abs/1602.01783) runs several actor-learners at once.
Each worker is a separate process with its own environments and its own copy of the network.
It copies the shared weights, plays a short rollout of n steps, computes the gradient of the
advantage actor-critic loss on it, and applies that gradient to one model held in shared memory
through one shared optimizer, without any lock (Hogwild, Recht et al. 2011). The workers never
wait for one another; the diversity of their experience replaces a replay buffer.

The main process does no learning: it starts the workers, logs the episodes they report through a queue, writes
checkpoints, and stops every worker when the budget is spent, when one of them fails, or on Ctrl-C. Workers run on
CPU by design: they share one model in CPU memory.

Works with any gymnasium environment whose action space is Discrete (a categorical policy: CartPole-v1 by default,
Acrobot-v1, LunarLander-v3) or a 1-D Box (a Gaussian policy: Pendulum-v1), or your own as `my_module:MyEnv-v0`.

Usage:
    python a3c.py --seed 1                             # the README's CartPole-v1 figure: 500k steps, a worker per core
    python a3c.py --num-workers 4 --num-envs 1 --num-steps 5 --optimizer rmsprop   # closer to the paper
    python a3c.py --checkpoint-every 50000             # then, after a kill: --resume runs/<run>/checkpoint.pt
    python a3c.py --eval-only runs/<run>/model.pt      # replays the games of the evaluation that ended training

Read from the top: the arguments, the environment, the math, the network, the worker (one actor-learner) and the
training that starts the workers, evaluation. The last section, after "Plumbing", is what running a script needs and
learning the algorithm does not: errors, checkpoint files, run folders, progress, W&B, the workers' supervision.
"""

import logging
import os
import queue
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    # Algorithm
    env_id: str = "CartPole-v1"
    """gymnasium id, Discrete or 1-D Box actions (`module:EnvName-v0` imports `module` first)"""
    total_timesteps: int = 500_000
    """total environment steps to train for, summed over all workers and their environments"""
    num_workers: int = os.cpu_count() or 1
    """worker processes, each with its own envs and network copy (default: the number of cores)"""
    num_envs: int = 4
    """environments per worker (gymnasium SyncVectorEnv); the paper used one"""
    num_steps: int = 8
    """steps per environment in each worker's rollout (the paper's t_max); one update per rollout"""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """the shared optimizer; its statistics live in shared memory and all workers update them"""
    learning_rate: float = 1e-3
    """learning rate of the shared optimizer"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """lambda of generalized advantage estimation (1: the paper's n-step returns from V(s_{t+n}))"""
    norm_adv: bool = False
    """normalize advantages within each rollout"""
    ent_coef: float = 0.001
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient norm clipping threshold, applied to each worker's gradient"""
    reward_scale: float = 1.0
    """multiply rewards by this before learning; logged returns stay raw"""
    hidden_size: int = 64
    """width of the two hidden layers of the actor and of the critic"""
    init_log_std: float = 0.0
    """initial log standard deviation of the Gaussian policy of Box action spaces (0: std 1)"""

    # Run
    seed: int = 1
    """seed of the shared model's initialization; each worker derives its own seed from it"""
    cuda: bool = False
    """refused for training, by design: A3C's workers are CPU processes that share one model"""
    torch_threads: int = 1
    """torch CPU threads of each process (one: the workers themselves are the parallelism)"""
    eval_episodes: int = 10
    """episodes of the deterministic (greedy) policy played after training (0: skip)"""
    eval_seed: Optional[int] = None
    """seed of the first evaluation episode, the next count up (default: seed + 10000)"""
    save_model: bool = True
    """write `model.pt` (weights, args) at the end of training"""
    checkpoint_every: int = 0
    """write `checkpoint.pt` every this many environment steps (0: never); `--resume` reads it"""
    log_every: int = 10
    """each worker sends its losses to the main process every this many updates"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to carry on from: its args, weights, optimizer and step"""
    eval_only: Optional[str] = None
    """path of a `model.pt`: evaluate it for `--eval-episodes` episodes and exit, no training"""
    capture_video: bool = False
    """record videos of the first environment of worker 0 to `{run_dir}/videos`"""
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


def make_vector_env(args: Args, video_dir: str, capture_video: bool) -> gym.vector.VectorEnv:
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, capture_video, video_dir) for i in range(args.num_envs)],
        # SAME_STEP: a finished env resets inside the step that ended it, so every returned
        # observation is one the agent acts on, and the real last one is in infos["final_obs"].
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        copy=False,
    )
    # Records the raw environment reward, whatever the agent is trained on.
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def to_env_action(action: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """The action the env receives: Discrete actions as they are, Gaussian samples clipped to
    the Box bounds. Only the env's copy is clipped: the stored sample keeps its exact log-prob."""
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(action, action_space.low, action_space.high)
    return action


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


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The actor's loss, -mean(log pi(a_t | s_t) * A_t): its gradient is the policy gradient
    estimate of the paper (the advantages are constants here, computed without gradient)."""
    return -(log_probs * advantages).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """The critic's loss, 0.5 * mean((V(s_t) - R_t)^2)."""
    return 0.5 * ((values - returns) ** 2).mean()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-8): advantages of one rollout on a common scale."""
    return (x - x.mean()) / (x.std() + 1e-8)


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets): 1 is perfect, 0 no better than a constant."""
    var_targets = targets.var()
    if var_targets == 0:
        return float("nan")
    return (1.0 - (targets - predictions).var() / var_targets).item()


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(std^2)) summed over dimensions: sum(-((x - mean) / std)^2 / 2 - log std - log(2 pi) / 2)."""
    return (-0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)


# ---- The network
def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights and zero bias, the initialization of the original PPO code."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs. The actor's head follows the action space: the logits of a categorical policy
    (Discrete), or the mean of a diagonal Gaussian whose log std is a learned vector, the same in every state (Box)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, args: Args):
        super().__init__()
        hidden_size = args.hidden_size
        self.continuous = isinstance(action_space, gym.spaces.Box)
        n_outputs = action_space.shape[0] if self.continuous else int(action_space.n)
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
            # A small last layer starts the policy near uniform (Discrete) or near mean 0 (Box).
            layer_init(nn.Linear(hidden_size, n_outputs), std=0.01),
        )
        if self.continuous:
            self.actor_logstd = nn.Parameter(torch.full((n_outputs,), float(args.init_log_std)))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Discrete: a ~ softmax(logits) by the Gumbel-max trick, argmax(logits + Gumbel noise), the distribution of
        Categorical(logits).sample() without building an object at every step. Box: a ~ N(mean, std^2), unclipped."""
        out = self.actor(obs)
        if self.continuous:
            return out + self.actor_logstd.exp() * torch.randn_like(out)
        gumbel = -torch.empty_like(out).exponential_().log()
        return torch.argmax(out + gumbel, dim=-1)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(obs)
        return out if self.continuous else torch.argmax(out, dim=-1)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        """Log-probability of the given actions, entropy of the policy, and the value."""
        out = self.actor(obs)
        if self.continuous:
            log_std = self.actor_logstd.expand_as(out)
            log_prob = gaussian_log_prob(actions, out, log_std)
            entropy = (log_std + 0.5 * np.log(2 * np.pi * np.e)).sum(-1)
        else:
            log_probs = torch.log_softmax(out, dim=-1)
            log_prob = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
        return log_prob, entropy, self.get_value(obs)


# ---- Training
class SharedRMSProp(torch.optim.Optimizer):
    """The paper's RMSProp (section 4), epsilon inside the square root (torch's RMSprop adds it outside):
    g = alpha * g + (1 - alpha) * grad^2,  theta = theta - lr * grad / sqrt(g + eps), with g shared by all workers."""

    def __init__(self, params, lr: float, alpha: float, eps: float):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]  # in shared memory: make_shared_optimizer creates it
                state["step"] += 1
                state["square_avg"].mul_(group["alpha"]).addcmul_(param.grad, param.grad, value=1 - group["alpha"])
                param.addcdiv_(param.grad, (state["square_avg"] + group["eps"]).sqrt(), value=-group["lr"])


def worker(worker_id, args, seeds, env_spec, run_dir, shared_agent, optimizer, counter, start, messages) -> None:
    """One A3C actor-learner (the paper's Algorithm S3) in its own process, with n-step rollouts on num_envs envs: copy
    the shared weights, play num_steps steps, compute the loss's gradient on the copy, hand it to the shared model and
    step the shared optimizer, until the shared step counter reaches the budget. It reports to the main process."""
    torch.set_num_threads(args.torch_threads)  # one by default: the workers themselves are the parallelism
    seed = seeds[worker_id]  # its torch and numpy streams, and its envs'
    seed_everything(seed)
    main_pid = os.getppid()  # a new parent means the main process was killed
    # An env registered by the main process at run time (rather than by a `module:` prefix of its id) is unknown to
    # this fresh interpreter: register the main process's spec here too.
    gym.registry.setdefault(env_spec.id, env_spec)

    envs = make_vector_env(args, os.path.join(run_dir, "videos"), args.capture_video and worker_id == 0)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    action_space = envs.single_action_space
    batch_size = args.num_envs * args.num_steps
    local_agent = Agent(obs_dim, action_space, args)  # theta': this worker's copy of the weights
    params = list(zip(local_agent.parameters(), shared_agent.parameters()))  # (theta', theta)
    # The shared model's .grad tensors belong to this process alone (a tensor's gradient is not shared memory); each
    # update copies the local gradients into them. Copied, not aliased: backward makes new ones every time.
    for param in shared_agent.parameters():
        param.grad = torch.zeros_like(param)

    # Rollout storage, as in ppo_discrete.py: rewards and dones stay numpy until the rollout ends.
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim))
    action_dtype = torch.float32 if local_agent.continuous else torch.long
    actions = torch.zeros((args.num_steps, args.num_envs, *action_space.shape), dtype=action_dtype)
    rewards_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    def to_obs_tensor(raw) -> torch.Tensor:
        return torch.as_tensor(raw, dtype=torch.float32).reshape(-1, obs_dim)

    next_obs = to_obs_tensor(envs.reset(seed=seed)[0])
    # Start together, once every worker is ready: the clock measures training, not start-up.
    messages.put(("ready", worker_id, None))
    while not start.wait(timeout=1.0) and os.getppid() == main_pid:
        pass
    updates = 0
    while os.getppid() == main_pid:
        # Claim the next rollout's steps from the shared counter; stop when the budget is spent.
        with counter.get_lock():
            if counter.value + batch_size > args.total_timesteps:
                break
            first_step = counter.value
            counter.value += batch_size

        # ---- theta' <- theta: the rollout and its gradient use one fixed copy of the weights.
        with torch.no_grad():
            for local_param, shared_param in params:
                local_param.copy_(shared_param)

        # ---- Rollout of num_steps steps in each of this worker's envs.
        truncated_slots, truncated_obs = [], []
        episodes = []  # (step, return, length) of the episodes that end in this rollout, sent to the main process
        with torch.no_grad():
            for step in range(args.num_steps):
                obs[step] = next_obs
                action = local_agent.sample_action(next_obs)
                actions[step] = action
                env_action = to_env_action(action.numpy(), action_space)
                raw_obs, reward, terminations, truncations, infos = envs.step(env_action)
                rewards_np[step] = reward
                dones_np[step] = np.logical_or(terminations, truncations)
                next_obs = to_obs_tensor(raw_obs)

                # Time-limit truncation is not failure: remember the real last observation,
                # to bootstrap r_t + gamma * V(final_obs) below. Terminations get no bootstrap.
                for env_idx in np.flatnonzero(truncations & ~terminations):
                    truncated_slots.append((step, env_idx))
                    truncated_obs.append(infos["final_obs"][env_idx])
                if "episode" in infos:
                    episode_step = first_step + (step + 1) * args.num_envs
                    for i in np.flatnonzero(infos["_episode"]):
                        episodes.append((episode_step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))

            # ---- The bootstrap values: V(final_obs) of truncated episodes and V(s_{t+n}).
            rewards = torch.as_tensor(rewards_np * args.reward_scale)
            dones = torch.as_tensor(dones_np)
            if truncated_obs:
                final_values = local_agent.get_value(to_obs_tensor(np.stack(truncated_obs)))
                for (step, env_idx), final_value in zip(truncated_slots, final_values):
                    rewards[step, env_idx] += args.gamma * final_value
            next_value = local_agent.get_value(next_obs)

        # ---- The loss and its gradient, on the local copy.
        b_obs = obs.reshape(-1, obs_dim)
        b_actions = actions.reshape(-1, *action_space.shape)
        log_probs, entropy, b_values = local_agent.evaluate_actions(b_obs, b_actions)
        values = b_values.reshape(args.num_steps, args.num_envs)
        with torch.no_grad():
            # With lambda = 1 (the default), returns are the paper's n-step returns
            # R_t = r_t + gamma r_{t+1} + ... + gamma^(n-t) V(s_{t+n}), cut at episode ends.
            advantages = compute_gae(rewards, values, dones, next_value, args.gamma, args.gae_lambda)
            returns = advantages + values
            b_advantages = advantages.reshape(-1)
            if args.norm_adv:
                b_advantages = normalize(b_advantages)
        pg_loss = policy_gradient_loss(log_probs, b_advantages)
        v_loss = value_loss(b_values, returns.reshape(-1))
        entropy_loss = entropy.mean()
        loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss

        local_agent.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(local_agent.parameters(), args.max_grad_norm)

        # ---- Hogwild: copy the gradient into the shared model and step the shared optimizer,
        # without a lock; other workers may be stepping at the same moment. The gradient was computed on the weights
        # this worker copied before its rollout, which other workers may have changed since: it is stale by the updates
        # that happened in between. Hogwild tolerates both (Recht et al. 2011): that is the method, not a race to fix.
        for local_param, shared_param in params:
            shared_param.grad.copy_(local_param.grad)
        if args.anneal_lr:
            # Each worker's copy of the optimizer has its own learning rate (the statistics are
            # shared), set from the first step of its rollout.
            frac = 1.0 - first_step / args.total_timesteps
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        optimizer.step()

        updates += 1
        scalars = None  # the diagnostics, every log_every updates
        if updates % args.log_every == 0:
            scalars = {
                "losses/value_loss": v_loss.item(),
                "losses/policy_loss": pg_loss.item(),
                "losses/entropy": entropy_loss.item(),
                "losses/grad_norm": grad_norm.item(),
                "losses/explained_variance": explained_variance(b_values.detach(), returns.reshape(-1)),
                "charts/advantage_mean": advantages.mean().item(),
                "charts/advantage_std": advantages.std().item(),
            }
        # A new `episodes` list for each rollout: the queue pickles this one later, in its own thread.
        messages.put(("rollout", worker_id, (first_step + batch_size, episodes, scalars)))
    envs.close()
    if os.getppid() != main_pid:
        messages.cancel_join_thread()  # the main process was killed: do not wait at exit to deliver what nobody reads


def train(args: Args) -> dict:
    """Train with A3C; returns the step count, the episodes' returns, steps/s, the run folder, the model file and
    each worker's number of updates (the plumbing it calls is at the end of the file)."""
    args, checkpoint = load_settings(args)
    device = select_device(args.cuda, args.torch_threads)
    run_dir, writer = start_run(args, checkpoint, device)
    # The seed fixes the shared model's initialization; each worker seeds torch, numpy and its envs with its own seed,
    # derived from the run's seed and the step it starts at (a resumed run plays fresh episodes). The workers'
    # interleaving is up to the OS, so two runs with one seed start the same and then differ.
    seed_everything(args.seed)

    env = make_env(args.env_id, 0, False, "")()
    obs_dim = int(np.prod(env.observation_space.shape))
    action_space, env_spec = env.action_space, env.unwrapped.spec
    env.close()

    # The shared model theta: its weights live in shared memory, read and written by every worker.
    agent = Agent(obs_dim, action_space, args)
    global_step, optimizer_state = restore(args, checkpoint, agent)
    agent.share_memory()
    # The shared optimizer: its statistics too live in shared memory, where every worker's step updates them.
    optimizer = make_shared_optimizer(agent, args, optimizer_state)

    # The workers, processes that each run `worker`, share the model, the optimizer and the step counter T they
    # claim rollouts from. The main process does no learning: until every worker is done, it logs what they report
    # and writes checkpoints, and it stops them all when one fails or on Ctrl-C (supervise, in the plumbing).
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", global_step)  # T, with its own lock
    start, messages = ctx.Event(), ctx.Queue()  # the workers' reports, to the main process: the only one that logs
    seeds = worker_seeds(args.seed, global_step, args.num_workers)
    log = supervise(writer, args, seeds, env_spec, run_dir, agent, optimizer, counter, start, messages)

    global_step = log["global_step"]
    checkpoint_path = model_path = None
    if args.checkpoint_every > 0:
        checkpoint_path = save(run_dir, "checkpoint.pt", args, agent, global_step, optimizer=optimizer.state_dict())
    if args.save_model:
        model_path = save(run_dir, "model.pt", args, agent, global_step)
    eval_returns = []
    if args.eval_episodes > 0:
        video_dir = os.path.join(run_dir, "videos-eval") if args.capture_video else None
        eval_returns = play(
            agent, args.env_id, args.eval_episodes, first_eval_seed(args), device, video_dir, args.progress
        )
        for i, eval_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", eval_return, i)
        print_eval(eval_returns, "greedy episodes")
    print(f"done: {global_step} steps, {log['sps']} steps/s, last 20 episodes {log['recent_return']:.1f}")
    writer.close()
    if args.track:
        import wandb

        wandb.finish()
    return dict(log, eval_returns=eval_returns, run_dir=run_dir, model_path=model_path, checkpoint_path=checkpoint_path)


# ---- Evaluation
@torch.no_grad()
def play(agent: Agent, env_id: str, episodes: int, seed: int, device, video_dir=None, progress=False) -> list:
    """The greedy policy's returns over whole episodes, the first seeded `seed`, the next counting up; with a
    `video_dir`, the episodes are recorded there."""
    env = make_env(env_id, 0, video_dir is not None, video_dir)()
    returns = []
    bar = progress_bar(progress, episodes, desc="evaluating", unit="episode")
    for episode in range(episodes):
        raw_obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs = torch.as_tensor(raw_obs, dtype=torch.float32, device=device).reshape(1, -1)
            action = agent.greedy_action(obs).cpu().numpy()[0]
            raw_obs, reward, terminated, truncated, _ = env.step(to_env_action(action, env.action_space))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        bar.update(1)
        bar.set_postfix(ret=float(np.mean(returns)), refresh=False)
    bar.close()
    env.close()
    return returns


def evaluate(model_path: str, env_id=None, episodes=10, seed=None, cuda=False, capture_video=False, progress=False):
    """Load a model.pt and return the episodic returns of its greedy policy on env_id (default: the one it was
    trained on). The default seed is that of the evaluation at the end of its training: the same games."""
    agent, saved, env_id, device = load_agent(model_path, env_id, cuda)
    video_dir = os.path.join(os.path.dirname(model_path), "videos-eval") if capture_video else None
    seed = first_eval_seed(saved) if seed is None else seed
    return play(agent, env_id, episodes, seed, device, video_dir, progress)


# ---- Plumbing: errors, checkpoint files, run folders, progress, W&B. A reader of the algorithm may stop here.
class ConfigError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def validate(args: Args) -> None:
    """Refuse, in one line, the settings that cannot mean anything. Written as `not x > 0`, which NaN fails too."""
    if args.cuda and args.eval_only is None:
        raise ConfigError(
            "--cuda is not supported: A3C's workers are CPU processes that share one model in CPU memory (Hogwild), "
            "by design; run without --cuda (for a GPU, use the ppo_*.py scripts)"
        )
    rules = [
        ("must be positive", lambda x: x > 0, "total_timesteps num_workers num_envs num_steps log_every"),
        ("must be positive", lambda x: x > 0, "max_grad_norm reward_scale hidden_size torch_threads"),
        ("must be 0 or more", lambda x: x >= 0, "learning_rate ent_coef vf_coef eval_episodes checkpoint_every"),
        ("must be between 0 and 1", lambda x: 0 <= x <= 1, "gamma gae_lambda"),
        ("must be between 0 and 2**32 - 1", lambda x: 0 <= x < 2**32, "seed eval_seed"),  # numpy's seeds: 32 bits
    ]
    for requirement, holds, names in rules:
        for name in names.split():
            value = getattr(args, name)
            if value is not None and not holds(value):  # None: the optional eval_seed
                raise ConfigError(f"{flag(name)} {requirement}, got {value}")
    if args.eval_only is not None and not args.eval_episodes > 0:
        raise ConfigError(f"--eval-episodes must be positive with --eval-only, got {args.eval_episodes}")
    if args.total_timesteps < args.num_envs * args.num_steps:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is less than one rollout (num_envs * num_steps)")


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
    discrete = isinstance(action_space, gym.spaces.Discrete) and action_space.start == 0
    box = isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
    if not (discrete or box):
        raise ConfigError(f"{env_id} has action space {action_space}; this script needs Discrete(n) or a 1-D Box")
    try:  # Text, Graph, Sequence have no fixed size, alone or inside a Dict or Tuple
        gym.spaces.flatdim(space)
    except (NotImplementedError, ValueError, TypeError):
        raise ConfigError(
            f"{env_id}: the observation space {space} cannot be flattened into a vector; wrap the env in a gymnasium "
            "ObservationWrapper that encodes it as a Box, or drops the part"
        ) from None


def select_device(cuda: bool, torch_threads: int) -> torch.device:
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda was given but torch finds no CUDA device; run without --cuda")
    if not cuda:
        torch.set_num_threads(torch_threads)
    return torch.device("cuda" if cuda else "cpu")


def seed_everything(seed: int) -> None:
    """All randomness of a process comes from torch; the envs have their own seeds."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def worker_seeds(seed: int, start_step: int, num_workers: int) -> list:
    """numpy's SeedSequence: no two workers, and no worker of another seed or start step, share a random stream."""
    return [int(s) for s in np.random.SeedSequence([seed, start_step]).generate_state(num_workers)]


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
    """The settings of the run, checked: a resumed run takes them from its checkpoint, and only how it is run
    (device, progress, W&B, the number of workers) may change. Returns (args, checkpoint or None)."""
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_file(args.resume, ("model", "optimizer", "args", "global_step"))
        saved = Args(**checkpoint["args"])
        saved.resume, saved.cuda, saved.progress, saved.track = (args.resume, args.cuda, args.progress, args.track)
        saved.num_workers = args.num_workers
        args = saved
    validate(args)
    check_env(args.env_id)
    return args, checkpoint


def restore(args: Args, checkpoint: Optional[dict], agent: Agent) -> tuple:
    """Load a checkpoint's weights; returns (global_step, optimizer state for make_shared_optimizer) or (0, None)."""
    if checkpoint is None:
        return 0, None
    agent.load_state_dict(checkpoint["model"])
    print(f"resumed from {args.resume} at step {checkpoint['global_step']}")
    return checkpoint["global_step"], checkpoint["optimizer"]


def save(run_dir: str, filename: str, args: Args, agent: Agent, global_step: int, **resume_state) -> str:
    """model.pt: the weights, the args and the step, all that `evaluate` needs. checkpoint.pt: the same and
    what `--resume` needs (`resume_state`, and the run folder to go on in)."""
    path = os.path.join(run_dir, filename)
    state = {"model": agent.state_dict(), "args": asdict(args), "global_step": global_step, **resume_state}
    if resume_state:
        state["run_dir"] = run_dir
    try:
        save_atomic(state, path)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def load_agent(model_path: str, env_id: Optional[str] = None, cuda: bool = False) -> tuple:
    """Rebuild the Agent of a model.pt for env_id (default: its own). Returns (agent, saved Args, env_id, device)."""
    data = load_file(model_path, ("model", "args"))
    saved = Args(**data["args"])
    env_id = env_id or saved.env_id
    check_env(env_id)
    device = select_device(cuda, saved.torch_threads)
    env = make_env(env_id, 0, False, "")()
    agent = Agent(int(np.prod(env.observation_space.shape)), env.action_space, saved).to(device)
    env.close()
    try:
        agent.load_state_dict(data["model"])
    except RuntimeError as e:
        raise ConfigError(f"{model_path} does not fit {env_id}: {str(e).splitlines()[0]}") from None
    agent.eval()
    return agent, saved, env_id, device


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


def print_eval(returns: list, what: str) -> None:
    print(f"eval: mean return {np.mean(returns):.1f} +- {np.std(returns):.1f} over {len(returns)} {what}")


def progress_bar(enabled: bool, total: int, initial: int = 0, desc: str = "training", unit: str = "step"):
    """A tqdm bar, silent unless stdout is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not (enabled and sys.stdout.isatty()))


def make_shared_optimizer(agent: Agent, args: Args, state: Optional[dict] = None):
    """Adam or RMSProp over the shared model, its statistics created now in shared memory, so that each worker's copy
    holds these same tensors (torch would create them at the first step, in each process); `state` resumes."""
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
        statistics = ("exp_avg", "exp_avg_sq")
    else:
        # alpha 0.99 and a large epsilon, as in the paper's shared RMSProp.
        optimizer = SharedRMSProp(agent.parameters(), lr=args.learning_rate, alpha=0.99, eps=0.1)
        statistics = ("square_avg",)
    if state is not None:
        optimizer.load_state_dict(state)
    for param in agent.parameters():
        param_state = optimizer.state[param]
        if not param_state:  # a new run
            param_state.update(step=torch.zeros(()), **{name: torch.zeros_like(param) for name in statistics})
        for tensor in param_state.values():
            tensor.share_memory_()
    return optimizer


def supervise(writer: SummaryWriter, args: Args, *worker_args) -> dict:
    """The main process, as train() says; the workers start together once all are ready (the clock measures training,
    not start-up). torch's spawn, not fork: each worker is a fresh interpreter that imports this file (found through
    the sys.path it inherits) and receives the shared tensors; fork would copy our threads and locks."""
    _, _, run_dir, agent, optimizer, counter, start, messages = worker_args
    if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
        sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # main() says "all workers stopped"
    main_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers are born with Ctrl-C ignored
    workers = mp.spawn(worker, (args, *worker_args), nprocs=args.num_workers, join=False, daemon=True)
    # Ctrl-C only raises a flag that the loop checks twice a second: an exception raised at an arbitrary point
    # could leave a lock of the queue or of the TensorBoard writer held, and the shutdown waiting on it forever.
    interrupted = []
    signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))

    episodic_returns, updates_per_worker = [], [0] * args.num_workers
    start_step = checkpoint_step = global_step = counter.value
    ready, start_time, last_log_time, recent_return = 0, None, 0.0, float("nan")
    bar = progress_bar(args.progress, args.total_timesteps, initial=global_step)
    try:
        # Until every worker has ended and its reports are read; join() raises when one failed, having ended the others.
        while not (workers.join(timeout=0) and messages.empty()):
            if interrupted:
                raise KeyboardInterrupt
            try:
                kind, worker_id, payload = messages.get(timeout=0.5)
            except queue.Empty:
                kind = None
            if kind == "ready":
                ready += 1
                if ready == args.num_workers:
                    start_time = time.time()
                    start.set()
                    print(f"training with {args.num_workers} worker process{'es' * (args.num_workers > 1)}", flush=True)
            elif kind == "rollout":
                step, episodes, scalars = payload
                updates_per_worker[worker_id] += 1
                for episode_step, episodic_return, episodic_length in episodes:
                    episodic_returns.append(episodic_return)
                    writer.add_scalar("charts/episodic_return", episodic_return, episode_step)
                    writer.add_scalar("charts/episodic_length", episodic_length, episode_step)
                for tag, value in (scalars or {}).items():
                    writer.add_scalar(tag, value, step)
                recent_return = float(np.mean(episodic_returns[-20:])) if episodic_returns else float("nan")

            global_step = counter.value
            if start_time is not None and time.time() - last_log_time >= 1.0:  # once a second
                last_log_time = time.time()
                sps = int((global_step - start_step) / max(last_log_time - start_time, 1e-9))
                frac = 1.0 - global_step / args.total_timesteps if args.anneal_lr else 1.0
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("charts/learning_rate", frac * args.learning_rate, global_step)
                bar.update(global_step - bar.n)
                bar.set_postfix(sps=sps, ret=recent_return, refresh=False)
            if args.checkpoint_every > 0 and global_step - checkpoint_step >= args.checkpoint_every:
                checkpoint_step = global_step
                # With the step count as the weights are read: workers may have moved on.
                save(run_dir, "checkpoint.pt", args, agent, counter.value, optimizer=optimizer.state_dict())
    finally:  # all done, one failed or Ctrl-C: no worker outlives the loop, and the logs so far are kept
        signal.signal(signal.SIGINT, main_handler)
        bar.close()
        writer.flush()
        for process in workers.processes:
            process.kill()
            process.join()

    global_step = counter.value
    sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
    writer.add_scalar("charts/SPS", sps, global_step)
    log = {"global_step": global_step, "sps": sps, "recent_return": recent_return}
    return {**log, "episodic_returns": episodic_returns, "updates_per_worker": updates_per_worker}


def main() -> None:
    """The command line: train, or with --eval-only evaluate a model.pt; a failure ends in one line and an exit code."""
    args = tyro.cli(Args)
    try:
        if args.eval_only is None:
            train(args)
        else:
            validate(args)
            returns = evaluate(
                args.eval_only, None, args.eval_episodes, args.eval_seed, args.cuda, args.capture_video, args.progress
            )
            print_eval(returns, f"episodes: {returns}")
        return
    except ConfigError as e:
        message, code = f"error: {e}", 2
    except mp.ProcessRaisedException as e:
        print(e.msg.strip(), file=sys.stderr)  # the worker's traceback
        *_, failure = e.msg.strip().splitlines()
        message, code = f"error: worker {e.error_index} failed ({failure}); all workers stopped", 1
    except mp.ProcessExitedException as e:
        message, code = f"error: worker {e.error_index} died with exit code {e.exit_code}; all workers stopped", 1
    except KeyboardInterrupt:
        message, code = "interrupted; all workers stopped", 130
    print(f"{os.path.basename(__file__)}: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
