"""The tests of --compile and --cudagraphs, written once and run for each script that offers them
(helpers.for_scripts("compile"): ppo_continuous.py, ppo_atari.py, ppo_transformer.py, sac.py).
"""

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from helpers import for_scripts, read_scalars


def tensors_of(saved) -> dict:
    """Every tensor of a saved model file, by its path of keys."""
    if isinstance(saved, torch.Tensor):
        return {"": saved}
    if isinstance(saved, dict):
        return {f"{k}/{p}": t for k, v in saved.items() for p, t in tensors_of(v).items()}
    return {}


@for_scripts("compile")
def test_compiled_training_computes_what_the_eager_one_does(sut, tmp_path):
    # --compile runs the same functions through torch.compile. With fallback_random the compiled
    # code draws torch's own random numbers, in the eager order, so a short run must end with
    # the eager run's weights and log the same losses, up to the rounding of fused kernels: a
    # compiled loss that lost a term, a detach or a sign would drift far from them.
    # dynamo.reset keeps the counters of earlier tests' compilations: clear them too, so that
    # the count below is this run's.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = sut.module.train(sut.args(tmp_path / "eager", eval_episodes=0))
    with torch._inductor.config.patch(fallback_random=True):
        compiled = sut.module.train(sut.args(tmp_path / "compiled", eval_episodes=0, compile=True))
    # The update's losses and the acting pass were compiled: at least two graphs.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2
    weights = [tensors_of(torch.load(r["model_path"], weights_only=True)) for r in (eager, compiled)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-4, atol=1e-5)
    logged = [read_scalars(r["run_dir"]) for r in (eager, compiled)]
    losses = [tag for tag in logged[0] if tag.startswith("losses/")]
    assert losses and all(tag in logged[1] for tag in losses)
    for tag in losses:
        assert [v for _, v in logged[1][tag]] == pytest.approx([v for _, v in logged[0][tag]], rel=1e-3, abs=1e-5), tag


@pytest.mark.parametrize("overrides", [dict(cudagraphs=True), dict(cudagraphs=True, compile=True)])
@for_scripts("compile")
def test_cudagraphs_without_a_gpu_are_refused(sut, tmp_path, overrides):
    with pytest.raises(sut.module.ConfigError, match="--cudagraphs needs --compile and --cuda"):
        sut.module.train(sut.args(tmp_path, **overrides))
    assert not (tmp_path / "runs").exists()  # refused before anything ran


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@for_scripts("compile")
def test_gpu_compiled_and_cudagraphed_runs_stay_near_eager_and_resume(sut, tmp_path):
    # On a GPU the compiled code draws its own random numbers (no fallback_random): the runs
    # cannot match number for number, but every mode must train to finite weights of the eager
    # run's scale, and a checkpoint of a graphed run must resume.
    runs = {}
    for mode, flags in [
        ("eager", {}),
        ("compiled", dict(compile=True)),
        ("graphed", dict(compile=True, cudagraphs=True)),
    ]:
        args = sut.args(tmp_path / mode, cuda=True, eval_episodes=0, **flags)
        args.checkpoint_every = args.total_timesteps
        runs[mode] = sut.module.train(args)
    weights = {m: tensors_of(torch.load(r["model_path"], weights_only=True)) for m, r in runs.items()}
    for mode in ("compiled", "graphed"):
        for name, w in weights[mode].items():
            assert torch.isfinite(w.float()).all(), (mode, name)
            scale = weights["eager"][name].float().abs().max().item() + 1e-3
            assert w.float().abs().max().item() < 10 * scale, (mode, name)
    # A resumed run takes its settings from the checkpoint: double the budget there, so that it
    # carries on, compiled and graphed as saved.
    (path,) = (tmp_path / "graphed").rglob("checkpoint.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"]["total_timesteps"] *= 2
    torch.save(checkpoint, tmp_path / "longer.pt")
    resumed = sut.module.train(sut.module.Args(resume=str(tmp_path / "longer.pt"), cuda=True, progress=False))
    assert resumed["global_step"] == checkpoint["args"]["total_timesteps"] > checkpoint["global_step"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@for_scripts("compile")
def test_gpu_cudagraph_replays_draw_new_noise(sut, tmp_path):
    # A CUDA graph replays recorded kernels; if the random numbers were recorded with them, every
    # replay would sample the same action and the policy's spread would collapse unseen.
    args = sut.args(tmp_path, cuda=True, compile=True, cudagraphs=True)
    sample, obs = sut.sampler(torch.device("cuda"))  # the acting pass and an observation
    sample = sut.module.maybe_compile(sample, args)
    with torch.no_grad():
        draws = [sample(obs).clone() for _ in range(4)]
    for a, b in zip(draws, draws[1:]):
        assert not torch.equal(a, b)
