"""Fixtures and hooks; what the tests share besides lives in tests/helpers.py."""

import os

import pytest

from helpers import register_test_envs


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
    register_test_envs()


@pytest.fixture
def sut(request):
    """The script under test (a helpers.Script), given by the test's helpers.for_scripts(...)."""
    return request.param


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test from a fresh temporary directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
