"""Tests of ppo_continuous.py beyond the shared PPO contract (tests/test_ppo_contract.py, with
Pendulum-v1) and the --compile tests (tests/test_compile_contract.py): what only the Gaussian
policy has: its log-probability, the tanh squash, action clipping."""

import numpy as np
import pytest
import torch

from helpers import SCRIPTS

SCRIPT = SCRIPTS["ppo_continuous"]
ppo = SCRIPT.module


def test_a_network_without_width_is_refused(tmp_path):
    with pytest.raises(ppo.ConfigError, match="--hidden-size must be positive, got 0"):
        ppo.train(SCRIPT.args(tmp_path, hidden_size=0))


def test_gaussian_log_prob_matches_torch_normal():
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    x = torch.randn(5, 3)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(ppo.gaussian_log_prob(x, mean, log_std), expected)


def test_squashed_log_prob_matches_change_of_variables():
    # Density of a = tanh(u), u ~ N(mean, std^2): p(a) = N(u) / |det da/du|, with the Jacobian
    # computed by autograd, independently of the closed form in the script.
    # In float64, so that the reference stays exact where tanh(u) is close to +-1.
    mean, log_std = (
        torch.tensor([0.3, -1.0], dtype=torch.float64),
        torch.tensor([-0.2, 0.4], dtype=torch.float64),
    )
    for u in torch.tensor([[0.1, -0.5], [2.5, -3.0], [9.0, -0.01]], dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(torch.tanh, u)
        expected = ppo.gaussian_log_prob(u, mean, log_std) - torch.logdet(jacobian)
        got = ppo.gaussian_log_prob(u, mean, log_std) - ppo.tanh_log_det_jacobian(u)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # ... and where float32 tanh(u) rounds to 1, the closed form stays finite.
    assert torch.isfinite(ppo.tanh_log_det_jacobian(torch.tensor([30.0, -30.0])))


def test_squashed_density_integrates_to_one():
    # Monte-Carlo check of the same density from the other side: integrate p(a) over (-1, 1).
    mean, log_std = torch.tensor([0.4]), torch.tensor([-0.3])
    a = torch.linspace(-0.9999, 0.9999, 200_001, dtype=torch.float64)
    u = torch.atanh(a).unsqueeze(-1)
    log_p = ppo.gaussian_log_prob(u, mean.double(), log_std.double()) - ppo.tanh_log_det_jacobian(u)
    assert torch.trapezoid(log_p.exp(), a).item() == pytest.approx(1.0, abs=1e-3)


def test_only_the_env_action_is_clipped_or_squashed():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    u = np.array([3.0, -0.5])
    np.testing.assert_allclose(ppo.to_env_action(u, low, high, squash=False), [2.0, 0.0])
    squashed = ppo.to_env_action(u, low, high, squash=True)
    np.testing.assert_allclose(squashed, low + 0.5 * (np.tanh(u) + 1) * (high - low))
    assert np.all(squashed >= low) and np.all(squashed <= high)


def test_stored_actions_are_not_clipped(tmp_path, monkeypatch):
    # A wide initial std makes Pendulum actions (bounds +-2) fall outside the bounds often; the
    # log-probs the update trains on must be those of the unclipped samples.
    seen = []
    original = ppo.Agent.evaluate_actions

    def record(self, obs, actions):
        seen.append(actions.detach().clone())
        return original(self, obs, actions)

    monkeypatch.setattr(ppo.Agent, "evaluate_actions", record)
    ppo.train(SCRIPT.args(tmp_path, init_log_std=1.5, eval_episodes=0))
    assert seen[0].abs().max().item() > 2.0


@pytest.mark.parametrize("squash", [False, True])
def test_both_policies_train_and_evaluate(tmp_path, squash):
    result = ppo.train(SCRIPT.args(tmp_path, squash=squash))
    agent, saved, *_ = ppo.load_agent(result["model_path"])
    assert agent.squash is squash and saved.squash is squash
    assert len(ppo.evaluate(result["model_path"], episodes=1)) == 1


@pytest.mark.parametrize("env_id", ["HalfCheetah-v4", "HalfCheetah-v5", "BipedalWalker-v3"])
def test_mujoco_and_box2d_envs_are_accepted(env_id):
    ppo.check_env(env_id)  # raises ConfigError when the env or its engine is missing


def test_layers_start_orthogonal():
    # The initialization of the original PPO code: the 3 columns of the first weight are
    # orthogonal with norm sqrt(2).
    agent = ppo.Agent(obs_dim=3, action_dim=1, args=ppo.Args(hidden_size=16))
    gram = agent.critic[0].weight.T @ agent.critic[0].weight
    torch.testing.assert_close(gram, 2.0 * torch.eye(3), atol=1e-5, rtol=0)


def test_a_model_of_an_earlier_version_loads_unless_a_removed_setting_changed_it(tmp_path):
    # --lr-schedule-steps, --activation and --ortho-init are gone; a file saved with them at the
    # values that this version always runs still loads, one with relu weights is refused.
    result = ppo.train(SCRIPT.args(tmp_path, eval_episodes=0))
    saved = torch.load(result["model_path"], weights_only=True)
    saved["args"].update(lr_schedule_steps=0, activation="tanh", ortho_init=True)
    torch.save(saved, tmp_path / "old.pt")
    assert len(ppo.evaluate(str(tmp_path / "old.pt"), episodes=1)) == 1
    saved["args"]["activation"] = "relu"
    torch.save(saved, tmp_path / "relu.pt")
    with pytest.raises(ppo.ConfigError, match="settings that this version no longer has: {'activation': 'relu'}"):
        ppo.evaluate(str(tmp_path / "relu.pt"))
