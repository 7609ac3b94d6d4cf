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

Reproduce the README's Pendulum-v1 figure (defaults, 20k steps):
    python sac.py --seed 1
HalfCheetah-v4 as CleanRL runs it (1M steps, best on a GPU):
    python sac.py --env-id HalfCheetah-v4 --total-timesteps 1000000 --cuda
Evaluate a saved model:
    python sac.py --eval-only runs/<run>/model.pt
"""

import math
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
    # Experiment
    env_id: str = "Pendulum-v1"
    """gymnasium environment id with a bounded Box action space (`module:EnvName-v0` imports `module` first)"""
    total_timesteps: int = 20_000
    """total environment steps to train for, summed over all parallel environments"""
    seed: int = 1
    """seed of torch, numpy, python and the environments: same seed, same CPU run, same numbers"""
    cuda: bool = False
    """train on the GPU; stops with an error when no CUDA device is present"""
    torch_threads: int = 1
    """torch CPU threads; one by default: on 2 cores shared with another run, two gave 3 updates/s against 50"""
    torch_deterministic: bool = True
    """make cuDNN deterministic (slower on GPU, no effect on CPU)"""
    track: bool = False
    """send the TensorBoard scalars to Weights & Biases as well (needs `pip install wandb`)"""
    wandb_project_name: str = "reference-rl"
    """Weights & Biases project"""
    wandb_entity: Optional[str] = None
    """Weights & Biases team or user"""
    capture_video: bool = False
    """record videos of the first environment to `{run_dir}/videos`"""
    save_model: bool = True
    """write `model.pt` (actor weights and action bounds, args) at the end of training"""
    checkpoint_every: int = 0
    """write `checkpoint.pt` every this many environment steps (0: never); `--resume` reads it"""
    checkpoint_buffer: bool = False
    """store the replay buffer in `checkpoint.pt` too (HalfCheetah at 1M transitions: 168 MB); without it a resumed run starts from an empty buffer and refills it with `learning_starts` steps of the current policy before it updates again"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to carry on from: its args, weights, optimizers, step and RNG"""
    eval_only: Optional[str] = None
    """path of a `model.pt`: evaluate it for `--eval-episodes` episodes and exit, no training"""
    eval_episodes: int = 10
    """episodes of the deterministic policy (tanh of the mean action) played after training (0: skip)"""
    progress: bool = True
    """show a progress bar (only when stdout is a terminal)"""
    runs_dir: str = "runs"
    """where each run gets its folder `{env_id}__{script}__{seed}__{time}`"""

    # Algorithm
    num_envs: int = 1
    """parallel environments (gymnasium SyncVectorEnv); each vector step stores num_envs transitions and takes one gradient update, as in CleanRL"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions, each 2 * obs + action + 2 float32 values: HalfCheetah (obs 17, action 6) takes 42 * 4 = 168 bytes a transition, 168 MB for 1M, paged in as the buffer fills"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak coefficient of the target Q networks: target <- (1 - tau) * target + tau * online"""
    batch_size: int = 256
    """transitions per gradient update, drawn uniformly (with replacement) from the replay buffer"""
    learning_starts: int = 5_000
    """environment steps of uniformly random actions before the first update"""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor"""
    q_lr: float = 1e-3
    """Adam learning rate of the Q networks and of the temperature"""
    policy_frequency: int = 2
    """update the actor (and temperature) every this many Q updates, this many times in a row (TD3's delay)"""
    target_network_frequency: int = 1
    """Polyak-update the target Q networks every this many Q updates"""
    alpha: float = 0.2
    """entropy temperature when --no-autotune (autotune starts from 1.0, as CleanRL)"""
    autotune: bool = True
    """tune the temperature so that the policy's entropy stays near the target -|A|"""
    hidden_size: int = 256
    """width of the two hidden layers of the actor and of each Q network"""


class ConfigError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------
def check_env(env_id: str) -> None:
    """Build the environment once and refuse, in one line, what this script cannot train."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"environment {env_id!r} needs a package that is missing: {e}") from None
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        raise ConfigError(f"unknown environment id {env_id!r}: {e}") from None
    action_space = env.action_space
    env.close()
    if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise ConfigError(f"{env_id} has a discrete action space; use ppo_discrete.py")
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(f"{env_id} has action space {action_space}; this script needs a Box of shape (n,)")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ConfigError(f"{env_id} has unbounded actions {action_space}; SAC squashes actions into finite bounds")


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


# ---------------------------------------------------------------------------------------------
# The math, as pure functions
# ---------------------------------------------------------------------------------------------
def squashed_gaussian_log_prob(
    u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """log pi(a|s) of the squashed action a = tanh(u), u ~ N(mean, exp(log_std)^2), summed over
    the action dimensions (the last one):
        log pi(a|s) = sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2 + eps)]
    The second term is the change of variables through tanh (Haarnoja et al. 2018, appendix C);
    eps keeps it finite where tanh saturates. This is the density of a in [-1, 1]^|A|: rescaling
    to the env's bounds would only add a constant, so the entropy target -|A| does not depend
    on the bounds."""
    log_normal = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return (log_normal - torch.log(1.0 - torch.tanh(u) ** 2 + eps)).sum(-1)


def soft_q_target(
    rewards: torch.Tensor,
    terminations: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_log_pi: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
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


class ReplayBuffer:
    """Transitions in preallocated numpy arrays, written in a circle (the oldest is overwritten
    first) and sampled uniformly with replacement. `next_obs` is the real observation that
    followed the action, also where the episode ended; `terminations` is 1 only where it ended
    by termination, so a time limit still bootstraps. float32 throughout: (2 * obs_dim +
    act_dim + 2) * 4 bytes per transition (HalfCheetah: 168 bytes, 168 MB for 1M)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminations = np.zeros(capacity, dtype=np.float32)
        self.pos, self.size = 0, 0

    def add(self, obs, next_obs, actions, rewards, terminations) -> None:
        """Store one vector step: the first axis of every argument is the environment."""
        idx = (self.pos + np.arange(len(obs))) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.terminations[idx] = terminations
        self.pos = int(idx[-1] + 1) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple:
        """(obs, actions, rewards, next_obs, terminations) of batch_size random transitions."""
        idx = rng.integers(0, self.size, batch_size)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminations[idx]

    def state_dict(self) -> dict:
        """The filled part as tensors, so that a checkpoint loads with weights_only=True."""
        n = self.size
        arrays = ("obs", "next_obs", "actions", "rewards", "terminations")
        return {"pos": self.pos, "size": n, **{k: torch.from_numpy(getattr(self, k)[:n]) for k in arrays}}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ConfigError(f"the checkpoint's buffer holds {n} transitions, more than --buffer-size {self.capacity}")
        for k in ("obs", "next_obs", "actions", "rewards", "terminations"):
            getattr(self, k)[:n] = state[k].numpy()
        self.pos, self.size = state["pos"], n


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """Gaussian policy squashed by tanh: u ~ N(mean(s), std(s)), a = tanh(u) * scale + bias, where
    scale and bias map [-1, 1] onto the env's action bounds (buffers, saved with the weights)."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, hidden_size: int):
        super().__init__()
        act_dim = len(action_low)
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
        )
        self.fc_mean = nn.Linear(hidden_size, act_dim)
        self.fc_logstd = nn.Linear(hidden_size, act_dim)
        low, high = torch.as_tensor(action_low, dtype=torch.float32), torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor):
        """Mean and log standard deviation of u; log_std is squashed smoothly into [LOG_STD_MIN, LOG_STD_MAX]."""
        h = self.trunk(obs)
        log_std = torch.tanh(self.fc_logstd(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)
        return self.fc_mean(h), log_std

    def get_action(self, obs: torch.Tensor):
        """A sampled action in the env's bounds and its log pi(a|s), differentiable in the weights
        (reparameterization: u = mean + std * noise)."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = squashed_gaussian_log_prob(u, mean, log_std)
        return torch.tanh(u) * self.action_scale + self.action_bias, log_prob

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: tanh of the mean, rescaled to the env's bounds."""
        mean, _ = self(obs)
        return torch.tanh(mean) * self.action_scale + self.action_bias


class SoftQNetwork(nn.Module):
    """Q(s, a): an MLP on the observation and action, concatenated."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + act_dim, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Checkpoints: written to a temporary file and renamed, so a kill never leaves a broken file
# ---------------------------------------------------------------------------------------------
def save_atomic(obj: dict, path: str) -> None:
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


def select_device(cuda: bool, torch_threads: int) -> torch.device:
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--cuda was given but torch finds no CUDA device; run without --cuda")
    if not cuda:
        torch.set_num_threads(torch_threads)
    return torch.device("cuda" if cuda else "cpu")


def validate(args: Args) -> None:
    if args.total_timesteps <= 0:
        raise ConfigError(f"--total-timesteps must be positive, got {args.total_timesteps}")
    if args.num_envs <= 0 or args.batch_size <= 0 or args.policy_frequency <= 0 or args.target_network_frequency <= 0:
        raise ConfigError(
            "--num-envs, --batch-size, --policy-frequency and --target-network-frequency must be positive"
        )
    if args.buffer_size < args.num_envs:
        raise ConfigError(f"--buffer-size {args.buffer_size} cannot hold one step of {args.num_envs} envs")
    if not 0.0 < args.tau <= 1.0:
        raise ConfigError(f"--tau must be in (0, 1], got {args.tau}")
    if args.total_timesteps < args.num_envs:
        raise ConfigError(
            f"--total-timesteps {args.total_timesteps} is less than one step of all envs (num_envs = {args.num_envs})"
        )
    if args.learning_starts < 0 or args.learning_starts >= args.total_timesteps:
        raise ConfigError(
            f"--learning-starts {args.learning_starts} must be in [0, --total-timesteps {args.total_timesteps}): "
            "otherwise no update ever happens"
        )


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_file(
            args.resume,
            ("actor", "qf1", "qf2", "qf1_target", "qf2_target", "actor_optimizer", "q_optimizer", "args",
             "global_step", "iteration", "num_updates"),
        )  # fmt: skip
        # The checkpoint's settings define the run; only how it is run may change.
        saved = Args(**checkpoint["args"])
        saved.resume, saved.cuda, saved.progress, saved.track = args.resume, args.cuda, args.progress, args.track
        args = saved
    validate(args)
    check_env(args.env_id)
    device = select_device(args.cuda, args.torch_threads)

    num_iterations = args.total_timesteps // args.num_envs

    if checkpoint is not None and os.path.isdir(checkpoint.get("run_dir", "")):
        run_dir = checkpoint["run_dir"]
    else:
        run_name = f"{args.env_id.replace('/', '-').replace(':', '-')}__sac__{args.seed}__{int(time.time())}"
        run_dir = os.path.join(args.runs_dir, run_name)
    os.makedirs(run_dir, exist_ok=True)
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
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )

    # Seeding: torch draws the policy's noise, numpy's generator the random actions and the
    # replay minibatches; the envs have their own seeds.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rng = np.random.default_rng(args.seed)

    envs = make_vector_env(args, os.path.join(run_dir, "videos"))
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    action_low, action_high = envs.single_action_space.low, envs.single_action_space.high
    act_dim = len(action_low)

    actor = Actor(obs_dim, action_low, action_high, args.hidden_size).to(device)
    qf1 = SoftQNetwork(obs_dim, act_dim, args.hidden_size).to(device)
    qf2 = SoftQNetwork(obs_dim, act_dim, args.hidden_size).to(device)
    qf1_target = SoftQNetwork(obs_dim, act_dim, args.hidden_size).to(device)
    qf2_target = SoftQNetwork(obs_dim, act_dim, args.hidden_size).to(device)
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
    global_step, start_iteration, num_updates = 0, 1, 0
    if checkpoint is not None:
        for name, module in [("actor", actor), ("qf1", qf1), ("qf2", qf2), ("qf1_target", qf1_target),
                             ("qf2_target", qf2_target)]:  # fmt: skip
            module.load_state_dict(checkpoint[name])
        q_optimizer.load_state_dict(checkpoint["q_optimizer"])
        actor_optimizer.load_state_dict(checkpoint["actor_optimizer"])
        if "log_alpha" in checkpoint:
            with torch.no_grad():
                log_alpha.copy_(checkpoint["log_alpha"])
            alpha_optimizer.load_state_dict(checkpoint["alpha_optimizer"])
        if "buffer" in checkpoint:
            buffer.load_state_dict(checkpoint["buffer"])
        global_step = checkpoint["global_step"]
        start_iteration = checkpoint["iteration"] + 1
        num_updates = checkpoint["num_updates"]
        torch.set_rng_state(checkpoint["torch_rng_state"])
        if device.type == "cuda" and "cuda_rng_state" in checkpoint:
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
        rng.bit_generator.state = checkpoint["numpy_rng_state"]
        print(f"resumed from {args.resume} at step {global_step}, replay buffer of {buffer.size} transitions")
    alpha = log_alpha.detach().exp() if args.autotune else torch.tensor(args.alpha, device=device)
    # Updates start after learning_starts steps; a resumed run whose buffer was not saved first
    # refills it with learning_starts steps (of the current policy, when past the random phase).
    updates_start = (
        args.learning_starts if buffer.size > 0 or checkpoint is None else global_step + args.learning_starts
    )

    def to_tensors(*arrays):
        return [torch.as_tensor(x, dtype=torch.float32, device=device) for x in arrays]

    # A resumed run starts fresh episodes, seeded differently from the first start.
    obs, _ = envs.reset(seed=args.seed + (start_iteration - 1) * args.num_envs)
    episodic_returns, episodic_lengths = [], []
    last_checkpoint_step = global_step
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    start_time, start_step = time.time(), global_step
    updates_start_time, first_update = None, num_updates
    updates_per_second = 0.0

    progress = make_progress(args.progress)
    task = progress.add_task("training", total=args.total_timesteps, completed=global_step, sps=0, ret=float("nan"))
    with progress:
        for iteration in range(start_iteration, num_iterations + 1):
            # ---- Act: uniformly random actions first, then samples of the policy.
            if global_step < args.learning_starts:
                actions = rng.uniform(action_low, action_high, size=(args.num_envs, act_dim)).astype(np.float32)
            else:
                with torch.no_grad():
                    actions, _ = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))
                actions = actions.cpu().numpy()
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs

            # Where an episode ended, next_obs already starts the next one (SAME_STEP autoreset):
            # the transition gets the real last observation. Only terminations are stored as
            # the end of the bootstrap; a truncated transition keeps its next state's value.
            real_next_obs = next_obs.copy()
            for env_idx in np.flatnonzero(terminations | truncations):
                real_next_obs[env_idx] = infos["final_obs"][env_idx]
            buffer.add(obs, real_next_obs, actions, rewards, terminations)
            obs = next_obs

            if "episode" in infos:
                for env_idx in np.flatnonzero(infos["_episode"]):
                    episodic_returns.append(float(infos["episode"]["r"][env_idx]))
                    episodic_lengths.append(int(infos["episode"]["l"][env_idx]))
                    writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step)
                    writer.add_scalar("charts/episodic_length", episodic_lengths[-1], global_step)

            # ---- Update: one gradient step of both Q networks per vector step.
            if global_step > updates_start:
                if updates_start_time is None:
                    updates_start_time = time.time()
                num_updates += 1
                b_obs, b_actions, b_rewards, b_next_obs, b_terminations = to_tensors(
                    *buffer.sample(args.batch_size, rng)
                )
                with torch.no_grad():
                    next_actions, next_log_pi = actor.get_action(b_next_obs)
                    next_q1 = qf1_target(b_next_obs, next_actions)
                    next_q2 = qf2_target(b_next_obs, next_actions)
                    q_target = soft_q_target(
                        b_rewards, b_terminations, next_q1, next_q2, next_log_pi, alpha, args.gamma
                    )
                qf1_values = qf1(b_obs, b_actions)
                qf2_values = qf2(b_obs, b_actions)
                qf1_loss = F.mse_loss(qf1_values, q_target)
                qf2_loss = F.mse_loss(qf2_values, q_target)
                qf_loss = qf1_loss + qf2_loss
                q_optimizer.zero_grad()
                qf_loss.backward()
                q_optimizer.step()

                # ---- Actor and temperature: delayed, then as many steps as were skipped.
                if num_updates % args.policy_frequency == 0:
                    # The actor's gradient flows through the Q networks into the action; their
                    # own weights need no gradient here.
                    for p in q_params:
                        p.requires_grad_(False)
                    for _ in range(args.policy_frequency):
                        pi, log_pi = actor.get_action(b_obs)
                        min_q_pi = torch.min(qf1(b_obs, pi), qf2(b_obs, pi))
                        actor_loss = (alpha * log_pi - min_q_pi).mean()
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

                if num_updates % args.target_network_frequency == 0:
                    polyak_update(qf1.parameters(), qf1_target.parameters(), args.tau)
                    polyak_update(qf2.parameters(), qf2_target.parameters(), args.tau)

                # ---- Logging, every 100 updates (.item() waits for the device: not every step),
                # once the actor has been updated in this process.
                if num_updates % 100 == 0 and num_updates - first_update >= args.policy_frequency:
                    updates_per_second = (num_updates - first_update) / max(time.time() - updates_start_time, 1e-9)
                    writer.add_scalar("losses/qf1_values", qf1_values.mean().item(), global_step)
                    writer.add_scalar("losses/qf2_values", qf2_values.mean().item(), global_step)
                    writer.add_scalar("losses/qf1_loss", qf1_loss.item(), global_step)
                    writer.add_scalar("losses/qf2_loss", qf2_loss.item(), global_step)
                    writer.add_scalar("losses/qf_loss", qf_loss.item() / 2.0, global_step)
                    writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                    writer.add_scalar("losses/entropy", -log_pi.mean().item(), global_step)
                    writer.add_scalar("losses/alpha", alpha.item(), global_step)
                    if args.autotune:
                        writer.add_scalar("losses/alpha_loss", alpha_loss.item(), global_step)
                    writer.add_scalar("charts/updates_per_second", updates_per_second, global_step)

            if iteration % 100 == 0 or iteration == num_iterations:
                sps = int((global_step - start_step) / (time.time() - start_time))
                writer.add_scalar("charts/SPS", sps, global_step)
                recent = np.mean(episodic_returns[-20:]) if episodic_returns else float("nan")
                progress.update(task, completed=global_step, sps=sps, ret=recent)

            if args.checkpoint_every > 0 and (
                global_step - last_checkpoint_step >= args.checkpoint_every or iteration == num_iterations
            ):
                last_checkpoint_step = global_step
                state = {
                    "actor": actor.state_dict(),
                    "qf1": qf1.state_dict(),
                    "qf2": qf2.state_dict(),
                    "qf1_target": qf1_target.state_dict(),
                    "qf2_target": qf2_target.state_dict(),
                    "actor_optimizer": actor_optimizer.state_dict(),
                    "q_optimizer": q_optimizer.state_dict(),
                    "log_alpha": log_alpha.detach(),
                    "alpha_optimizer": alpha_optimizer.state_dict(),
                    "args": asdict(args),
                    "global_step": global_step,
                    "iteration": iteration,
                    "num_updates": num_updates,
                    "run_dir": run_dir,
                    "torch_rng_state": torch.get_rng_state(),
                    "numpy_rng_state": rng.bit_generator.state,
                }
                if device.type == "cuda":
                    state["cuda_rng_state"] = torch.cuda.get_rng_state()
                if args.checkpoint_buffer:
                    state["buffer"] = buffer.state_dict()
                save_atomic(state, checkpoint_path)

    envs.close()
    sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
    if updates_start_time is not None and num_updates > first_update:
        updates_per_second = (num_updates - first_update) / max(time.time() - updates_start_time, 1e-9)

    model_path = None
    if args.save_model:
        model_path = os.path.join(run_dir, "model.pt")
        save_atomic({"actor": actor.state_dict(), "args": asdict(args), "global_step": global_step}, model_path)

    eval_returns = []
    if args.eval_episodes > 0:
        eval_returns = play(
            actor,
            args.env_id,
            args.eval_episodes,
            args.seed + 10_000,
            device,
            args.capture_video,
            os.path.join(run_dir, "videos-eval"),
        )
        for i, r in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", r, i)
        print(
            f"eval: mean return {np.mean(eval_returns):.1f} +- {np.std(eval_returns):.1f} over {len(eval_returns)} deterministic episodes"
        )
    print(
        f"done: {global_step} steps, {sps} steps/s, {updates_per_second:.0f} updates/s, last 20 episodes {np.mean(episodic_returns[-20:]) if episodic_returns else float('nan'):.1f}"
    )
    writer.close()
    if args.track:
        wandb.finish()
    return {
        "global_step": global_step,
        "episodic_returns": episodic_returns,
        "episodic_lengths": episodic_lengths,
        "eval_returns": eval_returns,
        "sps": sps,
        "updates_per_second": updates_per_second,
        "num_updates": num_updates,
        "run_dir": run_dir,
        "model_path": model_path,
        "checkpoint_path": checkpoint_path if args.checkpoint_every > 0 else None,
    }


def make_progress(enabled: bool):
    """A rich progress bar: steps, steps/s and the mean of the last 20 episodic returns."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[sps]} steps/s  return {task.fields[ret]:.1f}"),
        TimeRemainingColumn(),
        disable=not (enabled and sys.stdout.isatty()),
    )


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def play(
    actor: Actor,
    env_id: str,
    episodes: int,
    seed: int,
    device: torch.device,
    capture_video: bool = False,
    video_dir: str = "videos",
) -> list:
    """Run the deterministic policy (tanh of the mean, rescaled) for whole episodes."""
    env = make_env(env_id, 0, capture_video, video_dir)()
    returns = []
    for episode in range(episodes):
        raw_obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs = torch.as_tensor(raw_obs, dtype=torch.float32, device=device).reshape(1, -1)
            raw_obs, reward, terminated, truncated, _ = env.step(actor.greedy_action(obs)[0].cpu().numpy())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def evaluate(
    model_path: str,
    env_id: Optional[str] = None,
    episodes: int = 10,
    seed: int = 0,
    cuda: bool = False,
    capture_video: bool = False,
) -> list:
    """Load a model.pt (actor weights and action bounds) and return deterministic episodic returns."""
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
    actor.eval()
    video_dir = os.path.join(os.path.dirname(model_path), "videos-eval")
    return play(actor, env_id, episodes, seed, device, capture_video, video_dir)


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        if cli_args.eval_only is not None:
            eval_returns = evaluate(
                cli_args.eval_only, None, cli_args.eval_episodes, cli_args.seed, cli_args.cuda, cli_args.capture_video
            )
            print(
                f"eval: mean return {np.mean(eval_returns):.1f} +- {np.std(eval_returns):.1f} over {len(eval_returns)} episodes: {eval_returns}"
            )
        else:
            train(cli_args)
    except ConfigError as e:
        print(f"sac.py: error: {e}", file=sys.stderr)
        sys.exit(2)
