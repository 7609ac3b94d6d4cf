"""How close to the machine's arithmetic limit are the updates of the scripts, and where does
the rest of their time go?

    python benchmarks/flops.py              # all; run it on an otherwise idle machine
    python benchmarks/flops.py --threads 2

For one minibatch step of each script's update, built from the script's own network and loss
functions on a fixed random batch of the default size (ppo_atari.py: 256 frames, the Nature CNN,
its clipped losses; sac.py: 256 transitions, the critic, actor and temperature steps;
ppo_transformer.py: 256 windows of 16 on CartPole-v1 with its velocities hidden, through its two
transformers, and ppo_discrete.py's MLPs on the same 256 steps, the
transformer's speed comparison), it
1. records every matrix multiplication and convolution the step runs, forward and backward,
   with their shapes, and counts their FLOPs (torch's own FlopCounterMode) and all the torch
   operations the step dispatches (each costs some microseconds however small its tensors);
2. times the whole step in a tight loop: the achieved FLOP rate;
3. times each recorded operation alone, on tensors of the same shapes, in a tight loop: the time
   torch itself needs for the same arithmetic, and the rate it reaches;
and prints the fraction of the step's time that this arithmetic at torch's own speed accounts
for, plus where the rest goes (torch's profiler, by operator). Results go to
benchmarks/results/flops.md.
"""

import argparse
import importlib.util
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"mm", "addmm", "bmm", "convolution", "convolution_backward"}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"flops_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ppo_loss_step(script, agent, args, *batch):
    """One step of a PPO script's update: its own ppo_loss on the batch, the gradient clipped,
    one Adam step (fused, as in the scripts)."""
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)

    def step():
        loss = script.ppo_loss(agent, *batch, args)[0]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()

    return step


def atari_step():
    """One minibatch step of ppo_atari.py's update, with its defaults (256 of 8 x 128 frames)."""
    atari = load("ppo_atari")
    args = atari.Args()
    torch.manual_seed(0)
    agent = atari.Agent(args.frame_stack, 4)
    n = args.num_envs * args.num_steps // args.num_minibatches
    obs = torch.randint(0, 256, (n, args.frame_stack, 84, 84), dtype=torch.uint8)
    actions, old_logprobs = torch.randint(0, 4, (n,)), torch.randn(n) - 1.4
    old_values, advantages, returns = torch.randn(n), torch.randn(n), torch.randn(n)
    return ppo_loss_step(atari, agent, args, obs, actions, old_logprobs, advantages, old_values, returns)


def ppo_batch(n: int) -> tuple:
    """Actions, old log-probabilities, advantages, old values and returns of n steps, 2 actions."""
    return torch.randint(0, 2, (n,)), torch.randn(n) - 0.7, *torch.randn(3, n)


def transformer_step():
    """One epoch of ppo_transformer.py's update with its defaults: one minibatch of 8 envs x 32
    steps, each step's window of K = 16 cut from the rollout, on CartPole-v1's two observations
    left by --mask-velocity."""
    transformer = load("ppo_transformer")
    args = transformer.Args()
    torch.manual_seed(0)
    context_len, steps, envs = args.context_len, args.num_steps, args.num_envs
    history = torch.randn(context_len - 1 + steps, envs, 2)
    episode_starts = torch.randint(0, context_len, (steps, envs))  # rows: each step's is K-1+t
    windows, masks = transformer.episode_windows(history, episode_starts, context_len)
    windows = windows.reshape(-1, context_len, 2).contiguous()  # as train() stores them
    actions, old_logprobs, advantages, old_values, returns = ppo_batch(steps * envs)
    return ppo_loss_step(
        transformer,
        transformer.Agent(2, 2, args),
        args,
        windows,
        masks.flatten(0, 1),
        actions,
        old_logprobs,
        advantages,
        old_values,
        returns,
    )


def discrete_step():
    """The same epoch in ppo_discrete.py (its MLPs, observation normalization on): 256 steps of
    CartPole-v1 with its velocities hidden."""
    discrete = load("ppo_discrete")
    args = discrete.Args(norm_obs=True)
    torch.manual_seed(0)
    n = 256  # the transformer's 8 envs x 32 steps
    actions, old_logprobs, advantages, old_values, returns = ppo_batch(n)
    return ppo_loss_step(
        discrete,
        discrete.Agent(2, 2, args),
        args,
        torch.randn(n, 2),
        actions,
        old_logprobs,
        advantages,
        old_values,
        returns,
    )


def sac_step():
    """One update of sac.py on HalfCheetah's sizes (17 observations, 6 actions), batch 256: the
    critic step, then the actor and temperature steps (policy_frequency 2, so twice every other
    update: here once, as the average), and the Polyak update."""
    sac = load("sac")
    args = sac.Args()
    torch.manual_seed(0)
    obs_dim, act_dim, n = 17, 6, args.batch_size
    low, high = -np.ones(act_dim), np.ones(act_dim)
    actor = sac.Actor(obs_dim, low, high, args.hidden_size)
    qf1, qf2, qf1_t, qf2_t = (sac.SoftQNetwork(obs_dim, act_dim, args.hidden_size) for _ in "1234")
    q_params = list(qf1.parameters()) + list(qf2.parameters())
    q_opt = torch.optim.Adam(q_params, lr=args.q_lr, fused=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=args.q_lr, fused=True)
    obs, next_obs = torch.randn(n, obs_dim), torch.randn(n, obs_dim)
    actions, rewards, terms = torch.rand(n, act_dim) * 2 - 1, torch.randn(n), torch.zeros(n)

    def step():
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            next_a, next_logp = actor.get_action(next_obs)
            next_q1, next_q2 = qf1_t(next_obs, next_a), qf2_t(next_obs, next_a)
            target = sac.soft_q_target(rewards, terms, next_q1, next_q2, next_logp, alpha, args.gamma)
        qf_loss = F.mse_loss(qf1(obs, actions), target) + F.mse_loss(qf2(obs, actions), target)
        q_opt.zero_grad()
        qf_loss.backward()
        q_opt.step()
        for p in q_params:
            p.requires_grad_(False)
        pi, log_pi = actor.get_action(obs)
        actor_loss = (alpha * log_pi - torch.min(qf1(obs, pi), qf2(obs, pi))).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        alpha_loss = (-log_alpha.exp() * (log_pi.detach() - act_dim)).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        for p in q_params:
            p.requires_grad_(True)
        sac.polyak_update(qf1.parameters(), qf1_t.parameters(), args.tau)
        sac.polyak_update(qf2.parameters(), qf2_t.parameters(), args.tau)

    return step


class RecordHeavy(TorchDispatchMode):
    """Records every matmul and convolution (name, arguments with tensors as their shapes)."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.operations = 0  # every operation dispatched, heavy or not

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.operations += 1
        name = func.overloadpacket.__name__
        if name in HEAVY:
            spec = [("tensor", a.shape, a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
            self.calls.append((func, spec))
        return func(*args, **(kwargs or {}))


def seconds_per_call(fn, min_time: float = 1.0) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def measure(name: str, make_step) -> dict:
    step = make_step()
    step()  # warm up (optimizer state, allocator)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    recorder = RecordHeavy()
    with recorder:
        step()
    step_seconds = seconds_per_call(step, 3.0)
    # The same matmuls and convolutions alone: each distinct call timed in a tight loop.
    alone = 0.0
    for (func, spec), count in Counter((f, repr(s)) for f, s in recorder.calls).items():
        spec = next(s for f, s in recorder.calls if f is func and repr(s) == spec)
        args = [torch.randn(a[1]).to(a[2]) if isinstance(a, tuple) and a and a[0] == "tensor" else a for a in spec]
        alone += count * seconds_per_call(lambda func=func, args=args: func(*args), 0.3)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    by_op = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in by_op)
    top = [(e.key, e.self_cpu_time_total / total) for e in by_op[:8]]
    return {
        "name": name,
        "gflop": flops / 1e9,
        "step_ms": step_seconds * 1e3,
        "achieved": flops / step_seconds / 1e9,
        "alone_ms": alone * 1e3,
        "reference": flops / alone / 1e9,
        "fraction": alone / step_seconds,
        "operations": recorder.operations,
        "top": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln]
        cpu = names[0] if names else cpu
    lines = [
        f"torch {torch.__version__}, {cpu}, {args.threads} thread(s)",
        "",
        "| update step | GFLOP | step ms | achieved GFLOP/s | same matmuls alone, ms | "
        "torch's GFLOP/s on them | fraction | torch operations |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    results = [
        measure("ppo_atari.py minibatch", atari_step),
        measure("sac.py update", sac_step),
        measure("ppo_transformer.py epoch", transformer_step),
        measure("ppo_discrete.py epoch", discrete_step),
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['gflop']:.3f} | {r['step_ms']:.2f} | {r['achieved']:.1f} | "
            f"{r['alone_ms']:.2f} | {r['reference']:.1f} | {r['fraction']:.0%} | "
            f"{r['operations']} |"
        )
    for r in results:
        where = ", ".join(f"{key} {share:.0%}" for key, share in r["top"])
        lines += ["", f"{r['name']}, self time by operator: {where}"]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "flops.md").write_text(text)


if __name__ == "__main__":
    main()
