"""The learner's TD target: termination, truncation, padding, absent agents, unavailable actions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from qmix_edge.envs import AgentSpec, EnvSpec
from qmix_edge.train.config import TrainConfig
from qmix_edge.train.learner import Learner, TensorBatch, unroll
from qmix_edge.train.registry import build_models
from qmix_edge.train.replay import EpisodeBatch, EpisodeReplay, empty_episodes

N, OBS, ACTS, T = 2, 3, 4, 3
SPEC = EnvSpec("test", tuple(AgentSpec(f"a{i}", OBS, ACTS) for i in range(N)), 5, T)


def _learner(algo: str = "qmix", **kw: object) -> Learner:
    torch.manual_seed(0)
    cfg = TrainConfig(algo=algo, hidden_dim=8, mixing_embed_dim=4, hypernet_embed=8, **kw)  # type: ignore[arg-type]
    net, mixer = build_models(cfg, SPEC)
    return Learner(cfg, net, mixer)


def _batch(length: int = 2, terminated: bool = False) -> EpisodeBatch:
    rng = np.random.default_rng(0)
    b = empty_episodes(2, T, N, OBS, 5, ACTS)
    b.obs[:] = rng.normal(size=b.obs.shape)
    b.state[:] = rng.normal(size=b.state.shape)
    b.avail[:] = True
    b.alive[:] = True
    b.actions[:] = rng.integers(0, ACTS, size=b.actions.shape)
    b.reward[:] = rng.normal(size=b.reward.shape)
    b.filled[:, :length] = True
    b.terminated[:, length - 1] = terminated
    return b


def _loss(learner: Learner, b: EpisodeBatch) -> float:
    return float(learner.loss(TensorBatch(b))[0].detach())


@pytest.mark.parametrize("algo", ["qmix", "vdn", "iql"])
def test_termination_does_not_bootstrap_but_truncation_does(algo: str) -> None:
    learner = _learner(algo)
    for terminated, should_change in ((True, False), (False, True)):
        b = _batch(length=2, terminated=terminated)
        before = _loss(learner, b)
        b.obs[:, 2] += 5.0  # the state after the last step
        b.state[:, 2] += 5.0
        assert (_loss(learner, b) != pytest.approx(before)) == should_change


@pytest.mark.parametrize("algo", ["qmix", "vdn", "iql"])
def test_padding_steps_do_not_count(algo: str) -> None:
    learner = _learner(algo)
    b = _batch(length=1, terminated=True)
    before = _loss(learner, b)
    b.obs[:, 2:] += 3.0
    b.reward[:, 1:] += 100.0
    b.actions[:, 1:] = (b.actions[:, 1:] + 1) % ACTS
    assert _loss(learner, b) == pytest.approx(before)


@pytest.mark.parametrize("algo", ["qmix", "vdn", "iql"])
def test_absent_agent_utilities_do_not_leak(algo: str) -> None:
    learner = _learner(algo)
    b = _batch(length=3)
    b.alive[:, 1:, 1] = False  # agent 1 leaves after the first step
    b.avail[:, 1:, 1] = False
    b.avail[:, 1:, 1, 0] = True  # absent agents: only the placeholder action 0
    b.actions[:, 1:, 1] = 0
    before = _loss(learner, b)
    b.obs[:, 1:, 1] += 10.0  # whatever an absent agent's network would say
    assert _loss(learner, b) == pytest.approx(before)


def test_unavailable_actions_never_enter_targets() -> None:
    for double_q in (True, False):
        learner = _learner("vdn", double_q=double_q)
        b = _batch(length=3)
        b.avail[:, :, :, 3] = False  # action 3 is never allowed
        b.actions[:] = b.actions % 3
        before = _loss(learner, b)
        with torch.no_grad():
            for net in (learner.agent_net, learner.target_agent_net):
                net.out.bias[:, 3] += 1e4  # would dominate any max that let it in
        assert _loss(learner, b) == pytest.approx(before, rel=1e-5)


def test_double_q_picks_with_online_and_evaluates_with_target() -> None:
    learner = _learner("vdn", gamma=1.0)
    b = _batch(length=1, terminated=False)
    tb = TensorBatch(b)
    with torch.no_grad():
        # A target net equal to the online net could not tell the two roles apart: turn its
        # preferences around (negated output layer), so online and target pick differently.
        learner.target_agent_net.out.weight.neg_()
        learner.target_agent_net.out.bias.neg_()
        q = unroll(learner.agent_net, tb.obs, tb.prev_actions)
        tq = unroll(learner.target_agent_net, tb.obs, tb.prev_actions)
        chosen = q[:, 0].gather(-1, tb.actions[:, 0].unsqueeze(-1)).squeeze(-1).sum(-1)

        def loss_with(pick: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            next_tot = value[:, 1].gather(-1, pick[:, 1].argmax(-1, keepdim=True)).squeeze(-1)
            return ((chosen - (tb.reward[:, 0] + next_tot.sum(-1))) ** 2).mean()

        expected = loss_with(q, tq)  # online picks (t = 1), target evaluates
        for other in (loss_with(tq, tq), loss_with(q, q), loss_with(tq, q)):
            assert not torch.allclose(other, expected)  # the roles are distinguishable here
    torch.testing.assert_close(learner.loss(tb)[0], expected)


def test_update_clips_gradients_and_copies_targets() -> None:
    learner = _learner("qmix", grad_norm_clip=1e-3, target_update_freq=2)
    replay = EpisodeReplay(4, T, N, OBS, 5, ACTS, np.random.default_rng(0))
    replay.add(_batch(length=3), [0, 1])
    before = [p.detach().clone() for p in learner.agent_net.parameters()]
    info = learner.update(replay.sample(2))
    assert info["grad_norm"] > 1e-3  # the raw norm is reported, the step used the clipped one
    moved = sum(
        float((p.detach() - q).abs().sum())
        for p, q in zip(learner.agent_net.parameters(), before, strict=True)
    )
    assert 0 < moved < 0.1  # Adam's first step moves each weight by about lr
    target = learner.target_agent_net.state_dict()
    assert not all(torch.equal(v, target[k]) for k, v in learner.agent_net.state_dict().items())
    learner.update(replay.sample(2))  # second update: hard copy
    target = learner.target_agent_net.state_dict()
    assert all(torch.equal(v, target[k]) for k, v in learner.agent_net.state_dict().items())


def test_gru_unroll_resets_hidden_state_per_episode() -> None:
    learner = _learner("vdn", agent_network="gru")
    b = _batch(length=3)
    tb = TensorBatch(b)
    q_all = unroll(learner.agent_net, tb.obs, tb.prev_actions)
    q_one = unroll(learner.agent_net, tb.obs[:1], tb.prev_actions[:1])
    torch.testing.assert_close(q_all[:1], q_one)  # episodes in a batch do not share state
    q_step, _ = learner.agent_net(tb.obs[:, 0], None, None)
    torch.testing.assert_close(q_all[:, 0], q_step)  # t = 0 starts from zeros


def test_rmsprop_option() -> None:
    learner = _learner("qmix", optimizer="rmsprop")
    assert isinstance(learner.optimizer, torch.optim.RMSprop)
    assert learner.optimizer.defaults["alpha"] == 0.99 and learner.optimizer.defaults["eps"] == 1e-5


def test_running_reward_statistics_match_numpy() -> None:
    from qmix_edge.train.learner import RunningMeanStd

    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=n) for n in (1, 7, 50, 3)]
    stats = RunningMeanStd()
    for c in chunks:
        stats.update(c)
    allv = np.concatenate(chunks)
    assert stats.count == allv.size
    assert stats.mean == pytest.approx(allv.mean())
    assert stats.std == pytest.approx(allv.std())
    again = RunningMeanStd()
    again.load_state_dict(stats.state_dict())
    assert again.state_dict() == stats.state_dict()


def test_standardised_rewards_enter_the_target() -> None:
    learner = _learner("vdn", standardise_rewards=True)
    b = _batch(length=1, terminated=True)
    before = _loss(learner, b)
    learner.reward_stats.update(np.array([100.0, 102.0]))  # mean 101, std 1
    b2 = _batch(length=1, terminated=True)
    b2.reward[:] = b.reward + 101.0
    assert _loss(learner, b2) == pytest.approx(before, rel=1e-5)


def test_radam_option() -> None:
    learner = _learner("qmix", optimizer="radam")
    assert isinstance(learner.optimizer, torch.optim.RAdam)


@pytest.mark.parametrize("optimizer", ["adam", "radam", "rmsprop"])
def test_optimizer_state_saved_per_parameter_resumes_exactly(optimizer: str) -> None:
    # Runs written before the flat parameter buffers saved one optimizer state per weight tensor:
    # such a checkpoint loads, and the next update is the one torch's per-tensor optimizer makes.
    replay = EpisodeReplay(4, T, N, OBS, 5, ACTS, np.random.default_rng(0))
    replay.add(_batch(length=3), [0, 1])
    batches = [replay.sample(2) for _ in range(3)]
    ref = _learner("qmix", optimizer=optimizer, grad_norm_clip=0.5)
    assert ref.mixer is not None
    params = [*ref.agent_net.parameters(), *ref.mixer.parameters()]
    kinds = {
        "adam": lambda: torch.optim.Adam(params, lr=5e-4),
        "radam": lambda: torch.optim.RAdam(params, lr=5e-4),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=5e-4, alpha=0.99, eps=1e-5),
    }
    per_tensor = kinds[optimizer]()

    def reference_update(batch: EpisodeBatch) -> None:
        loss, _ = ref.loss(TensorBatch(batch))
        per_tensor.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        per_tensor.step()

    for b in batches[:2]:
        reference_update(b)
    buffer = io.BytesIO()  # through bytes, as a checkpoint: nothing shared with `ref`
    torch.save({**ref.state_dict(), "optimizer": per_tensor.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert len(saved["optimizer"]["param_groups"][0]["params"]) == len(params) > 2

    resumed = _learner("qmix", optimizer=optimizer, grad_norm_clip=0.5)
    resumed.load_state_dict(saved, updates=2)
    resumed.update(batches[2])
    reference_update(batches[2])
    for name, value in ref.agent_net.state_dict().items():
        torch.testing.assert_close(resumed.agent_net.state_dict()[name], value)
    assert ref.mixer is not None and resumed.mixer is not None
    for name, value in ref.mixer.state_dict().items():
        torch.testing.assert_close(resumed.mixer.state_dict()[name], value)
