"""Tests of ppo_discrete.py beyond the shared PPO contract (tests/test_ppo_contract.py, with
CartPole-v1): what only the categorical policy has."""

import pytest
import torch

from helpers import SCRIPTS

SCRIPT = SCRIPTS["ppo_discrete"]


def test_a_network_without_width_is_refused(tmp_path):
    with pytest.raises(SCRIPT.module.ConfigError, match="--hidden-size must be positive, got 0"):
        SCRIPT.module.train(SCRIPT.args(tmp_path, hidden_size=0))


def test_gumbel_max_sampling_follows_the_softmax():
    torch.manual_seed(0)
    agent = SCRIPT.module.Agent(obs_dim=3, n_actions=3, args=SCRIPT.module.Args(hidden_size=8))
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        agent.actor[-1].weight.zero_()
        actions = agent.sample_action(torch.zeros(20_000, 3))
    frequencies = torch.bincount(actions, minlength=3) / 20_000
    torch.testing.assert_close(frequencies, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=0.01, rtol=0)


def test_a_model_saved_with_a_setting_since_removed_still_plays(tmp_path):
    # model.pt files of earlier versions hold --lr-schedule-steps, which this version no longer has.
    result = SCRIPT.module.train(SCRIPT.args(tmp_path, eval_episodes=0))
    model = torch.load(result["model_path"], weights_only=True)
    model["args"]["lr_schedule_steps"] = 0
    torch.save(model, tmp_path / "earlier.pt")
    earlier = SCRIPT.module.evaluate(str(tmp_path / "earlier.pt"), episodes=2, seed=5)
    assert earlier == SCRIPT.module.evaluate(result["model_path"], episodes=2, seed=5)
    # One that ran on another schedule is refused, not taken for what this version runs.
    model["args"]["lr_schedule_steps"] = 10 * SCRIPT.batch
    torch.save(model, tmp_path / "earlier.pt")
    with pytest.raises(SCRIPT.module.ConfigError, match=r"no longer has: \{'lr_schedule_steps': 1280\}"):
        SCRIPT.module.evaluate(str(tmp_path / "earlier.pt"))
