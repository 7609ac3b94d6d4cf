"""Tests of ppo_transformer.py beyond the shared PPO contract (tests/test_ppo_contract.py, with
CartPole-v1, learning with its velocities hidden) and the --compile tests
(tests/test_compile_contract.py): what memory adds: the attention mask, the episode
windows of the rollout, of the bootstrap and of evaluation, and a memoryless agent that fails."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import SCRIPTS, learning_score, run_cli

SCRIPT = SCRIPTS["ppo_transformer"]
ppo = SCRIPT.module


def small_agent(**overrides) -> "ppo.Agent":
    torch.manual_seed(0)
    args = ppo.Args(context_len=6, embed_dim=16, num_heads=2, num_layers=2, **overrides)
    return ppo.Agent(obs_dim=3, n_actions=2, args=args)


# ---------------------------------------------------------------------------------------------
# The attention mask, on the network itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [{}, {"position_from_start": True}])
@pytest.mark.parametrize("critic", [False, True], ids=["policy", "value"])
def test_observations_of_other_episodes_do_not_change_the_output(variant, critic):
    agent = small_agent(**variant)

    def encode(windows, masks=None):
        return agent.encode(windows, masks, critic=critic)

    windows = torch.randn(4, 6, 3)
    starts = torch.tensor([0, 2, 5, 3])  # the slot where each window's episode begins
    masks = torch.arange(6) >= starts[:, None]
    features, attention = encode(windows, masks)
    others = torch.where(masks[..., None], windows, 100 * torch.randn(4, 6, 3))
    assert torch.equal(encode(others, masks)[0], features)
    assert torch.all(attention.masked_select(~masks[:, None, :]) == 0)
    # A window that begins at the episode start (as in evaluation) is the same as one whose
    # earlier slots are masked: positions, counted back or from the start, agree.
    for b, start in enumerate(starts.tolist()):
        shorter = encode(windows[b, start:].unsqueeze(0))[0]
        torch.testing.assert_close(shorter, features[b : b + 1])
    # The test can fail: an earlier observation of the same episode does change the output.
    earlier = windows.clone()
    earlier[[0, 1, 3], starts[[0, 1, 3]]] += 1.0
    changed = (encode(earlier, masks)[0] - features).abs().amax(-1)
    assert torch.all(changed[[0, 1, 3]] > 1e-4) and changed[2] == 0


def test_the_value_and_the_policy_move_their_own_transformers_only():
    # The value's gradient never reaches the policy's transformer, nor the policy's the value's.
    def gradients(agent, which):
        windows, masks = (
            torch.randn(4, 6, 3),
            torch.arange(6) >= torch.tensor([0, 2, 5, 3])[:, None],
        )
        logprob, _, value, _ = agent.evaluate_actions(windows, masks, torch.tensor([0, 1, 0, 1]))
        agent.zero_grad(set_to_none=True)
        (value if which == "value" else logprob).sum().backward()
        return {
            name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
            for name, module in agent.named_children()
            if name in ("encoder", "critic_encoder")
        }

    agent = small_agent()
    assert gradients(agent, "value") == {"encoder": False, "critic_encoder": True}
    assert gradients(agent, "policy") == {"encoder": True, "critic_encoder": False}


def test_the_policy_and_the_value_are_clipped_apart(tmp_path, monkeypatch):
    # Which parameters each gradient clipping of a short run covers, and to what norm: the
    # policy's (transformer and head) and the value's apart, each to --max-grad-norm.
    agents, clipped, limits = [], [], set()
    agent_class, clip = ppo.Agent, torch.nn.utils.clip_grad_norm_

    class RecordingAgent(agent_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            agents.append(self)

    def recording_clip(parameters, max_norm):
        parameters = list(parameters)
        clipped.append({id(p) for p in parameters})
        limits.add(max_norm)
        return clip(parameters, max_norm)

    monkeypatch.setattr(ppo, "Agent", RecordingAgent)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    ppo.train(SCRIPT.args(tmp_path, eval_episodes=0, save_model=False))
    (agent,) = agents

    def ids(*modules):
        return {id(p) for module in modules for p in module.parameters()}

    policy, value = ids(agent.encoder, agent.actor), ids(agent.critic_encoder, agent.critic)
    assert policy | value == ids(agent) and not policy & value
    assert len(clipped) > 2 and clipped == [policy, value] * (len(clipped) // 2)
    assert limits == {ppo.Args.max_grad_norm}


def test_a_slot_sees_neither_later_slots_nor_other_episodes():
    # Inside the network, slot i's output depends only on slots j <= i of its episode: checked on
    # the first block's output for every slot, with the mask that the agent builds.
    block = small_agent().encoder.blocks[0]
    x = torch.randn(2, 6, 16)
    masks = torch.arange(6) >= torch.tensor([0, 2])[:, None]
    allowed = ppo.attention_mask(masks)
    out, _ = block(x, allowed, last_only=False)
    for i in range(6):
        later = x.clone()
        later[:, i + 1 :] = 100 * torch.randn_like(later[:, i + 1 :])
        later[1, :2] = 100 * torch.randn(2, 16)  # slots before env 1's episode start
        changed_out, _ = block(later, allowed, last_only=False)
        assert torch.equal(changed_out[0, : i + 1], out[0, : i + 1]), i
        assert i < 2 or torch.equal(changed_out[1, 2 : i + 1], out[1, 2 : i + 1]), i
    # The last block computes only the current step, and the same numbers as the whole window.
    last, _ = block(x, allowed, last_only=True)
    torch.testing.assert_close(last[:, 0], out[:, -1])


# ---------------------------------------------------------------------------------------------
# Windows: cut from the rollout, with episode boundaries
# ---------------------------------------------------------------------------------------------
def test_episode_windows_by_hand():
    # K = 3, T = 4 steps, 2 envs; history row r of env n holds 10 r + n. Rows 0 and 1 are carried
    # over from the previous rollout. Env 0's episode began before them; env 1's episode began at
    # row 1, and its next one at row 4 (step 2).
    history = (10 * torch.arange(6.0)[:, None] + torch.arange(2.0)).unsqueeze(-1)  # [6, 2, 1]
    episode_starts = torch.tensor([[-5, 1], [-5, 1], [-5, 4], [-5, 4]])
    windows, masks = ppo.episode_windows(history, episode_starts, 3)
    assert windows.shape == (4, 2, 3, 1) and masks.shape == (4, 2, 3)
    assert windows[2, 1, :, 0].tolist() == [21, 31, 41]  # rows 2, 3, 4: step 2's own row is 4
    assert windows[0, 0, :, 0].tolist() == [0, 10, 20]
    assert masks[:, 0].all()
    assert masks[:, 1].tolist() == [
        [False, True, True],
        [True, True, True],
        [False, False, True],
        [False, True, True],
    ]
    # A view of the history: rows after a step's own never enter its window.
    history[5] = -1.0
    assert windows[2, 1, :, 0].tolist() == [21, 31, 41]


def assert_is_episode_window(window: torch.Tensor, mask: torch.Tensor, last: float):
    """On the counter envs: the unmasked slots are the steps first .. last of one episode, in order,
    where first is 0 (the episode start) unless the window is full; masked slots come before."""
    valid = window[mask, 0]
    assert torch.equal(mask, torch.arange(len(mask)) >= len(mask) - len(valid)), mask
    first = last - len(valid) + 1
    assert valid.tolist() == list(np.arange(first, last + 1.0)), valid
    assert first == 0 or len(valid) == len(mask)


@pytest.mark.parametrize("end, context_len", [("Terminate", 8), ("Truncate", 8), ("Truncate", 3)])
def test_rollout_and_update_see_each_steps_episode_window(tmp_path, monkeypatch, end, context_len):
    acted, evaluated, valued = [], [], []
    agent_class = ppo.Agent

    class RecordingAgent(agent_class):
        def sample_action(self, windows, masks=None):
            acted.append((windows.clone(), masks.clone()))
            return super().sample_action(windows, masks)

        def evaluate_actions(self, windows, masks, actions):
            evaluated.append((windows.clone(), masks.clone()))
            return super().evaluate_actions(windows, masks, actions)

        def get_value(self, windows, masks=None):
            valued.append((windows.clone(), masks.clone()))
            return super().get_value(windows, masks)

    monkeypatch.setattr(ppo, "Agent", RecordingAgent)
    # 3 rollouts of 7 steps: episodes of 5 steps cross the rollouts' borders.
    args = SCRIPT.args(
        tmp_path,
        env_id=f"test/Counter{end}-v0",
        context_len=context_len,
        num_envs=2,
        num_steps=7,
        total_timesteps=42,
        num_minibatches=2,
        eval_episodes=0,
        save_model=False,
    )
    ppo.train(args)
    assert len(acted) == 21
    for windows, masks in acted:
        for window, mask in zip(windows, masks):
            assert_is_episode_window(window, mask, last=window[-1, 0].item())
    # The batch pass of each update (the first evaluate_actions after each rollout; the
    # minibatches have half its size) sees exactly the windows the policy acted on, step-major,
    # and every minibatch after it is drawn from them.
    batch_passes = [i for i, (windows, _) in enumerate(evaluated) if len(windows) == 14]
    assert len(batch_passes) == 3
    for k, (i, end_i) in enumerate(zip(batch_passes, [*batch_passes[1:], len(evaluated)])):
        windows = torch.cat([w for w, _ in acted[7 * k : 7 * k + 7]])
        masks = torch.cat([m for _, m in acted[7 * k : 7 * k + 7]])
        assert torch.equal(evaluated[i][0], windows) and torch.equal(evaluated[i][1], masks)
        for mb_windows, mb_masks in evaluated[i + 1 : end_i]:
            same = (mb_windows[:, None] == windows).flatten(2).all(-1) & (mb_masks[:, None] == masks).all(-1)
            assert same.any(-1).all()
    # Values: each rollout's bootstrap V(s_T) of the next step's window and, on time limits, the
    # values of the final observations (step count 5), whose windows end their own episode.
    final = [(w, m) for ws, ms in valued for w, m in zip(ws, ms) if w[-1, 0] == 5]
    assert (len(final) > 0) == (end == "Truncate")
    for window, mask in final:
        assert_is_episode_window(window, mask, last=5.0)


def test_evaluation_rebuilds_the_window(tmp_path, monkeypatch):
    result = ppo.train(SCRIPT.args(tmp_path, env_id="test/CounterTerminate-v0", context_len=3, eval_episodes=0))
    seen = []
    original = ppo.Agent.greedy_action

    def record(self, windows, masks=None):
        seen.append(windows[0, :, 0].tolist())
        return original(self, windows, masks)

    monkeypatch.setattr(ppo.Agent, "greedy_action", record)
    ppo.evaluate(result["model_path"], episodes=2)
    # The window grows from the episode start up to K = 3 slots, then slides; each episode anew.
    assert seen == 2 * [[0.0], [0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]


# ---------------------------------------------------------------------------------------------
# Velocity-hidden environments and clear errors
# ---------------------------------------------------------------------------------------------
def test_mask_velocity_keeps_cart_position_and_pole_angle():
    env = ppo.make_env("CartPole-v1", 0, False, "", mask_velocity=True)()
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(1)
    assert env.observation_space.shape == (2,)
    np.testing.assert_allclose(obs, np.array(env.unwrapped.state)[[0, 2]], rtol=1e-6)
    env.close()


def test_mask_velocity_is_documented_and_refused_where_it_has_no_meaning(tmp_path, in_tmp):
    proc = run_cli("ppo_transformer.py", "--help", cwd=in_tmp)
    assert (
        "--mask-velocity" in proc.stdout and "--context-len" in proc.stdout and "--position-from-start" in proc.stdout
    )
    with pytest.raises(ppo.ConfigError, match="--mask-velocity knows the velocity components of CartPole-v1"):
        ppo.train(SCRIPT.args(tmp_path, env_id="test/DictObs-v0", mask_velocity=True))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(context_len=0), "--context-len must be positive, got 0"),
        (dict(num_layers=0), "--num-layers must be positive, got 0"),
        (dict(num_heads=-1), "--num-heads must be positive, got -1"),
        (dict(embed_dim=0), "--embed-dim must be positive, got 0"),
        (dict(embed_dim=30, num_heads=4), "--embed-dim 30 does not divide into 4 attention heads"),
    ],
)
def test_bad_network_settings_are_refused_clearly(tmp_path, overrides, message):
    with pytest.raises(ppo.ConfigError, match=message):
        ppo.train(SCRIPT.args(tmp_path, **overrides))


def test_agent_with_hidden_velocities_trains_saves_and_evaluates(tmp_path):
    result = ppo.train(SCRIPT.args(tmp_path, position_from_start=True, num_layers=2, mask_velocity=True))
    agent, saved, *_ = ppo.load_agent(result["model_path"])
    assert saved.position_from_start and saved.mask_velocity and agent.encoder.position_from_start is not None
    assert agent.encoder.embed.in_features == 2
    assert len(ppo.evaluate(result["model_path"], episodes=2)) == 2


def test_a_model_saved_with_the_removed_switches_at_their_defaults_still_plays(tmp_path):
    # --gated, --separate-critic, --clip-each-network and --lr-schedule-steps are gone; their defaults are
    # the network and training of today, so a model.pt that names them still loads.
    result = ppo.train(SCRIPT.args(tmp_path, eval_episodes=0))
    model = torch.load(result["model_path"], weights_only=True)
    removed = dict(gated=False, separate_critic=True, clip_each_network=True, lr_schedule_steps=0)
    model["args"].update(removed)
    torch.save(model, tmp_path / "former.pt")
    assert len(ppo.evaluate(str(tmp_path / "former.pt"), episodes=1)) == 1
    # One made with a switch away from today's behaviour is refused, not taken for what this version runs.
    model["args"]["clip_each_network"] = False
    torch.save(model, tmp_path / "former.pt")
    with pytest.raises(ppo.ConfigError, match=r"no longer has: \{'clip_each_network': False\}"):
        ppo.evaluate(str(tmp_path / "former.pt"))


# ---------------------------------------------------------------------------------------------
# Memory is what learns: the same budget with a window of one observation fails
# ---------------------------------------------------------------------------------------------
def test_memoryless_agent_does_not_learn_with_hidden_velocities(tmp_path):
    memoryless = dataclasses.replace(SCRIPT, learn={**SCRIPT.learn, "context_len": 1})
    assert learning_score(memoryless, tmp_path) < SCRIPT.broken_at_most
