"""Shared test helpers: load a root script by path, run its CLI, read its TensorBoard events,
and a few tiny environments whose right answers are known by hand."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

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
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def run_cli(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python ROOT/script.py args...` in `cwd`; return the finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_scalars(run_dir: str) -> dict:
    """{tag: [(step, value), ...]} of every scalar in a run's TensorBoard events."""
    return load_script("benchmarks/run").read_scalars(run_dir)


# ---------------------------------------------------------------------------------------------
# Tiny environments with known answers, registered under ids the tests pass to the scripts.
# ---------------------------------------------------------------------------------------------
class ConstantRewardEnv(gym.Env):
    """One constant observation, reward 1 per step, and the episode ends after `length` steps,
    by termination or (through TimeLimit) by truncation. With gamma, the true value is
    1 / (1 - gamma) when the end is a time limit, and at most (1 - gamma^length) / (1 - gamma)
    when it is a real termination."""

    def __init__(self, length: int = 5, terminate: bool = True):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.length, self.terminate, self.t = length, terminate, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate and self.t >= self.length
        return np.zeros(1, np.float32), 1.0, terminated, False, {}


class DictObsEnv(gym.Env):
    """A Dict observation space: the scripts must flatten it."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict(
            {"position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "mode": gym.spaces.Discrete(3)}
        )
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(action), self.t >= 10, False, {}


def _register_test_envs():
    if "test/ConstantTerminate-v0" in gym.registry:
        return
    gym.register("test/ConstantTerminate-v0", ConstantRewardEnv, kwargs={"terminate": True})
    gym.register("test/ConstantTruncate-v0", ConstantRewardEnv, kwargs={"terminate": False}, max_episode_steps=5)
    gym.register("test/DictObs-v0", DictObsEnv)


_register_test_envs()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test from a fresh temporary directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
