"""Benchmark runner: experiments x seeds as separate processes, resumable, one CSV, plots.

    python benchmarks/run.py --list
    python benchmarks/run.py cartpole lunarlander acrobot --seeds 1 2 3 --jobs 2
    python benchmarks/run.py cartpole-speed cleanrl-speed cleanrl-speed-1thread --seeds 1 2 3 \
        --jobs 1 --baseline cleanrl-speed=/path/to/cleanrl/ppo.py \
        --baseline cleanrl-speed-1thread=/path/to/cleanrl/ppo.py

Each (experiment, seed) runs in `benchmarks/runs/<experiment>/seed<S>/` with its log; a
`done.json` there marks it finished, so a stopped benchmark carries on where it was (a run whose
flags or script have changed since is run again). Then the TensorBoard events of every finished
run are merged, by experiment and seed, into:
    benchmarks/results/curves.csv    mean training return per step bin, per run
    benchmarks/results/summary.csv   per run: final evaluation, last 20 and 100 training returns,
                                     steps/s, and what it ran on (script commit, torch, CPU, GPU)
    benchmarks/results/summary.md    mean +- std over seeds of every experiment
    benchmarks/results/<experiment>.png  learning curves, mean and range over seeds
A seed run here replaces its old results; the committed results of other seeds stay.
Speed is only comparable between runs of one invocation with --jobs 1.
"""

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs"
RESULTS = ROOT / "benchmarks" / "results"

# Each experiment: the script, its flags, the step budget, and optionally `plot_with`: other
# experiments whose curves its plot shows too, and `published`: other projects' values drawn
# on its plot as markers, [(label naming the source, [(step, value), ...]), ...]. A `baseline`
# experiment runs a script the user points to with --baseline NAME=PATH (never committed
# here), with the same command-line conventions (`--seed`, `--total-timesteps`, writes
# `runs/<run>/` in its cwd). `torchrun: N` launches the script on N processes with torchrun.
CLEANRL_SETTINGS = (
    "--num-envs 4 --num-steps 128 --update-epochs 4 --num-minibatches 4 --learning-rate 2.5e-4 "
    "--gamma 0.99 --gae-lambda 0.95 --ent-coef 0.01 --clip-vloss"
).split()
# The transformer's former PPO settings, on both sides of its speed comparison (every epoch
# runs: no KL limit).
TRANSFORMER_SPEED_SETTINGS = "--num-envs 8 --num-steps 32 --num-minibatches 1 --update-epochs 20".split()
# ppo_transformer.py's runs made before its value had a transformer of its own (commit 708ddbb):
# one transformer shared by the policy and the value.
SHARED_TRANSFORMER = ["--no-separate-critic"]
# ppo_transformer.py's runs made before its defaults clipped the policy's gradient and the value's
# each to 0.35 (--clip-each-network --max-grad-norm 0.35): one clip of all gradients together to
# 0.5. The *-clip-each-035 runs were made with the two flags before they became the defaults.
GLOBAL_CLIP = ["--no-clip-each-network", "--max-grad-norm", "0.5"]
# Speed runs skip the evaluation and the model file: steps/s is what they measure.
SPEED_FLAGS = ["--eval-episodes", "0", "--no-save-model"]
EXPERIMENTS = {
    "cartpole": {
        "script": "ppo_discrete.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": [],
    },
    "lunarlander": {
        "script": "ppo_discrete.py",
        "env_id": "LunarLander-v3",
        "steps": 500_000,
        "flags": (
            "--num-envs 16 --num-steps 128 --num-minibatches 32 --update-epochs 10 "
            "--learning-rate 3e-4 "
            "--gamma 0.999 --gae-lambda 0.98 --ent-coef 0.01"
        ).split(),
    },
    "acrobot": {
        "script": "ppo_discrete.py",
        "env_id": "Acrobot-v1",
        "steps": 500_000,
        "flags": (
            "--num-envs 16 --num-steps 256 --num-minibatches 16 --update-epochs 4 "
            "--learning-rate 5e-4 "
            "--gamma 0.99 --gae-lambda 0.94 --ent-coef 0.0 --norm-obs --norm-reward"
        ).split(),
    },
    "pendulum": {
        "script": "ppo_continuous.py",
        "env_id": "Pendulum-v1",
        "steps": 200_000,
        "flags": (
            "--num-envs 4 --num-steps 1024 --num-minibatches 16 --gamma 0.9 --learning-rate 1e-3 --init-log-std 0"
        ).split(),
    },
    "halfcheetah": {
        "script": "ppo_continuous.py",
        "env_id": "HalfCheetah-v4",
        "steps": 1_000_000,
        "flags": [],
    },
    # The MuJoCo table at 1M steps with the defaults, beside the published PPO figures at 1M:
    # CleanRL ppo_continuous_action (its docs, v4, mean of the last training episodes over seeds),
    # RL Zoo (benchmark.md, one tuned run, deterministic evaluation, v3), Tianshou (its MuJoCo
    # table, 10 seeds, v3).
    "hopper": {
        "script": "ppo_continuous.py",
        "env_id": "Hopper-v4",
        "steps": 1_000_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v4)", [(1_000_000, 2382.86)]),
            ("RL Zoo, eval (v3)", [(1_000_000, 2410.4)]),
            ("Tianshou (v3)", [(1_000_000, 2609.3)]),
        ],
    },
    "walker2d": {
        "script": "ppo_continuous.py",
        "env_id": "Walker2d-v4",
        "steps": 1_000_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v4)", [(1_000_000, 2287.95)]),
            ("RL Zoo, eval (v3)", [(1_000_000, 3478.8)]),
            ("Tianshou (v3)", [(1_000_000, 3588.5)]),
        ],
    },
    "ant": {
        "script": "ppo_continuous.py",
        "env_id": "Ant-v4",
        "steps": 1_000_000,
        "flags": [],
        "published": [
            ("RL Zoo, eval (v3)", [(1_000_000, 1327.2)]),
            ("Tianshou (v3)", [(1_000_000, 3258.4)]),
        ],
    },
    "humanoid": {
        "script": "ppo_continuous.py",
        "env_id": "Humanoid-v4",
        "steps": 1_000_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v4)", [(1_000_000, 716.11)]),
            ("Tianshou (v3)", [(1_000_000, 787.1)]),
        ],
    },
    "invertedpendulum": {
        "script": "ppo_continuous.py",
        "env_id": "InvertedPendulum-v4",
        "steps": 1_000_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v4)", [(1_000_000, 963.09)]),
        ],
    },
    "pusher": {
        "script": "ppo_continuous.py",
        "env_id": "Pusher-v4",
        "steps": 1_000_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v4)", [(1_000_000, -40.38)]),
        ],
    },
    "bipedalwalker": {
        "script": "ppo_continuous.py",
        "env_id": "BipedalWalker-v3",
        "steps": 2_000_000,
        "flags": [],
    },
    # The best trial of benchmarks/studies/bipedalwalker.yaml (trial 20: 216 at 500k steps, seed
    # 11), its values rounded to 4 digits, at the 2M steps its learning-rate schedule was set for.
    "bipedalwalker-tuned": {
        "script": "ppo_continuous.py",
        "env_id": "BipedalWalker-v3",
        "steps": 2_000_000,
        "flags": (
            "--num-envs 16 --num-steps 512 --num-minibatches 32 --update-epochs 7 "
            "--learning-rate 5.090e-4 --gamma 0.9923 --gae-lambda 0.9528 --clip-coef 0.2154 "
            "--ent-coef 0.0 --init-log-std -0.06105"
        ).split(),
        "plot_with": ["bipedalwalker"],
    },
    # The study's second best (trial 16: 215 at 500k), to see whether the ranking at 500k holds
    # at 2M: fewer epochs (5), lower gamma (0.9867) and a lower initial std (log -0.264).
    "bipedalwalker-trial16": {
        "script": "ppo_continuous.py",
        "env_id": "BipedalWalker-v3",
        "steps": 2_000_000,
        "flags": (
            "--num-envs 16 --num-steps 512 --num-minibatches 32 --update-epochs 5 "
            "--learning-rate 4.938e-4 --gamma 0.9867 --gae-lambda 0.9559 --clip-coef 0.2146 "
            "--ent-coef 0.0 --init-log-std -0.2643"
        ).split(),
        "plot_with": ["bipedalwalker-tuned"],
    },
    # RL Zoo's tuned HalfCheetah settings (hyperparams/ppo.yml). Its vf_coef 0.58 multiplies
    # SB3's value loss, a plain MSE; ours has a factor 1/2, hence 1.16.
    "halfcheetah-zoo": {
        "script": "ppo_continuous.py",
        "env_id": "HalfCheetah-v4",
        "steps": 1_000_000,
        "flags": (
            "--num-envs 1 --num-steps 512 --num-minibatches 8 --update-epochs 20 "
            "--learning-rate 2.0633e-5 "
            "--no-anneal-lr --gamma 0.98 --gae-lambda 0.92 --clip-coef 0.1 --ent-coef 0.000401762 "
            "--vf-coef 1.16192 --max-grad-norm 0.8 --init-log-std -2 --hidden-size 256 "
            "--activation relu "
            "--no-ortho-init"
        ).split(),
    },
    "sac-pendulum": {"script": "sac.py", "env_id": "Pendulum-v1", "steps": 20_000, "flags": []},
    # HalfCheetah's target is 1M steps on a GPU; on 2 CPU cores, the first 100k (95k updates).
    "sac-halfcheetah-cpu": {
        "script": "sac.py",
        "env_id": "HalfCheetah-v4",
        "steps": 100_000,
        "flags": [],
    },
    # 300k steps on CPU, the budget where other projects publish curves (read off their plots,
    # "~"; Tianshou's are its stated means over 10 seeds). HalfCheetah v2/v3 and v4 share dynamics.
    "sac-halfcheetah-300k": {
        "script": "sac.py",
        "env_id": "HalfCheetah-v4",
        "steps": 300_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v2, ~)", [(100_000, 5400), (300_000, 7900)]),
            ("RL Zoo, training (v3)", [(100_000, 2138), (300_000, 6595)]),
            ("RL Zoo, eval (v3)", [(100_000, 4989), (300_000, 7250)]),
            ("Tianshou, eval (v3)", [(100_000, 6515), (300_000, 9059)]),
        ],
    },
    "sac-hopper-300k": {
        "script": "sac.py",
        "env_id": "Hopper-v4",
        "steps": 300_000,
        "flags": [],
        "published": [
            ("CleanRL, training (v2, ~)", [(300_000, 2340)]),
            ("RL Zoo, training (v3)", [(300_000, 1409)]),
            ("RL Zoo, eval (v3)", [(300_000, 1939)]),
            ("Tianshou, eval (v3)", [(300_000, 3388)]),
        ],
    },
    # ppo_transformer.py with CartPole-v1's velocities hidden and its defaults (learning rate
    # 1e-3, KL limit 0.02 per update), at the default budget and at 500k; and the former
    # defaults (2e-3, no KL limit), which collapsed in one seed of three before the update's
    # normalization was fixed, rerun with the fix.
    "transformer-novel": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity"],
        "published": [("RL Zoo RecurrentPPO (LSTM), eval", [(100_000, 500)])],
    },
    "transformer-novel-500k": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 500_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity"],
        "plot_with": ["transformer-cartpole-novel-k1"],
        "published": [("RL Zoo RecurrentPPO (LSTM), eval", [(100_000, 500)])],
    },
    # The same at half the default learning rate. The schedule decays the rate to 0 over the
    # budget: with the default, a 500k run spends its first 100k steps between 1e-3 and 8e-4,
    # where a 100k run decays from 1e-3 to 0.
    "transformer-novel-500k-lr5e-4": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 500_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity", "--learning-rate", "5e-4"],
        "plot_with": ["transformer-novel-500k"],
    },
    # The former defaults with --clip-each-network at the former limit: the policy's gradient and
    # the value's each clipped to 0.5, so that a large value gradient never shrinks the policy's.
    "transformer-novel-clip-each": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": ["--mask-velocity", "--clip-each-network", "--max-grad-norm", "0.5"],
        "plot_with": ["transformer-novel"],
    },
    "transformer-novel-500k-clip-each": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 500_000,
        "flags": ["--mask-velocity", "--clip-each-network", "--max-grad-norm", "0.5"],
        "plot_with": ["transformer-novel-500k"],
    },
    # --clip-each-network with each network's gradient clipped to 0.35, so that the two together
    # stay within the usual 0.5 (sqrt(2) * 0.35): the defaults since these runs.
    "transformer-novel-clip-each-035": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": ["--mask-velocity", "--clip-each-network", "--max-grad-norm", "0.35"],
        "plot_with": ["transformer-novel"],
    },
    "transformer-novel-500k-clip-each-035": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 500_000,
        "flags": ["--mask-velocity", "--clip-each-network", "--max-grad-norm", "0.35"],
        "plot_with": ["transformer-novel-500k"],
    },
    "transformer-former-defaults-200k": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 200_000,
        "flags": [
            *GLOBAL_CLIP,
            *SHARED_TRANSFORMER,
            *"--mask-velocity --learning-rate 2e-3 --target-kl None".split(),
        ],
        "plot_with": ["transformer-cartpole-novel"],
    },
    # The best trial of benchmarks/studies/transformer-novel.yaml (seeds 11, 12), on seeds 1-5.
    "transformer-tuned": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": [
            *GLOBAL_CLIP,
            *SHARED_TRANSFORMER,
            *"--mask-velocity --learning-rate 0.0028242338229529777 --target-kl 0.05".split(),
            *"--update-epochs 11 --num-minibatches 1 --num-steps 64".split(),
            *"--gamma 0.9686597872995736 --gae-lambda 0.8476200101788329 --ent-coef 0.0".split(),
        ],
        "plot_with": ["transformer-novel"],
        "published": [("RL Zoo RecurrentPPO (LSTM), eval", [(100_000, 500)])],
    },
    "transformer-former-defaults": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": [
            *GLOBAL_CLIP,
            *SHARED_TRANSFORMER,
            *"--mask-velocity --learning-rate 2e-3 --target-kl None".split(),
        ],
        "plot_with": ["transformer-novel"],
        "published": [("RL Zoo RecurrentPPO (LSTM), eval", [(100_000, 500)])],
    },
    # Memory beyond CartPole: POPGym's card games (`pip install popgym`; Discrete observations,
    # flattened). RepeatFirst: answer the episode's first card at each of its 52 steps; with a
    # window of 64 the first card is always in it, with the default 16 it leaves after 16 steps.
    "popgym-repeatfirst-k64": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-RepeatFirstEasy-v0",
        "steps": 300_000,
        "flags": [*GLOBAL_CLIP, *SHARED_TRANSFORMER, "--context-len", "64"],
        "plot_with": ["popgym-repeatfirst-k16"],
    },
    # The same, 1M steps: is RepeatFirst's rise at 300k steps on its way to a solved task?
    "popgym-repeatfirst-k64-1m": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-RepeatFirstEasy-v0",
        "steps": 1_000_000,
        "flags": [*GLOBAL_CLIP, *SHARED_TRANSFORMER, "--context-len", "64"],
    },
    # The same with positions counted from the window's oldest observation of the episode too
    # (--position-from-start): the first card is then at one fixed position while it is in the
    # window. With K = 16 it leaves the window after 16 steps, and nothing recalls it.
    "popgym-repeatfirst-k64-start": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-RepeatFirstEasy-v0",
        "steps": 150_000,
        "flags": ["--context-len", "64", "--position-from-start"],
        "plot_with": ["popgym-repeatfirst-k16-start"],
    },
    "popgym-repeatfirst-k16-start": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-RepeatFirstEasy-v0",
        "steps": 300_000,
        "flags": ["--context-len", "16", "--position-from-start"],
    },
    "popgym-repeatfirst-k16": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-RepeatFirstEasy-v0",
        "steps": 300_000,
        "flags": [*GLOBAL_CLIP, *SHARED_TRANSFORMER, "--context-len", "16"],
    },
    "popgym-countrecall-k64": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-CountRecallEasy-v0",
        "steps": 300_000,
        "flags": ["--context-len", "64"],
        "plot_with": ["popgym-countrecall-k1"],
    },
    # The same agent without memory (a window of the current observation only): the baseline.
    "popgym-countrecall-k1": {
        "script": "ppo_transformer.py",
        "env_id": "popgym:popgym-CountRecallEasy-v0",
        "steps": 300_000,
        "flags": ["--context-len", "1"],
    },
    # ppo_transformer.py with CartPole-v1's velocities hidden, plotted with the same agent without
    # memory (a window of one observation) and with GTrXL's gates; plain CartPole-v1 with
    # ppo_discrete.
    "transformer-cartpole-novel": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 200_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity"],
        "plot_with": ["transformer-cartpole-novel-k1", "transformer-cartpole-novel-gated"],
    },
    "transformer-cartpole-novel-k1": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 200_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity", "--context-len", "1"],
    },
    "transformer-cartpole-novel-gated": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 200_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity", "--gated"],
    },
    # The budget, 500k steps, at half the default learning rate: at 2e-3, 1 seed of 3
    # collapsed to one action at 200k.
    "transformer-cartpole-novel-500k": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 500_000,
        "flags": [*GLOBAL_CLIP, "--mask-velocity", "--learning-rate", "1e-3"],
        "plot_with": ["transformer-cartpole-novel-k1"],
    },
    "transformer-cartpole": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": [*GLOBAL_CLIP],
        "plot_with": ["cartpole"],
    },
    # The Atari target is 10M agent steps (40M frames) on a GPU; on 2 CPU cores, a first stretch.
    "breakout": {
        "script": "ppo_atari.py",
        "env_id": "BreakoutNoFrameskip-v4",
        "steps": 10_000_000,
        "flags": ["--cuda"],
    },
    # 1M agent steps on CPU, of the 10M schedule that the defaults and the peers run (their
    # values at 1M are read off 10M runs, whose learning rate had barely begun to decay).
    "breakout-1m": {
        "script": "ppo_atari.py",
        "env_id": "BreakoutNoFrameskip-v4",
        "steps": 1_000_000,
        "flags": ["--lr-schedule-steps", "10000000", "--torch-threads", "1", "--env-threads", "1"],
        "published": [
            ("CleanRL, training (~)", [(1_000_000, 19)]),
            ("RL Zoo, training", [(1_000_000, 25.7)]),
            ("openai/baselines ppo2 (~)", [(1_000_000, 25)]),
        ],
    },
    "breakout-cpu": {
        "script": "ppo_atari.py",
        "env_id": "BreakoutNoFrameskip-v4",
        "steps": 300_000,
        "flags": ["--eval-episodes", "5", "--torch-threads", "1", "--env-threads", "1"],
    },
    "cartpole-speed": {
        "script": "ppo_discrete.py",
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": CLEANRL_SETTINGS + SPEED_FLAGS,
    },
    # Speed on pixels: the Atari defaults (8 envs x 128 steps, 4 epochs, 4 minibatches) on both
    # sides.
    "atari-speed": {
        "script": "ppo_atari.py",
        "env_id": "BreakoutNoFrameskip-v4",
        "steps": 20_480,
        "flags": SPEED_FLAGS,
    },
    # The same, data-parallel on 2 processes under torchrun (gloo).
    "atari-speed-2proc": {
        "script": "ppo_atari.py",
        "env_id": "BreakoutNoFrameskip-v4",
        "steps": 20_480,
        "flags": SPEED_FLAGS,
        "torchrun": 2,
    },
    "cleanrl-atari-speed": {
        "baseline": True,
        "env_id": "BreakoutNoFrameskip-v4",
        "steps": 20_480,
        "flags": [],
    },
    # Continuous control at CleanRL's settings, which are sac.py's defaults and ppo_continuous.py's
    # but for the initial log std (CleanRL's 0 is passed): PPO 1 env x 2048 steps, 10 epochs,
    # 32 minibatches; SAC 256x256 networks, batch 256, 5k random steps then one update per step
    # (here 5k updates).
    "halfcheetah-speed": {
        "script": "ppo_continuous.py",
        "env_id": "HalfCheetah-v4",
        "steps": 20_480,
        "flags": [*SPEED_FLAGS, "--init-log-std", "0"],
    },
    "cleanrl-halfcheetah-speed": {
        "baseline": True,
        "env_id": "HalfCheetah-v4",
        "steps": 20_480,
        "flags": [],
    },
    "sac-speed": {
        "script": "sac.py",
        "env_id": "HalfCheetah-v4",
        "steps": 10_000,
        "flags": SPEED_FLAGS,
    },
    # What --compile does on a CPU, eager and compiled in one invocation (--jobs 1): SAC past its
    # 5k random steps (15k updates, the compilation's seconds included), and PPO with
    # halfcheetah-speed's settings (benchmarks/steady_speed.py: the speed after compilation).
    "sac-speed-20k": {
        "script": "sac.py",
        "env_id": "HalfCheetah-v4",
        "steps": 20_000,
        "flags": SPEED_FLAGS,
    },
    "sac-speed-20k-compile": {
        "script": "sac.py",
        "env_id": "HalfCheetah-v4",
        "steps": 20_000,
        "flags": [*SPEED_FLAGS, "--compile"],
    },
    "halfcheetah-speed-eager": {
        "script": "ppo_continuous.py",
        "env_id": "HalfCheetah-v4",
        "steps": 20_480,
        "flags": [*SPEED_FLAGS, "--init-log-std", "0"],
    },
    "halfcheetah-speed-compile": {
        "script": "ppo_continuous.py",
        "env_id": "HalfCheetah-v4",
        "steps": 20_480,
        "flags": [*SPEED_FLAGS, "--init-log-std", "0", "--compile"],
    },
    # sac.py runs one torch thread by default; CleanRL's script uses torch's default (every core).
    "sac-speed-2threads": {
        "script": "sac.py",
        "env_id": "HalfCheetah-v4",
        "steps": 10_000,
        "flags": [*SPEED_FLAGS, "--torch-threads", "2"],
    },
    "cleanrl-sac-speed": {
        "baseline": True,
        "env_id": "HalfCheetah-v4",
        "steps": 10_000,
        "flags": [],
    },
    # ppo_transformer.py against ppo_discrete.py with the same PPO settings (the transformer's
    # defaults): what the window and the attention cost per step.
    "transformer-speed": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 50_176,
        "flags": [*TRANSFORMER_SPEED_SETTINGS, "--target-kl", "None", *SPEED_FLAGS],
    },
    # The same through torch.compile (the minibatch loss and the acting pass).
    "transformer-speed-compile": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 50_176,
        "flags": [*TRANSFORMER_SPEED_SETTINGS, "--target-kl", "None", "--compile", *SPEED_FLAGS],
    },
    # The same with one transformer for the policy and the value (--no-separate-critic).
    "transformer-speed-shared": {
        "script": "ppo_transformer.py",
        "env_id": "CartPole-v1",
        "steps": 50_176,
        "flags": [
            *TRANSFORMER_SPEED_SETTINGS,
            "--target-kl",
            "None",
            *SHARED_TRANSFORMER,
            *SPEED_FLAGS,
        ],
    },
    "transformer-speed-discrete": {
        "script": "ppo_discrete.py",
        "env_id": "CartPole-v1",
        "steps": 50_176,
        "flags": [*TRANSFORMER_SPEED_SETTINGS, "--norm-obs", *SPEED_FLAGS],
    },
    "cleanrl-speed": {"baseline": True, "env_id": "CartPole-v1", "steps": 100_000, "flags": []},
    # The same baseline limited to one torch thread, as our scripts run by default on CPU.
    "cleanrl-speed-1thread": {
        "baseline": True,
        "env_id": "CartPole-v1",
        "steps": 100_000,
        "flags": [],
        "env": {"OMP_NUM_THREADS": "1"},
    },
    # A3C: defaults with 2 workers (one per core here); Pendulum with a preset of flags.
    "a3c-cartpole": {
        "script": "a3c.py",
        "env_id": "CartPole-v1",
        "steps": 500_000,
        "flags": ["--num-workers", "2"],
    },
    "a3c-pendulum": {
        "script": "a3c.py",
        "env_id": "Pendulum-v1",
        "steps": 500_000,
        "flags": (
            "--num-workers 2 --num-steps 32 --learning-rate 3e-3 --gamma 0.9 --gae-lambda 0.95 "
            "--ent-coef 0.0 "
            "--norm-adv --reward-scale 0.1 --max-grad-norm 5"
        ).split(),
    },
    # How A3C's throughput scales with its worker processes: the same run with 1 and with 2.
    "a3c-speed-1worker": {
        "script": "a3c.py",
        "env_id": "CartPole-v1",
        "steps": 200_000,
        "flags": ["--num-workers", "1", *SPEED_FLAGS],
    },
    "a3c-speed-2workers": {
        "script": "a3c.py",
        "env_id": "CartPole-v1",
        "steps": 200_000,
        "flags": ["--num-workers", "2", *SPEED_FLAGS],
    },
}


# Against the collapse of one seed at 500k (its entropy falls to 0 after large updates): a limit
# on each update's KL, or an entropy bonus.
for _name, _extra in (("kl", ["--target-kl", "0.02"]), ("ent", ["--ent-coef", "0.01"])):
    _base = EXPERIMENTS["transformer-cartpole-novel-500k"]
    EXPERIMENTS[f"transformer-cartpole-novel-500k-{_name}"] = {
        **_base,
        "flags": [*_base["flags"], *_extra],
        "plot_with": ["transformer-cartpole-novel-500k", *_base["plot_with"]],
    }

# Plain CartPole-v1 with that KL limit, against ppo_discrete.py at the same budget.
EXPERIMENTS["transformer-cartpole-kl"] = {
    **EXPERIMENTS["transformer-cartpole"],
    "flags": [*GLOBAL_CLIP, "--learning-rate", "1e-3", "--target-kl", "0.02"],
    "plot_with": ["cartpole", "transformer-cartpole"],
}

# The same speed comparisons on a GPU, named <name>-gpu: the same runs with --cuda (the
# baseline scripts take --cuda too).
for _name in [
    "atari-speed",
    "cleanrl-atari-speed",
    "halfcheetah-speed",
    "cleanrl-halfcheetah-speed",
    "sac-speed",
    "cleanrl-sac-speed",
]:
    EXPERIMENTS[f"{_name}-gpu"] = {
        **EXPERIMENTS[_name],
        "flags": [*EXPERIMENTS[_name]["flags"], "--cuda"],
    }
# The GPU fast path (issue targets: beside the CleanRL baselines above, in one invocation).
for _name, _extra in [("atari-speed", ["--bf16"]), ("halfcheetah-speed", []), ("sac-speed", [])]:
    EXPERIMENTS[f"{_name}-gpu-fast"] = {
        **EXPERIMENTS[_name],
        "flags": [*EXPERIMENTS[_name]["flags"], "--cuda", "--compile", "--cudagraphs", *_extra],
    }


def run_one(name: str, seed: int, baselines: dict) -> str:
    exp = EXPERIMENTS[name]
    work = RUNS / name / f"seed{seed}"
    script = baselines[name] if exp.get("baseline") else str(ROOT / exp["script"])
    launcher = [sys.executable]
    if "torchrun" in exp:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={exp['torchrun']}",
        ]
    cmd = [
        *launcher,
        script,
        "--env-id",
        exp["env_id"],
        "--seed",
        str(seed),
        "--total-timesteps",
        str(exp["steps"]),
        *exp["flags"],
    ]
    if not exp.get("baseline"):
        cmd += ["--runs-dir", "runs", "--no-progress"]
    script_hash = hashlib.sha256(Path(script).read_bytes()).hexdigest()
    done = work / "done.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record["command"][1:] == cmd[1:] and record.get("script_sha256") == script_hash:
            return f"{name} seed {seed}: already done"
    # Not run yet, stopped halfway, or run with other flags or another version of the script.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    where = ran_on(script, "--cuda" in cmd)  # before the run: the script may change meanwhile
    start = time.time()
    with open(work / "log.txt", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        env = {**os.environ, **exp.get("env", {})}
        rc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        return f"{name} seed {seed}: FAILED (exit {rc}), see {work / 'log.txt'}"
    record = {
        "command": cmd,
        "script_sha256": script_hash,
        "seconds": round(time.time() - start, 1),
        "ran_on": where,
    }
    (work / "done.json").write_text(json.dumps(record, indent=1))
    return f"{name} seed {seed}: done in {record['seconds']} s"


def ran_on(script: str, cuda: bool) -> dict:
    """What a run ran on: the commit of the script (with "+changes" when the file differs from
    it), the torch version, the CPU model and its wide vector units, and the GPU when used."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h", "--", script)
    if commit and git("status", "--porcelain", "--", script):
        commit += "+changes"
    probe = "import torch; print(torch.__version__); print(torch.cuda.get_device_name(0) if {} else '')"
    out = subprocess.run([sys.executable, "-c", probe.format(cuda)], capture_output=True, text=True).stdout
    torch_version, gpu = ([*out.splitlines(), "", ""])[:2]
    cpu, flags = "", set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu:
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    units = [name for name, flag in (("avx2", "avx2"), ("avx512", "avx512f"), ("amx", "amx_tile")) if flag in flags]
    return {
        "commit": commit,
        "torch": torch_version,
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "cpu_units": "+".join(units),
        "gpu": gpu,
    }


def latest_run(work: Path):
    """The newest run folder under a seed's `work/runs/` (the scripts name them by start time),
    or None before the script has made one."""
    dirs = sorted(p for p in (work / "runs").glob("*") if p.is_dir())
    return dirs[-1] if dirs else None


def read_scalars(run_dir: str) -> dict:
    """{tag: [(step, value), ...]} of every scalar in the TensorBoard events under run_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


SUMMARY_FIELDS = [
    "experiment",
    "env_id",
    "seed",
    "last_episode_step",
    "eval_return_mean",
    "last20_train_return",
    "sps",
    "commit",
    "torch",
    "cpu",
    "cpu_units",
    "gpu",
    "last100_train_return",
]
CURVE_FIELDS = ["experiment", "seed", "step", "mean_return"]


def collect(names: list, bins: int = 50) -> None:
    """Read every finished run of these experiments into the CSVs, then redraw their plots and
    the summary table. Results merge by (experiment, seed): a seed run here replaces its old
    rows, and the committed rows of the seeds not run here stay."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    curves, summary = [], []
    for name in names:
        exp = EXPERIMENTS[name]
        edges = np.linspace(0, exp["steps"], bins + 1)
        for work in sorted((RUNS / name).glob("seed*")):
            if not (work / "done.json").exists():
                continue
            seed = int(work.name[4:])
            record = json.loads((work / "done.json").read_text())
            scalars = read_scalars(str(latest_run(work)))
            returns = scalars.get("charts/episodic_return", [])
            steps = np.array([s for s, _ in returns])
            values = np.array([v for _, v in returns])
            for lo, hi in zip(edges[:-1], edges[1:]):
                in_bin = (steps > lo) & (steps <= hi)
                if in_bin.any():
                    curves.append([name, seed, int(hi), round(float(values[in_bin].mean()), 2)])
            evals = [v for _, v in scalars.get("eval/episodic_return", [])]
            sps = scalars.get("charts/SPS", [])
            where = record.get("ran_on", {})
            summary.append(
                [
                    name,
                    exp["env_id"],
                    seed,
                    int(steps.max()) if len(steps) else 0,
                    rounded(np.mean(evals)) if evals else "",
                    rounded(values[-20:].mean()) if len(values) else "",
                    int(sps[-1][1]) if sps else "",
                    *(where.get(key, "") for key in SUMMARY_FIELDS[7:12]),
                    # The statistic CleanRL and RL Zoo publish: the last 100 training episodes.
                    rounded(values[-100:].mean()) if len(values) else "",
                ]
            )
    all_curves = merge_csv(RESULTS / "curves.csv", CURVE_FIELDS, curves)
    all_summary = merge_csv(RESULTS / "summary.csv", SUMMARY_FIELDS, summary)
    for name in names:
        shown = [name, *EXPERIMENTS[name].get("plot_with", [])]
        plot(name, [row for row in all_curves if row[0] in shown])
    write_table(all_summary, names)


def merge_csv(path: Path, header: list, rows: list) -> list:
    """Merge rows into the CSV by (experiment, seed): the new rows replace the old rows of their
    (experiment, seed), every other old row stays (columns the old file lacks are left empty).
    Returns all the rows, old and new, sorted by experiment and seed."""
    seed = header.index("seed")
    new_keys = {(str(row[0]), str(row[seed])) for row in rows}
    kept = []
    if path.exists():
        with open(path) as f:
            for old in csv.DictReader(f):
                if (old["experiment"], old["seed"]) not in new_keys:
                    kept.append([old.get(column) or "" for column in header])
    merged = kept + [[str(v) for v in row] for row in rows]
    merged.sort(key=lambda row: (row[0], int(row[seed])))  # stable: a run's bins stay in order
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(merged)
    return merged


def plot(name: str, rows: list) -> None:
    """Learning curves of `name` and of its `plot_with` experiments, mean and range over seeds;
    rows: [experiment, seed, step, mean return], as numbers or as read from the CSV."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for shown in [name, *EXPERIMENTS[name].get("plot_with", [])]:
        by_seed = {}
        for _, seed, step, value in (row for row in rows if row[0] == shown):
            by_seed.setdefault(int(seed), {})[int(step)] = float(value)
        if not by_seed:
            continue
        steps = sorted({step for values in by_seed.values() for step in values})
        grid = np.array([[by_seed[s].get(step, np.nan) for step in steps] for s in sorted(by_seed)])
        prefix = "" if shown == name else f"{shown}: "
        ax.plot(
            steps,
            np.nanmean(grid, 0),
            label=f"{prefix}mean of {len(by_seed)} seed{'s' * (len(by_seed) > 1)}",
        )
        ax.fill_between(steps, np.nanmin(grid, 0), np.nanmax(grid, 0), alpha=0.25, label=f"{prefix}min to max")
    # Published values of other projects at their budgets, one marker shape per source.
    for marker, (label, points) in zip("osD^v<>", EXPERIMENTS[name].get("published", [])):
        steps, values = zip(*points)
        ax.plot(steps, values, marker, color="black", markerfacecolor="none", markersize=8, label=label)
    ax.set_title(f"{name}: {EXPERIMENTS[name]['env_id']}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return (training)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=100)
    plt.close(fig)


def decimals(magnitude: float) -> int:
    """Decimals of a return in the tables: one, three where returns are small (POPGym's lie in
    [-1, 1])."""
    return 1 if magnitude >= 10 else 3


def rounded(x) -> float:
    return round(float(x), decimals(abs(x)))


def write_table(summary: list, names: list) -> None:
    """Write results/summary.md, mean +- std over seeds of every experiment in summary.csv
    (returns for the learning experiments, steps/s for the speed ones: names with "speed"),
    and print the rows of `names`."""
    by_exp = {}
    for row in summary:
        by_exp.setdefault(row[0], []).append(row[4:7])  # eval mean, last-20 training mean, sps
    lines = {}
    for name, rows in sorted(by_exp.items()):
        columns = (2,) if "speed" in name else (0, 1)
        cells = []
        for column in columns:
            values = [float(r[column]) for r in rows if r[column] != ""]
            digits = decimals(np.abs(values).max()) if values else 1
            cells.append(f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if values else "")
        env_id = EXPERIMENTS[name]["env_id"] if name in EXPERIMENTS else ""
        steps = f"{EXPERIMENTS[name]['steps']:,}" if name in EXPERIMENTS else ""
        lines[name] = f"| {name} | {env_id} | {steps} | {len(rows)} | " + " | ".join(cells) + " |"
    print("\n".join(lines[name] for name in names if name in lines))
    head = "| experiment | env | steps | seeds |"
    text = "Returns: mean ± std over seeds.\n\n" + head + " greedy eval | last 20 training episodes |\n"
    text += "| --- | --- | --- | --- | --- | --- |\n"
    text += "".join(line + "\n" for name, line in lines.items() if "speed" not in name)
    text += "\nSpeed: steps per second, mean ± std over seeds.\n\n" + head + " steps/s |\n"
    text += "| --- | --- | --- | --- | --- |\n"
    text += "".join(line + "\n" for name, line in lines.items() if "speed" in name)
    (RESULTS / "summary.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="names from --list")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (1 for speed comparisons)")
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="NAME=PATH", help="script that a baseline experiment runs"
    )
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--collect-only", action="store_true", help="only read finished runs into results/")
    args = parser.parse_args()

    if args.list or not args.experiments:
        for name, exp in EXPERIMENTS.items():
            what = "baseline script" if exp.get("baseline") else exp["script"]
            print(
                f"{name:16s} {what} --env-id {exp['env_id']} --total-timesteps {exp['steps']} " + " ".join(exp["flags"])
            )
        return
    unknown = [n for n in args.experiments if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"run.py: error: unknown experiment(s) {unknown}; see --list")
    baselines = dict(item.split("=", 1) for item in args.baseline)
    missing = [n for n in args.experiments if EXPERIMENTS[n].get("baseline") and n not in baselines]
    if missing and not args.collect_only:
        sys.exit(f"run.py: error: {missing} need --baseline NAME=PATH")

    if not args.collect_only:
        # Seed-major order, so with --jobs 1 the experiments alternate and share the same noise.
        jobs = [(name, seed) for seed in args.seeds for name in args.experiments]
        with ThreadPoolExecutor(args.jobs) as pool:
            for message in pool.map(lambda job: run_one(*job, baselines), jobs):
                print(message, flush=True)
    collect(args.experiments)


if __name__ == "__main__":
    main()
