"""What the tests share: load a root script by path, run its CLI, read its TensorBoard events,
the checks that several scripts' tests make (a finished run's logs, greedy evaluation, --eval-only,
a refused command line), a tiny benchmarks/tune.py study, tiny environments whose right answers are
known by hand, and a description of each script (its tiny run and the shared contracts it takes
part in: `for_scripts`)."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
_loaded = {}


def load_script(name: str):
    """Import `ROOT/name.py` as a module (the scripts are plain files, not a package)."""
    if name not in _loaded:
        spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        # Registered by name, as importlib's recipe does: a3c.py's spawned workers find their
        # entry point by module name (pickle checks sys.modules).
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def run_cli(
    script: str, *args: str, cwd: Path, timeout: float = 300, env: Optional[dict] = None
) -> subprocess.CompletedProcess:
    """Run `python ROOT/script.py args...` in `cwd`, with `env` added to the environment; return
    the finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def cli_flags(settings: dict) -> list:
    """Args settings as command-line flags: {"num_envs": 2} -> ["--num-envs=2"] (booleans left
    out)."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if not isinstance(v, bool)]


def read_scalars(run_dir: str) -> dict:
    """{tag: [(step, value), ...]} of every scalar in a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


# The scalars every actor-critic script (the PPO scripts, a3c.py) logs.
ACTOR_CRITIC_TAGS = (
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/explained_variance",
    "losses/grad_norm",
    "charts/advantage_mean",
    "charts/advantage_std",
    "eval/episodic_return",
)


def assert_run_logged(result: dict, run_name: str, tags) -> dict:
    """A finished run's result: its model saved in its run folder, named `{run_name}__1__...`
    (seed 1), its episodes' returns as floats, every scalar of `tags` logged, and the logged
    returns those of the result, in order. Returns the run's scalars."""
    assert os.path.dirname(result["model_path"]) == result["run_dir"]
    assert os.path.basename(result["run_dir"]).startswith(f"{run_name}__1__")
    assert all(isinstance(r, float) for r in result["episodic_returns"]) and result["episodic_returns"]
    scalars = read_scalars(result["run_dir"])
    for tag in tags:
        assert tag in scalars, tag
    logged = [v for _, v in scalars["charts/episodic_return"]]
    np.testing.assert_allclose(logged, result["episodic_returns"], rtol=1e-6)
    return scalars


def greedy_returns(evaluate: Callable, model_path: str, episodes: int) -> list:
    """`evaluate(model_path)` over `episodes` games from seed 5: one float a game, and greedy play
    of the same model with the same seeds gives the same returns again."""
    returns = evaluate(model_path, episodes=episodes, seed=5)
    assert len(returns) == episodes and all(isinstance(r, float) for r in returns)
    assert evaluate(model_path, episodes=episodes, seed=5) == returns
    return returns


def eval_only_returns(script: str, model, cwd: Path, timeout: float = 300) -> list:
    """The returns that `script --eval-only model --eval-episodes 2` prints."""
    proc = run_cli(script, "--eval-only", str(model), "--eval-episodes", "2", cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1].split("over 2 episodes: ")[1])


def assert_refused_in_one_line(proc: subprocess.CompletedProcess, script: str, message: str) -> None:
    """A command line refused as argparse refuses one: exit status 2, no traceback, and one line
    `script: error: ...` that says `message`."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error:") and message in lines[0], proc.stderr


def write_study(path: Path, **changes) -> None:
    """A study file for benchmarks/tune.py, of seconds: one trial of ppo_discrete.py on
    CartPole-v1, 8 updates of 256 steps, tuning the learning rate; `changes` replace its keys."""
    study = {
        "script": "ppo_discrete.py",
        "env_id": "CartPole-v1",
        "total_timesteps": 2048,
        "trials": 1,
        "pruner": {"type": "none"},
        "report_every": 512,
        "fixed": {"num_envs": 4, "num_steps": 64, "eval_episodes": 0, "save_model": False},
        "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        **changes,
    }
    path.write_text(yaml.safe_dump(study))


# Scalars that measure time, not the computation.
TIMING_TAGS = ("charts/SPS", "charts/updates_per_second")


def assert_scalars_match_recording(name: str, run_dir, skip: tuple = ()) -> None:
    """Same seed, same numbers: every scalar of a fixed-seed run (but timings and `skip`) equals
    the one recorded in tests/recorded/{name}.json, at the same steps. A change that alters the
    numbers on purpose records them again, in the same commit:
        RECORD_SCALARS=1 python -m pytest -k recorded
    Equal up to float rounding, since CPUs of one kind may round differently; a change of the
    computation moves them by far more."""
    scalars = {tag: v for tag, v in read_scalars(str(run_dir)).items() if tag not in TIMING_TAGS + tuple(skip)}
    path = ROOT / "tests" / "recorded" / f"{name}.json"
    if os.environ.get("RECORD_SCALARS") == "1":
        path.parent.mkdir(exist_ok=True)
        lines = [f"  {json.dumps(tag)}: {json.dumps([[s, v] for s, v in values])}" for tag, values in scalars.items()]
        path.write_text("{\n" + ",\n".join(sorted(lines)) + "\n}\n")
        return
    recorded = json.loads(path.read_text())
    assert sorted(scalars) == sorted(recorded)
    for tag, values in recorded.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in values], tag
        np.testing.assert_allclose(
            [v for _, v in scalars[tag]], [v for _, v in values], rtol=1e-5, atol=1e-6, err_msg=tag
        )


# Tiny environments with known answers, registered (by tests/conftest.py) under ids the tests pass to the scripts.
def _action_space(box: bool) -> gym.Space:
    return gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if box else gym.spaces.Discrete(2)


class ConstantRewardEnv(gym.Env):
    """Reward `reward` per step, and the episode ends after `length` steps, by termination or
    (through TimeLimit) by truncation. The observation is constant 0, or with `observe_step` the
    step count (0 after reset, t after step t, so a stored next_obs must be obs + 1).
    With reward 1 and gamma, the true value of the constant observation is 1 / (1 - gamma) when
    the end is a time limit, and at most (1 - gamma^length) / (1 - gamma) after a termination."""

    def __init__(self, length=5, terminate=True, box=False, reward=1.0, observe_step=False):
        self.observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
        self.action_space = _action_space(box)
        self.length, self.terminate, self.reward, self.observe_step = (
            length,
            terminate,
            reward,
            observe_step,
        )
        self.t = 0

    def observation(self):
        return np.array([self.t if self.observe_step else 0.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation(), {}

    def step(self, action):
        self.t += 1
        return self.observation(), self.reward, self.terminate and self.t >= self.length, False, {}


class DictObsEnv(gym.Env):
    """A Dict observation space, which the scripts must flatten; episodes of 10 steps."""

    def __init__(self, box: bool = False):
        self.observation_space = gym.spaces.Dict(
            {
                "position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                "mode": gym.spaces.Discrete(3),
            }
        )
        self.action_space = _action_space(box)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(np.sum(action)), self.t >= 10, False, {}


class SequenceObsEnv(DictObsEnv):
    """A Dict observation with a Sequence part, which has no fixed size and cannot be flattened."""

    def __init__(self, box: bool = False):
        super().__init__(box)
        self.observation_space = gym.spaces.Dict(
            {
                "position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                "items": gym.spaces.Sequence(gym.spaces.Discrete(3)),
            }
        )


def register_test_envs() -> None:
    """test/ConstantTerminate-v0, test/ConstantTruncate-v0, test/DictObs-v0, test/SequenceObs-v0
    and test/CounterTerminate-v0, test/CounterTruncate-v0 (which observe the step count) with
    Discrete(2) actions, and the same ids ending in Box-v0 with Box(-1, 1, (1,)) actions."""
    if "test/DictObs-v0" in gym.registry:
        return
    counter = {"reward": 0.0, "observe_step": True}
    for suffix, box in (("", False), ("Box", True)):
        gym.register(f"test/ConstantTerminate{suffix}-v0", ConstantRewardEnv, kwargs={"terminate": True, "box": box})
        gym.register(
            f"test/ConstantTruncate{suffix}-v0",
            ConstantRewardEnv,
            kwargs={"terminate": False, "box": box},
            max_episode_steps=5,
        )
        gym.register(f"test/DictObs{suffix}-v0", DictObsEnv, kwargs={"box": box})
        gym.register(f"test/SequenceObs{suffix}-v0", SequenceObsEnv, kwargs={"box": box})
        gym.register(
            f"test/CounterTerminate{suffix}-v0", ConstantRewardEnv, kwargs={**counter, "terminate": True, "box": box}
        )
        gym.register(
            f"test/CounterTruncate{suffix}-v0",
            ConstantRewardEnv,
            kwargs={**counter, "terminate": False, "box": box},
            max_episode_steps=5,
        )


# ---------------------------------------------------------------------------------------------
# The scripts, and the shared contracts each takes part in
# ---------------------------------------------------------------------------------------------
# A PPO run of a few seconds: exactly 2 updates of 2 envs x 64 steps, 2 epochs of 2 minibatches.
TWO_SMALL_UPDATES = dict(
    total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, eval_episodes=2
)

# What a script offers to the shared tests of tests/test_ppo_contract.py and tests/test_compile_contract.py.
FEATURES = {
    "gae": "compute_gae, checked against the seed's worked example",
    "ppo": "the PPO losses, and a train/evaluate/resume/CLI of PPO's flags",
    "gym_envs": "any gymnasium env (the test/* envs), observation and reward normalization, videos",
    "lr_schedule": "--lr-schedule-steps",
    "learns": "a short learning run (`learn`, `learned_at_least`)",
    "flipped_gradient": "the same run with the policy gradient flipped stays under `broken_at_most`",
    "file_habits": "save_atomic, and an import that does nothing",
    "cuda_resume": "a checkpoint of a GPU run resumes its random state",
    "compile": "--compile and --cudagraphs (`sampler`)",
}


@dataclass
class Script:
    """One root script, as the tests run it."""

    name: str  # file name without .py
    env_id: str  # a real env with the right action space, for tiny runs
    tiny: dict  # Args overrides for a run of a few seconds (PPO: exactly 2 updates)
    features: frozenset  # the FEATURES the script has
    wrong_env_id: Optional[str] = None  # an env with an action space the script refuses ...
    wrong_env_message: Optional[str] = None  # ... and what the refusal says
    test_env_suffix: Optional[str] = None  # "gym_envs": "" (Discrete actions) or "Box", which test/* envs fit
    learn: Optional[dict] = None  # "learns": Args overrides of the short learning test
    learned_at_least: Optional[float] = None  # greedy eval return the learning test must reach
    broken_at_most: Optional[float] = None  # and that a broken update must not reach
    # Flags added to `tiny` for the fixed-seed run whose scalars are kept in tests/recorded/:
    # switches that take the run through more of the code.
    recorded_flags: tuple = ()
    # "compile": device -> (the acting pass of a small agent, an observation for it).
    sampler: Optional[Callable] = None

    def __post_init__(self):
        assert self.features <= FEATURES.keys(), self.features - FEATURES.keys()

    @property
    def module(self):
        return load_script(self.name)

    def args(self, tmp_path, **overrides):
        settings = {"env_id": self.env_id, "progress": False, **self.tiny, "runs_dir": str(tmp_path / "runs")}
        return self.module.Args(**{**settings, **overrides})

    @property
    def batch(self) -> int:
        return self.tiny["num_envs"] * self.tiny["num_steps"]


def _continuous_sampler(device: torch.device) -> tuple:
    """The acting pass of a small agent (a sampled action) and an observation for it."""
    ppo = load_script("ppo_continuous")
    agent = ppo.Agent(3, 1, ppo.Args(hidden_size=16)).to(device)
    return agent.sample_action, torch.zeros(4, 3, device=device)


def _atari_sampler(device: torch.device) -> tuple:
    """The acting pass of an agent (a sampled action) and a stack of frames for it."""
    agent = load_script("ppo_atari").Agent(frame_stack=4, n_actions=4).to(device)
    frames = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, device=device)
    return (lambda obs: agent.sample_action(obs)[0]), frames


def _transformer_sampler(device: torch.device) -> tuple:
    """The acting pass of a small agent (a sampled action) and an observation for it."""
    ppo = load_script("ppo_transformer")
    agent = ppo.Agent(3, 2, ppo.Args(context_len=4, embed_dim=16, num_heads=2)).to(device)
    return agent.sample_action, torch.zeros(4, 3, device=device)


def _sac_sampler(device: torch.device) -> tuple:
    """The acting pass of a small actor (a sampled action) and an observation for it."""
    actor = load_script("sac").Actor(3, -np.ones(1), np.ones(1), hidden_size=16).to(device)
    return (lambda obs: actor.get_action(obs)[0]), torch.zeros(4, 3, device=device)


_PPO = {"gae", "ppo", "file_habits", "cuda_resume"}
SCRIPTS = {
    script.name: script
    for script in [
        Script(
            name="ppo_discrete",
            env_id="CartPole-v1",
            tiny=TWO_SMALL_UPDATES,
            features=frozenset(_PPO | {"gym_envs", "learns", "flipped_gradient"}),
            recorded_flags=("--norm-obs", "--norm-reward", "--clip-vloss"),
            test_env_suffix="",
            wrong_env_id="Pendulum-v1",
            wrong_env_message="use ppo_continuous.py",
            # Defaults, 40k steps: about 15 s here. A uniformly random policy scores about 22.
            learn=dict(total_timesteps=40_960),
            learned_at_least=150.0,
            broken_at_most=60.0,
        ),
        Script(
            name="ppo_continuous",
            env_id="Pendulum-v1",
            # 2 updates of 2 envs x 128 steps: each env finishes one 200-step Pendulum episode.
            tiny=dict(
                total_timesteps=512, num_envs=2, num_steps=128, num_minibatches=2, update_epochs=2, eval_episodes=2
            ),
            features=frozenset(_PPO | {"gym_envs", "learns", "flipped_gradient", "compile"}),
            recorded_flags=("--clip-vloss",),
            test_env_suffix="Box",
            wrong_env_id="CartPole-v1",
            wrong_env_message="use ppo_discrete.py",
            # The Pendulum preset of the README, 65k steps: about 35 s here. Random play scores about -1200.
            learn=dict(
                env_id="Pendulum-v1",
                total_timesteps=65_536,
                num_envs=4,
                num_steps=1024,
                num_minibatches=16,
                gamma=0.9,
                learning_rate=1e-3,
                init_log_std=0.0,
            ),
            learned_at_least=-600.0,
            broken_at_most=-900.0,
            sampler=_continuous_sampler,
        ),
        # Real Breakout, with games cut at 400 frames (100 agent steps), so that two updates of 64
        # steps finish some. It learns a synthetic pixel game instead (tests/test_ppo_atari.py).
        Script(
            name="ppo_atari",
            env_id="BreakoutNoFrameskip-v4",
            tiny={**TWO_SMALL_UPDATES, "max_episode_frames": 400, "torch_threads": 1},
            features=frozenset(_PPO | {"lr_schedule", "compile"}),
            wrong_env_id="CartPole-v1",
            wrong_env_message="is not an Atari game; use ppo_discrete.py",
            sampler=_atari_sampler,
        ),
        # That the learning threshold is out of reach of an agent that cannot do the task is shown
        # by its memoryless agent (tests/test_ppo_transformer.py), not by a flipped policy
        # gradient: the suite has no half minute to spare for both.
        Script(
            name="ppo_transformer",
            env_id="CartPole-v1",
            tiny=TWO_SMALL_UPDATES,
            features=frozenset(_PPO | {"gym_envs", "learns", "compile"}),
            recorded_flags=("--norm-reward", "--clip-vloss"),
            test_env_suffix="",
            wrong_env_id="Pendulum-v1",
            wrong_env_message="use ppo_continuous.py",
            # CartPole-v1 with its velocities hidden, 33k steps, with larger updates than the
            # defaults' (twice the learning rate, no KL limit), which learn faster here and collapse
            # in long runs: 500 here (a uniformly random policy scores about 22). The same budget
            # without memory stays under 60.
            learn=dict(mask_velocity=True, total_timesteps=32_768, learning_rate=2e-3, target_kl=None),
            learned_at_least=150.0,
            broken_at_most=60.0,
            sampler=_transformer_sampler,
        ),
        # A run of a few seconds: 2 workers, rollouts of 2 envs x 4 steps.
        Script(
            name="a3c",
            env_id="CartPole-v1",
            tiny=dict(num_workers=2, num_envs=2, num_steps=4, total_timesteps=400, hidden_size=16, eval_episodes=2),
            features=frozenset({"gae", "file_habits"}),
        ),
        # A run that takes a few seconds: 100 random steps, then 200 updates of small networks.
        Script(
            name="sac",
            env_id="Pendulum-v1",
            tiny=dict(total_timesteps=300, learning_starts=100, batch_size=32, hidden_size=16, eval_episodes=2),
            features=frozenset({"file_habits", "cuda_resume", "compile"}),
            sampler=_sac_sampler,
        ),
    ]
}


def scripts_with(*features: str) -> list:
    """The scripts that have all of `features`."""
    assert set(features) <= FEATURES.keys(), features
    return [script for script in SCRIPTS.values() if set(features) <= script.features]


def for_scripts(*features: str):
    """Run a test once for every script that has all of `features`, as its `sut` fixture
    (tests/conftest.py): test_learns[ppo_discrete], test_learns[ppo_continuous], ..."""
    scripts = scripts_with(*features)
    return pytest.mark.parametrize("sut", scripts, ids=[script.name for script in scripts], indirect=True)


def learning_score(sut: Script, tmp_path) -> float:
    """The mean greedy return of a short run with `sut.learn` on the script's defaults (not `tiny`)."""
    settings = {"env_id": sut.env_id, "progress": False, "eval_episodes": 10, "save_model": False, **sut.learn}
    args = sut.module.Args(**settings, runs_dir=str(tmp_path / "runs"))
    return float(np.mean(sut.module.train(args)["eval_returns"]))
