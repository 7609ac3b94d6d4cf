"""Shared test helpers: load a root script by path, run its CLI, read its TensorBoard events,
and a few tiny environments whose right answers are known by hand."""

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
    return load_script("benchmarks/run").read_scalars(run_dir)


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


# ---------------------------------------------------------------------------------------------
# Tiny environments with known answers, registered under ids the tests pass to the scripts.
# ---------------------------------------------------------------------------------------------
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


def _register_test_envs():
    """test/ConstantTerminate-v0, test/ConstantTruncate-v0, test/DictObs-v0,
    test/SequenceObs-v0 with Discrete(2)
    actions, the same ids ending in Box-v0 with Box(-1, 1, (1,)) actions, and
    test/CounterTerminateBox-v0, test/CounterTruncateBox-v0 that observe the step count."""
    if "test/DictObs-v0" in gym.registry:
        return
    for suffix, box in (("", False), ("Box", True)):
        gym.register(
            f"test/ConstantTerminate{suffix}-v0",
            ConstantRewardEnv,
            kwargs={"terminate": True, "box": box},
        )
        gym.register(
            f"test/ConstantTruncate{suffix}-v0",
            ConstantRewardEnv,
            kwargs={"terminate": False, "box": box},
            max_episode_steps=5,
        )
        gym.register(f"test/DictObs{suffix}-v0", DictObsEnv, kwargs={"box": box})
        gym.register(f"test/SequenceObs{suffix}-v0", SequenceObsEnv, kwargs={"box": box})
    counter = {"box": True, "reward": 0.0, "observe_step": True}
    gym.register("test/CounterTerminateBox-v0", ConstantRewardEnv, kwargs={**counter, "terminate": True})
    gym.register(
        "test/CounterTruncateBox-v0",
        ConstantRewardEnv,
        kwargs={**counter, "terminate": False},
        max_episode_steps=5,
    )


_register_test_envs()


# A PPO run of a few seconds: exactly 2 updates of 2 envs x 64 steps, 2 epochs of 2 minibatches.
TWO_SMALL_UPDATES = dict(
    total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, eval_episodes=2
)


@dataclass
class PPOScript:
    """What the shared PPO tests (tests/ppo_contract.py) need to know about one PPO script."""

    name: str  # file name without .py
    env_id: str  # a real env with the right action space, for tiny runs
    tiny: dict  # Args overrides for a run of a few seconds: exactly 2 updates
    wrong_env_id: str  # an env with an action space the script refuses ...
    wrong_env_message: str  # ... and what the refusal says
    # Only for the contract tests that use the test/* envs and the learning tests; a script that
    # imports just the other tests (ppo_atari.py) leaves them out.
    test_env_suffix: Optional[str] = None  # "" (Discrete actions) or "Box": which test/* envs fit
    learn: Optional[dict] = None  # Args overrides of the short learning test
    learned_at_least: Optional[float] = None  # greedy eval return the learning test must reach
    broken_at_most: Optional[float] = None  # and that a broken update must not reach
    # Flags added to `tiny` for the fixed-seed run whose scalars are kept in tests/recorded/:
    # switches that take the run through more of the code.
    recorded_flags: tuple = ()
    # For the scripts with --compile (tests/compile_contract.py): device -> (the acting pass of a
    # small agent, an observation for it).
    sampler: Optional[Callable] = None

    @property
    def module(self):
        return load_script(self.name)

    def args(self, tmp_path, **overrides):
        settings = {
            "env_id": self.env_id,
            "progress": False,
            **self.tiny,
            "runs_dir": str(tmp_path / "runs"),
        }
        return self.module.Args(**{**settings, **overrides})

    @property
    def batch(self) -> int:
        return self.tiny["num_envs"] * self.tiny["num_steps"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test from a fresh temporary directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
