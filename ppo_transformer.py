"""Proximal Policy Optimization (PPO) with a transformer memory, discrete actions, in one file.

PPO (Schulman et al. 2017, https://arxiv.org/abs/1707.06347) collects a batch of experience with the current policy,
estimates advantages with GAE (Schulman et al. 2015, https://arxiv.org/abs/1506.02438), then takes several epochs of
minibatch gradient steps on a clipped surrogate objective that keeps the new policy close to the one that collected it.

The agent is ppo_discrete.py's with memory: at every step the policy and the value each read the last K observations
of the current episode (--context-len) through a small causal transformer of their own, with pre-norm blocks (Vaswani
et al. 2017, https://arxiv.org/abs/1706.03762). Slots of the window before the episode start are masked, never filled
with the previous episode's frames. Each stored step carries its own window (cut from the rollout in one strided view),
so minibatches may shuffle steps exactly as in ppo_discrete.py. The value's loss never moves the policy's transformer,
and the two networks' gradients are clipped apart, so that a large value gradient never shrinks the policy's step.

--mask-velocity hides the velocities (CartPole-v1 keeps the cart position and the pole angle): the agent must infer
speed from positions over time, which a memoryless agent (--context-len 1) cannot do for long.

Works with any gymnasium environment whose action space is Discrete: CartPole-v1 by default, LunarLander-v3,
Acrobot-v1, or your own registered as `my_module:MyEnv-v0`.

Usage (the default budget is 100k steps):
    python ppo_transformer.py --mask-velocity --total-timesteps 500000 --seed 1   # the README's figure
    python ppo_transformer.py --eval-only runs/<run>/model.pt   # replay the games that ended its training
    python ppo_transformer.py --help                            # every flag

Read from the top: the arguments, the environment, the math, the network, the training loop, evaluation. The last
section, "Plumbing", is what running a script needs and learning the algorithm does not.
"""

import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    # Algorithm
    env_id: str = "CartPole-v1"
    """gymnasium id with a Discrete action space (`module:EnvName-v0` imports `module` first)"""
    total_timesteps: int = 100_000
    """total environment steps to train for, summed over all parallel environments"""
    num_envs: int = 8
    """parallel environments (gymnasium SyncVectorEnv)"""
    num_steps: int = 32
    """steps per environment per rollout; the batch is num_envs * num_steps"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    gamma: float = 0.98
    """discount factor"""
    gae_lambda: float = 0.8
    """lambda of generalized advantage estimation (0: one-step TD, 1: Monte Carlo)"""
    num_minibatches: int = 1
    """minibatches per epoch; the batch must divide evenly into them"""
    update_epochs: int = 20
    """passes over the batch per update"""
    norm_adv: bool = True
    """normalize advantages within each minibatch"""
    clip_coef: float = 0.2
    """surrogate clipping coefficient epsilon: the ratio is clipped to [1 - eps, 1 + eps]"""
    clip_vloss: bool = False
    """clip the value update to clip_coef around the old value, as in the original PPO code"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.35
    """gradient norm limit of each network apart, the policy's and the value's (0.35 each: together at most 0.5)"""
    target_kl: Optional[float] = 0.02
    """stop the update's epochs early when the approximate KL exceeds this (None: never)"""
    norm_obs: bool = True
    """normalize observations with running mean and variance (saved with the model)"""
    norm_reward: bool = False
    """divide rewards by the running std of the discounted return; logged returns stay raw"""
    mask_velocity: bool = False
    """hide the velocities (CartPole, Acrobot, LunarLander, MountainCar): memory must infer them"""
    context_len: int = 16
    """K: each step sees the last K observations of its own episode, none older (1: no memory)"""
    position_from_start: bool = False
    """also give each slot a learned position counted forward from the episode's oldest observation in the window (its
    first while the episode is shorter than K), so that attention finds the first observation at one fixed position"""
    embed_dim: int = 32
    """width of the transformer: observation embedding, attention and feed-forward layers"""
    num_layers: int = 1
    """transformer blocks"""
    num_heads: int = 4
    """attention heads per block; embed_dim must divide into them"""

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
    """run the minibatch loss and the acting forward pass through torch.compile"""
    cudagraphs: bool = False
    """with --compile on a GPU: replay the compiled functions as CUDA graphs"""
    eval_episodes: int = 10
    """episodes of the deterministic (greedy) policy played after training (0: skip)"""
    eval_seed: Optional[int] = None
    """seed of the first evaluation episode, the next count up (default: seed + 10000)"""
    save_model: bool = True
    """write `model.pt` (weights, observation statistics, args) at the end of training"""
    checkpoint_every: int = 0
    """write `checkpoint.pt` every this many environment steps (0: never); `--resume` reads it"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to carry on from: its args, weights, optimizer, step and RNG"""
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
# Which observation components are velocities, for --mask-velocity.
VELOCITY_COMPONENTS = {
    "CartPole-v1": (1, 3),  # of (cart position, cart velocity, pole angle, pole angular velocity)
    "Acrobot-v1": (4, 5),  # of (cos, sin of both joint angles, both angular velocities)
    "LunarLander-v3": (2, 3, 5),  # of (x, y, vx, vy, angle, angular velocity, two leg contacts)
    "MountainCar-v0": (1,),  # of (position, velocity)
}


def make_env(env_id: str, idx: int, capture_video: bool, video_dir: str, mask_velocity=False):
    """Return a thunk that builds one environment; vector envs call it in each slot."""

    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array", disable_env_checker=True)
            try:
                env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
            except OSError as e:
                raise ConfigError(f"cannot create the videos folder {video_dir}: {e.strerror or e}") from None
        else:
            env = gym.make(env_id, disable_env_checker=True)  # checked once in check_env
        # Dict, Tuple and Discrete observations become one flat float vector.
        if not isinstance(env.observation_space, gym.spaces.Box):
            env = gym.wrappers.FlattenObservation(env)
        if mask_velocity:
            # What is left is a snapshot of positions: speed can only be inferred from the previous snapshots.
            low, high = env.observation_space.low, env.observation_space.high
            keep = [i for i in range(low.shape[0]) if i not in VELOCITY_COMPONENTS[env_id]]
            env = gym.wrappers.TransformObservation(env, lambda obs: obs[keep], gym.spaces.Box(low[keep], high[keep]))
        return env

    return thunk


def make_vector_env(args: Args, video_dir: str) -> gym.vector.VectorEnv:
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, video_dir, args.mask_velocity) for i in range(args.num_envs)],
        # SAME_STEP: a finished env resets inside the step that ended it, so every returned
        # observation is one the agent acts on, and the real last one is in infos["final_obs"].
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        copy=False,
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


def episode_windows(history: torch.Tensor, episode_starts: torch.Tensor, context_len: int) -> tuple:
    """Every step's window of its episode's last K = context_len observations, cut from the rollout in one strided view
    (no Python loop, no copy). history [K - 1 + T, N, D]: per env, the K - 1 observations carried over from the
    previous rollout, then this rollout's T, so that step t's own observation is row t + K - 1 and its window is rows
    t .. t + K - 1. episode_starts [T, N]: the row where step t's episode began. Returns windows [T, N, K, D] and masks
    [T, N, K], where mask = row >= episode start: False for the slots of an earlier episode (or before the first)."""
    windows = history.unfold(0, context_len, 1).transpose(-1, -2)  # [T, N, K, D]
    rows = torch.arange(len(windows), device=history.device)[:, None] + torch.arange(context_len, device=history.device)
    return windows, rows[:, None, :] >= episode_starts[:, :, None]


def following_windows(history, steps, env_ids, following_obs, episode_starts, context_len: int) -> tuple:
    """The windows of observations that are not in the history but follow one of its steps: the final observation of an
    episode truncated at step t, or the one that follows the rollout's last step. Each window is the K - 1 rows before
    it (rows t + 1 .. t + K - 1 of env i, as in episode_windows), then itself; steps, env_ids, episode_starts [M],
    following_obs [M, D]. Returns windows [M, K, D] and masks [M, K] (False before the episode start)."""
    offsets = torch.arange(context_len, device=history.device)
    rows = steps[:, None] + 1 + offsets  # the row each slot would have: the last is new
    windows = torch.cat([history[rows[:, :-1], env_ids[:, None]], following_obs[:, None]], 1)
    return windows, rows >= episode_starts[:, None]


def attention_mask(masks: torch.Tensor) -> torch.Tensor:
    """Which slots of a window each slot may attend to, from masks [B, L] (True: in the current episode):
    allowed[b, i, j] = j <= i (causal) and masks[b, j]. A slot before the episode start attends to itself only, so
    that no softmax row is empty; its output is never read."""
    length = masks.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=masks.device).tril()
    itself = torch.eye(length, dtype=torch.bool, device=masks.device)
    return causal & (masks[:, None, :] | itself)


# ---- The network
class RunningMeanStd(nn.Module):
    """Running mean and variance of observations, merged batch by batch with the parallel
    variance formula (Chan et al. 1979). Buffers, so they are saved in the model's state_dict."""

    def __init__(self, shape: tuple, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.clip, self.epsilon = clip, epsilon

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        batch = batch.to(torch.float64)
        batch_mean, batch_var, batch_count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalized = (x - self.mean) / torch.sqrt(self.var + self.epsilon)
        return torch.clamp(normalized, -self.clip, self.clip).to(x.dtype)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights and zero bias, the initialization of the original PPO code."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Block(nn.Module):
    """Pre-norm transformer block: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool) -> tuple:
        """x [B, L, dim]; allowed [B, L, L]: may slot i attend to slot j. With last_only, only the last slot (the
        current step) is computed, all the last block needs to return. Returns the new x and, with last_only, the
        current step's attention weights [B, heads, L] (None otherwise)."""
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        h = self.norm1(x)
        # The keys and values of every slot; queries only where an output is needed.
        weight, bias = self.qkv.weight, self.qkv.bias
        k, v = nn.functional.linear(h, weight[dim:], bias[dim:]).split(dim, dim=-1)
        k, v = k.reshape(batch, length, heads, head_dim), v.reshape(batch, length, heads, head_dim)
        if last_only:
            # One query per window: softmax(q k^T / sqrt(d) + mask) v as a weighted sum over the slots. A forbidden slot
            # gets -inf, so its weight is exactly 0 and its observation cannot change the output.
            q = nn.functional.linear(h[:, -1], weight[:dim], bias[:dim])
            scores = (q.reshape(batch, 1, heads, head_dim) * k).sum(-1) / np.sqrt(head_dim)
            forbidden = ~allowed[:, -1, :, None]  # [B, L, 1]
            weights = torch.softmax(scores.masked_fill(forbidden, float("-inf")), dim=1)
            attended = (weights[..., None] * v).sum(1).reshape(batch, 1, dim)
            x, weights = x[:, -1:], weights.transpose(1, 2)  # weights [B, heads, L]
        else:
            # Every slot's query, through torch's fused scaled dot-product attention (the same softmax, masked alike).
            q = nn.functional.linear(h, weight[:dim], bias[:dim]).reshape(k.shape)
            attended = nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed[:, None]
            )
            attended, weights = attended.transpose(1, 2).reshape(batch, length, dim), None
        x = x + self.proj(attended)
        x = x + self.mlp(self.norm2(x))
        return x, weights


class WindowEncoder(nn.Module):
    """A causal transformer over the window of the episode's last K (normalized) observations."""

    def __init__(self, obs_dim: int, args: Args):
        super().__init__()
        dim, length = args.embed_dim, args.context_len
        self.embed = nn.Linear(obs_dim, dim)
        # Learned positions, counted back from the current step: the last slot is always "now".
        self.position = nn.Parameter(torch.randn(length, dim) * 0.02)
        # Optional, counted forward from the window's oldest observation of the episode: "attend to the episode's first
        # observation" is then one learned query, not a search among positions that differ at every step.
        self.position_from_start = nn.Parameter(torch.randn(length, dim) * 0.02) if args.position_from_start else None
        self.blocks = nn.ModuleList(Block(dim, args.num_heads) for _ in range(args.num_layers))
        self.norm = nn.LayerNorm(dim)  # pre-norm blocks leave their output unnormalized

    def forward(self, windows: torch.Tensor, masks: torch.Tensor) -> tuple:
        """windows [B, L, D], L <= K; masks [B, L]. Returns the features of the current step
        [B, dim] and the last block's attention weights of the current step [B, heads, L]."""
        length = windows.shape[1]
        x = self.embed(windows) + self.position[-length:]
        if self.position_from_start is not None:
            # Slot j's index among the window's slots of the current episode (masked slots get 0, never attended).
            since_start = (masks.long().cumsum(-1) - 1).clamp_min(0)
            x = x + self.position_from_start[since_start]
        allowed = attention_mask(masks)
        for i, block in enumerate(self.blocks):
            x, weights = block(x, allowed, last_only=i == len(self.blocks) - 1)
        return self.norm(x[:, -1]), weights


class Agent(nn.Module):
    """Two causal transformers, the policy's and the value's (as RL Zoo's RecurrentPPO gives its critic an LSTM of its
    own), read the window: linear heads on the current step's features give the logits of a categorical policy and V."""

    def __init__(self, obs_dim: int, n_actions: int, args: Args):
        super().__init__()
        self.obs_rms = RunningMeanStd((obs_dim,)) if args.norm_obs else None
        # Used in training only; kept in the module so that checkpoints carry it.
        self.return_rms = RunningMeanStd(()) if args.norm_reward else None
        self.context_len = args.context_len
        self.encoder = WindowEncoder(obs_dim, args)
        self.critic = layer_init(nn.Linear(args.embed_dim, 1), std=1.0)
        # A small last layer starts the policy near uniform.
        self.actor = layer_init(nn.Linear(args.embed_dim, n_actions), std=0.01)
        self.critic_encoder = WindowEncoder(obs_dim, args)

    def inputs(self, windows: torch.Tensor, masks: Optional[torch.Tensor] = None) -> tuple:
        """windows [B, L, D] of raw observations, oldest first, L <= K (a single observation [B, D] is a window of one);
        masks [B, L], True where the slot is in the current episode (None: all are). Returns the normalized windows
        and the masks, as both transformers read them."""
        if windows.dim() == 2:
            windows = windows.unsqueeze(1)
        if masks is None:
            masks = torch.ones(windows.shape[:2], dtype=torch.bool, device=windows.device)
        return (windows if self.obs_rms is None else self.obs_rms(windows)), masks

    def encode(self, windows: torch.Tensor, masks: Optional[torch.Tensor] = None, critic: bool = False) -> tuple:
        """WindowEncoder's output for the policy or (critic=True) the value; windows and masks as in `inputs`."""
        return (self.critic_encoder if critic else self.encoder)(*self.inputs(windows, masks))

    def get_value(self, windows: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.critic(self.encode(windows, masks, critic=True)[0]).squeeze(-1)

    def sample_action(self, windows: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Sample a ~ softmax(logits) by the Gumbel-max trick: argmax(logits + Gumbel noise). Same distribution as
        Categorical(logits).sample(), without building a distribution object at every environment step."""
        logits = self.actor(self.encode(windows, masks)[0])
        gumbel = -torch.empty_like(logits).exponential_().log()
        return torch.argmax(logits + gumbel, dim=-1)

    def greedy_action(self, windows: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.argmax(self.actor(self.encode(windows, masks)[0]), dim=-1)

    def evaluate_actions(self, windows: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor):
        """Log-probability of the given actions, entropy of the policy, the value, and the
        attention weights of the current step in the policy's transformer (for the diagnostics)."""
        normalized, masks = self.inputs(windows, masks)  # once, for both transformers
        features, attention = self.encoder(normalized, masks)
        log_probs = torch.log_softmax(self.actor(features), dim=-1)
        action_log_prob = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        value = self.critic(self.critic_encoder(normalized, masks)[0]).squeeze(-1)
        return action_log_prob, entropy, value, attention


# ---- Training
def ppo_loss(agent, windows, masks, actions, old_logprobs, advantages, old_values, returns, args) -> tuple:
    """The PPO objective of one minibatch as a loss to minimize,
        L = L_clip - ent_coef * entropy + vf_coef * L_value,
    its three parts, and the probability ratios pi_new / pi_old (for the diagnostics)."""
    new_logprob, entropy, new_value, _ = agent.evaluate_actions(windows, masks, actions)
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
    device = select_device(args.cuda, args.torch_threads)
    run_dir, writer = start_run(args, checkpoint, device)
    seed_everything(args.seed, args.torch_deterministic)

    envs = make_vector_env(args, os.path.join(run_dir, "videos"))
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    agent = Agent(obs_dim, int(envs.single_action_space.n), args).to(device)
    # fused: one kernel updates all parameters, measurably faster for small networks.
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    global_step, start_iteration = restore(args, checkpoint, agent, optimizer, device)

    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    # Each network's gradient is clipped apart, so that a large value gradient never shrinks the policy's step.
    policy_params = [*agent.encoder.parameters(), *agent.actor.parameters()]
    networks = [policy_params, [*agent.critic_encoder.parameters(), *agent.critic.parameters()]]

    # Rollout storage. Observations are stored raw: the agent normalizes its windows itself. The history holds the K - 1
    # observations carried over, then this rollout's, as episode_windows reads them. Rewards and dones stay numpy until
    # the rollout ends: one transfer per rollout.
    context_len, carried = args.context_len, args.context_len - 1
    obs = torch.zeros((carried + args.num_steps, args.num_envs, obs_dim), device=device)
    # The row where each step's episode began: its window masks every row before it.
    episode_starts = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    rewards_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    # What the reward scaling is updated with, once per rollout: each env's discounted return.
    discounted_returns_np = np.zeros((args.num_steps, args.num_envs))
    slots = torch.arange(context_len, device=device)

    # --compile: the same two functions, traced and fused by torch.compile (see maybe_compile).
    minibatch_loss = maybe_compile(ppo_loss, args)
    sample_action = maybe_compile(agent.sample_action, args)

    def to_obs_tensor(raw) -> torch.Tensor:
        return torch.as_tensor(raw, dtype=torch.float32, device=device).reshape(-1, obs_dim)

    # A resumed run starts fresh episodes, seeded differently from the first start.
    raw_obs, _ = envs.reset(seed=args.seed + (start_iteration - 1) * args.num_envs)
    next_obs = to_obs_tensor(raw_obs)
    # Each env's current episode begins at the first row of this rollout: nothing carried yet.
    episode_start = torch.full((args.num_envs,), carried, dtype=torch.long, device=device)
    discounted_return = np.zeros(args.num_envs)  # each env's running return, for reward scaling
    episodic_returns = []  # what the env paid per finished episode, raw, in the order they ended
    start_time, start_step, last_checkpoint_step = time.time(), global_step, global_step
    sps, recent_return = 0, float("nan")  # recent_return: the mean of the last 20 episodes, for the progress bar
    bar = progress_bar(args.progress, args.total_timesteps, global_step)
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # ---- Rollout: only the action is needed per step; values and log-probs of the
        # whole batch are computed afterwards in one pass, with the same weights.
        truncated_slots, truncated_obs = [], []
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[carried + step] = next_obs
            episode_starts[step] = episode_start
            # This step's window, as episode_windows cuts it for the update below.
            window = obs[step : step + context_len].transpose(0, 1)  # [N, K, D]
            with torch.no_grad():
                action = sample_action(window, step + slots >= episode_start[:, None])
            actions[step] = action
            raw_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            rewards_np[step] = reward
            dones_np[step] = np.logical_or(terminations, truncations)
            next_obs = to_obs_tensor(raw_obs)
            # Each env's discounted return restarts at its episode end, truncations included.
            discounted_return = discounted_return * args.gamma + reward
            discounted_returns_np[step] = discounted_return
            discounted_return[terminations | truncations] = 0.0

            # Time-limit truncation is not failure: remember the real last observation,
            # to bootstrap r_t + gamma * V(final_obs) below. Terminations get no bootstrap.
            for env_idx in np.flatnonzero(truncations & ~terminations):
                truncated_slots.append((step, env_idx, episode_start[env_idx].item()))
                truncated_obs.append(infos["final_obs"][env_idx])
            # An env that finished starts its next episode at the next row.
            ended = torch.as_tensor(dones_np[step] > 0, device=device)
            episode_start[ended] = carried + step + 1
            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    episodic_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", episodic_returns[-1], global_step)
                    writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)

        # ---- Advantages, with every value from the weights that acted.
        with torch.no_grad():
            if agent.return_rms is not None:
                # Scale rewards by the std of the discounted return, not of the reward, as
                # the original PPO code does; the statistics include this rollout's returns.
                agent.return_rms.update(torch.as_tensor(discounted_returns_np.reshape(-1), device=device))
                scale = np.sqrt(agent.return_rms.var.item() + 1e-8)
                rewards_np[:] = np.clip(rewards_np / scale, -10, 10)
            rewards = torch.as_tensor(rewards_np, device=device).clone()
            dones = torch.as_tensor(dones_np, device=device)
            # Each step's window and mask, copied once per rollout into one contiguous batch (a copy, not a view: the
            # history's first rows are overwritten below).
            windows, masks = episode_windows(obs, episode_starts, context_len)
            b_windows = windows.reshape(-1, context_len, obs_dim).contiguous()
            b_masks = masks.reshape(-1, context_len)
            b_actions = actions.reshape(-1)
            b_logprobs, _, b_values, b_attention = agent.evaluate_actions(b_windows, b_masks, b_actions)
            values = b_values.reshape(args.num_steps, args.num_envs)
            if truncated_obs:
                # Added after the scaling above: V estimates the return of scaled rewards, so
                # gamma * V(final_obs) is already in the units of the scaled reward it joins.
                steps, env_ids, starts = torch.tensor(truncated_slots, device=device).T
                final_obs = to_obs_tensor(np.stack(truncated_obs))
                final_values = agent.get_value(*following_windows(obs, steps, env_ids, final_obs, starts, context_len))
                for (step, env_idx, _), final_value in zip(truncated_slots, final_values):
                    rewards[step, env_idx] += args.gamma * final_value
            # V(s_T): next_obs follows the rollout's last step in every env.
            last_steps = torch.full((args.num_envs,), args.num_steps - 1, device=device)
            every_env = torch.arange(args.num_envs, device=device)
            following = following_windows(obs, last_steps, every_env, next_obs, episode_start, context_len)
            next_value = agent.get_value(*following)
            advantages = compute_gae(rewards, values, dones, next_value, args.gamma, args.gae_lambda)
            returns = advantages + values  # the value targets

            # The last K - 1 rows are carried over as the next rollout's first ones.
            obs[:carried] = obs[args.num_steps :].clone()
            episode_start -= args.num_steps

        b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)

        # ---- Update: several epochs of minibatch steps on the clipped objective.
        batch = (b_windows, b_masks, b_actions, b_logprobs, b_advantages, b_values, b_returns)  # as ppo_loss takes them
        ratios = []  # of every minibatch, for the diagnostics
        for epoch in range(args.update_epochs):
            permutation = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                mb = permutation[start : start + minibatch_size]
                loss, pg_loss, v_loss, entropy_loss, ratio = minibatch_loss(agent, *(b[mb] for b in batch), args)
                ratios.append(ratio.detach())
                optimizer.zero_grad()
                loss.backward()
                norms = [nn.utils.clip_grad_norm_(params, args.max_grad_norm) for params in networks]
                grad_norm = torch.linalg.vector_norm(torch.stack(norms))  # of all gradients
                optimizer.step()

            if args.target_kl is not None and approx_kl(ratios[-1]) > args.target_kl:
                break

        # Observation statistics: updated once per rollout, after its update, so that every step of the batch, its
        # bootstrap values and every epoch of the update saw the statistics the policy acted with.
        if agent.obs_rms is not None:
            agent.obs_rms.update(obs[carried:].reshape(-1, obs_dim))  # this rollout's rows

        # ---- Diagnostics, CleanRL's names: the losses and KL of the last minibatch (as CleanRL logs them), the clip
        # fraction and the ratio histogram over the whole update. Where the current step looks in the policy's last
        # block (mean over heads and batch): its attention's entropy (0: one slot; log K: even over a full window) and
        # its weight on its own observation (1: the memory goes unused).
        all_ratios = torch.cat(ratios)
        sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
        attention_entropy = -(b_attention * b_attention.clamp_min(1e-12).log()).sum(-1).mean()
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
            "charts/attention_entropy": attention_entropy.item(),
            "charts/attention_on_current_step": b_attention[..., -1].mean().item(),
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
    model_path = save(run_dir, "model.pt", args, agent, global_step) if args.save_model else None
    eval_returns = finish_run(args, run_dir, writer, agent, device)  # the greedy policy on games training never saw
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
def play(agent, env_id: str, episodes: int, seed: int, device, video_dir=None, progress=False, mask_velocity=False):
    """Run the greedy policy for whole episodes, the first seeded `seed`, the next counting up, recorded to `video_dir`
    if given; the observation statistics stay frozen. The window: the episode's last K observations (no mask needed)."""
    env = make_env(env_id, 0, video_dir is not None, video_dir, mask_velocity)()
    returns = []
    bar = progress_bar(progress, episodes, desc="evaluating", unit="episode")
    for episode in range(episodes):
        raw_obs, _ = env.reset(seed=seed + episode)
        done, total, episode_obs = False, 0.0, []
        while not done:
            episode_obs.append(torch.as_tensor(raw_obs, dtype=torch.float32, device=device).reshape(-1))
            window = torch.stack(episode_obs[-agent.context_len :]).unsqueeze(0)  # [1, <=K, D]
            raw_obs, reward, terminated, truncated, _ = env.step(int(agent.greedy_action(window)))
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
    return play(agent, env_id, episodes, seed, device, video_dir, progress, saved.mask_velocity)


# ---- Plumbing: errors, checkpoint files, run folders, progress, W&B. A reader of the algorithm may stop here.
class ConfigError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def validate(args: Args) -> None:
    """Refuse, in one line, the settings that cannot mean anything. Written as `not x > 0`, which NaN fails too."""
    rules = [
        ("must be positive", lambda x: x > 0, "total_timesteps num_envs num_steps num_minibatches update_epochs"),
        ("must be positive", lambda x: x > 0, "clip_coef max_grad_norm target_kl torch_threads"),
        ("must be positive", lambda x: x > 0, "context_len embed_dim num_layers num_heads"),
        ("must be 0 or more", lambda x: x >= 0, "learning_rate ent_coef vf_coef eval_episodes checkpoint_every"),
        ("must be between 0 and 1", lambda x: 0 <= x <= 1, "gamma gae_lambda"),
        ("must be between 0 and 2**32 - 1", lambda x: 0 <= x < 2**32, "seed eval_seed"),  # numpy's seeds: 32 bits
    ]
    for requirement, holds, names in rules:
        for name in names.split():
            value = getattr(args, name)
            if value is not None and not holds(value):  # None: the optional target_kl, eval_seed
                raise ConfigError(f"{flag(name)} {requirement}, got {value}")
    if args.eval_only is not None and not args.eval_episodes > 0:
        raise ConfigError(f"--eval-episodes must be positive with --eval-only, got {args.eval_episodes}")
    if args.cudagraphs and not (args.compile and args.cuda):
        raise ConfigError("--cudagraphs needs --compile and --cuda: CUDA graphs run on a GPU")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise ConfigError(
            f"the batch (num_envs * num_steps = {batch_size}) does not divide into {args.num_minibatches} minibatches"
        )
    if args.total_timesteps < batch_size:
        raise ConfigError(
            f"--total-timesteps {args.total_timesteps} is less than one batch (num_envs * num_steps = {batch_size})"
        )
    if args.embed_dim % args.num_heads != 0:
        raise ConfigError(f"--embed-dim {args.embed_dim} does not divide into {args.num_heads} attention heads")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_env(env_id: str, mask_velocity: bool = False) -> None:
    """Build the environment once and refuse, in one line, what this script cannot train."""
    if mask_velocity and env_id not in VELOCITY_COMPONENTS:
        known = ", ".join(VELOCITY_COMPONENTS)
        raise ConfigError(f"--mask-velocity knows the velocity components of {known} only, not of {env_id}")
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"environment {env_id!r} needs a package that is missing: {e}") from None
    except (gym.error.Error, ModuleNotFoundError, ImportError) as e:
        raise ConfigError(f"unknown environment id {env_id!r}: {e}") from None
    action_space, space = env.action_space, env.observation_space
    env.close()
    if isinstance(action_space, gym.spaces.Box):
        raise ConfigError(f"{env_id} has a continuous (Box) action space; use ppo_continuous.py or sac.py")
    if not isinstance(action_space, gym.spaces.Discrete) or action_space.start != 0:
        raise ConfigError(f"{env_id} has action space {action_space}; this script needs Discrete(n)")
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


def maybe_compile(fn, args: Args):
    """fn itself, or with --compile fn through torch.compile: traced once into a graph of fused kernels. --cudagraphs
    adds "reduce-overhead" mode, which replays the kernels of a call as one CUDA graph, one launch instead of hundreds
    (the policy's noise must still differ from replay to replay: the GPU tests check it)."""
    if not args.compile:
        return fn
    if not args.cudagraphs:
        return torch.compile(fn)
    graphed = torch.compile(fn, mode="reduce-overhead")

    def copied(*inputs):
        # A replay writes its outputs into memory that a later replay reuses: hand back copies, which the training loop
        # may keep (the losses for the logs, the ratios for the KL).
        out = graphed(*inputs)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()

    return copied


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
    # Files of an earlier version may hold settings this one no longer has.
    removed = dict(gated=False, separate_critic=True, clip_each_network=True, lr_schedule_steps=0)  # as it runs
    changed = {k: v for k, v in data["args"].items() if k not in Args.__dataclass_fields__ and removed.get(k) != v}
    if changed:
        raise ConfigError(f"{path} was saved with settings that this version no longer has: {changed}")
    data["args"] = {k: v for k, v in data["args"].items() if k in Args.__dataclass_fields__}
    return data


def load_settings(args: Args) -> tuple:
    """The settings of the run, checked: a resumed run takes them from its checkpoint, and only
    how it is run (device, progress, W&B) may change. Returns (args, checkpoint or None)."""
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_file(args.resume, ("model", "optimizer", "args", "global_step", "iteration"))
        saved = Args(**checkpoint["args"])
        saved.resume, saved.cuda, saved.progress, saved.track = args.resume, args.cuda, args.progress, args.track
        args = saved
    validate(args)
    check_env(args.env_id, args.mask_velocity)
    return args, checkpoint


def restore(args: Args, checkpoint: Optional[dict], agent: Agent, optimizer, device) -> tuple:
    """Load a checkpoint's weights, optimizer and RNG state; returns (global_step, first iteration): (0, 1) if new."""
    if checkpoint is None:
        return 0, 1
    agent.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["torch_rng_state"])
    if device.type == "cuda" and "cuda_rng_state" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
    print(f"resumed from {args.resume} at step {checkpoint['global_step']}")
    return checkpoint["global_step"], checkpoint["iteration"] + 1


def save(run_dir: str, filename: str, args: Args, agent: Agent, global_step: int, **resume_state) -> str:
    """model.pt: the weights with the observation statistics, the args and the step, all that `evaluate` needs.
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
    """Rebuild a model.pt's Agent, weights and observation statistics, for env_id (default: the one it trained on)."""
    data = load_file(model_path, ("model", "args"))
    saved = Args(**data["args"])
    env_id = env_id or saved.env_id
    check_env(env_id, saved.mask_velocity)
    device = select_device(cuda, saved.torch_threads)
    env = make_env(env_id, 0, False, "", saved.mask_velocity)()
    agent = Agent(int(np.prod(env.observation_space.shape)), int(env.action_space.n), saved).to(device)
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
        config = dict(sync_tensorboard=True, config=asdict(args), name=os.path.basename(run_dir), save_code=True)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, **config)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    return run_dir, writer


def finish_run(args: Args, run_dir: str, writer: SummaryWriter, agent: Agent, device: torch.device) -> list:
    """Play --eval-episodes greedy episodes (logged as eval/episodic_return), then close the logs and W&B."""
    eval_returns = []
    if args.eval_episodes > 0:
        video_dir = os.path.join(run_dir, "videos-eval") if args.capture_video else None
        episodes, seed = args.eval_episodes, first_eval_seed(args)
        eval_returns = play(agent, args.env_id, episodes, seed, device, video_dir, args.progress, args.mask_velocity)
        for i, eval_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", eval_return, i)
        print_eval(eval_returns, "greedy episodes")
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


def main() -> None:
    """The command line: train, or with --eval-only evaluate a saved model; a ConfigError ends in one line."""
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
    except ConfigError as e:
        print(f"{os.path.basename(__file__)}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
