"""Env workers as Ray actors: step for step equal to the subprocess workers; errors surface.

One local Ray for the module (its start-up costs seconds). Ray's workers inherit this process's
environment, so ``PYTHONPATH`` carries the test folder (``envs_fakes``, ``gymma_fakes``) to them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qmix_edge.envs import EnvError, EnvFactory, SubprocVectorEnv, VectorTeamEnv, make_vector_env

pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    from qmix_edge.envs.ray_session import ray_session

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), before]))
    try:
        with ray_session(num_cpus=2):
            yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _drive(vec: VectorTeamEnv, steps: int, seed: int) -> list:
    """Random allowed actions, some finished envs reset each step with fresh seeds; every output."""
    rng = np.random.default_rng(seed)
    n = vec.n_envs
    ts = vec.reset_all([seed * 100 + i for i in range(n)])
    out: list = [tuple(ts)]
    next_seed = seed * 100 + n
    for _ in range(steps):
        acts = np.stack(
            [[rng.choice(np.flatnonzero(row)) for row in env_avail] for env_avail in ts.avail]
        )
        res = vec.step(acts)
        out.append((*res.next, *res[1:], vec.finished.copy()))
        ts = res.next
        done = np.flatnonzero(vec.finished)[::2].tolist()
        if done:
            first = vec.reset_envs(done[::-1], list(range(next_seed, next_seed + len(done))))
            next_seed += len(done)
            out.append(tuple(first))
            ts = ts._replace(
                **{f: getattr(ts, f).copy() for f in ("obs", "avail", "alive", "state")}
            )
            for k, i in enumerate(done[::-1]):
                for f in ("obs", "avail", "alive", "state"):
                    getattr(ts, f)[i] = getattr(first, f)[k]
    return out


@pytest.mark.parametrize(
    ("env_id", "kwargs", "n_envs", "workers"),
    [
        ("leaving_agents", {"lifetimes": (1, 3, 4), "max_cycles": 5}, 5, 2),
        ("masked_choice", {"max_cycles": 3}, 3, 1),
        ("lbforaging:Foraging-5x5-2p-1f-coop-v3", {"max_episode_steps": 12}, 4, 2),
    ],
)
def test_envs_ray_workers_equal_subprocess_workers(
    env_id: str, kwargs: dict, n_envs: int, workers: int
) -> None:
    from qmix_edge.envs.ray_vector import RayVectorEnv

    factory = EnvFactory(env_id, n_agents=3, env_kwargs=kwargs)
    with SubprocVectorEnv([factory] * n_envs, n_workers=workers) as sub:
        want = _drive(sub, 40, seed=1)
    with RayVectorEnv([factory] * n_envs, n_workers=workers) as ray_vec:
        assert ray_vec.spec == factory().spec
        got = _drive(ray_vec, 40, seed=1)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_envs_ray_step_async_and_make_vector_env() -> None:
    ref = make_vector_env("speaker_pair", 3)
    with make_vector_env("speaker_pair", 3, backend="ray", n_workers=2) as vec:
        seeds = [4, 5, 6]
        np.testing.assert_array_equal(ref.reset_all(seeds).obs, vec.reset_all(seeds).obs)
        acts = np.array([[0, 1], [1, 2], [2, 4]])
        vec.step_async(acts)
        with pytest.raises(EnvError, match="already in progress"):
            vec.step_async(acts)
        with pytest.raises(EnvError, match="step is in progress"):
            vec.reset_all(seeds)
        got, want = vec.step_wait(), ref.step(acts)
        np.testing.assert_array_equal(got.next.obs, want.next.obs)
        np.testing.assert_array_equal(got.reward, want.reward)
        with pytest.raises(EnvError, match="no step in progress"):
            vec.step_wait()
    with pytest.raises(EnvError, match="closed"):
        vec.reset_all(seeds)


def test_envs_ray_worker_errors_reach_the_caller() -> None:
    from qmix_edge.envs.ray_vector import RayVectorEnv

    boom = EnvFactory("envs_fakes:ExplodingEnv", env_kwargs={"fail_at": 2})
    with RayVectorEnv([boom, boom, boom], n_workers=2) as vec:
        with pytest.raises(EnvError, match=r"envs \[0, 1\] were never reset"):
            vec.step(np.zeros((3, 2), np.int64))
        vec.reset_all([0, 1, 2])
        vec.step(np.zeros((3, 2), np.int64))
        with pytest.raises(
            EnvError, match=r"env worker 0 \(envs 0\.\.1\) failed: RuntimeError: boom at step 2"
        ):
            vec.step(np.zeros((3, 2), np.int64))
        vec.reset_all([0, 1, 2])  # still usable after an env's error
        acts = np.zeros((3, 2), np.int64)
        acts[2, 1] = 9
        with pytest.raises(EnvError, match=r"env 2: action 9 .*No env was stepped"):
            vec.step(acts)
    with pytest.raises(EnvError, match="continuous action space"):
        RayVectorEnv([EnvFactory("envs_fakes:continuous_env")] * 2, n_workers=2)
    with pytest.raises(EnvError, match=r"3 env workers x 1 CPU need 3 CPUs; the Ray cluster has 2"):
        RayVectorEnv([boom] * 3, n_workers=3)

    dies = EnvFactory("envs_fakes:ExplodingEnv", env_kwargs={"fail_at": 1, "how": "exit"})
    with RayVectorEnv([dies], n_workers=1) as vec:
        vec.reset_all([0])
        with pytest.raises(EnvError, match=r"env worker 0 \(a Ray actor\) died"):
            vec.step(np.zeros((1, 2), np.int64))
        with pytest.raises(EnvError, match="unusable"):
            vec.reset_all([0])


def test_envs_do_not_import_ray_and_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys, qmix_edge.envs, qmix_edge.envs.vector, qmix_edge.envs.ray_session; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    from qmix_edge.envs.ray_session import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(EnvError, match=r"pip install 'qmix-edge\[ray\]'"):
        import_ray()


def test_envs_local_ray_lives_on_loopback_without_dashboard() -> None:
    import ray

    nodes = ray.nodes()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert ray.get_runtime_context().get_node_id() == nodes[0]["NodeID"]
    assert not ray.worker.get_dashboard_url()  # type: ignore[attr-defined]
