"""Speed and size of the device policy: AgentPolicy.act() vs bare onnxruntime vs torch eager.

For a 64-wide MLP and GRU agent (obs 18, 5 actions, last-action input, batch 1, one thread) it
prints, all measured in this run:
- per-call latency of `AgentPolicy.act` (validation, state carrying included), of a bare
  ``InferenceSession.run`` with a prebuilt feed (same session options; the baseline of the ratio),
  of the session's unvalidated inner ``run`` (`act` itself runs through onnxruntime I/O binding on
  fixed buffers, so it can beat the baseline), and of the same agent network in torch eager mode
  (``torch.inference_mode``), with the ratios;
- the cost of a float64 observation, which `act` converts into its float32 input buffer, against
  the same call with float32;
- the artifact size per agent (fp32 graph; int8 and fp16 variants);
- process start to first action (a fresh interpreter that imports the runtime, loads and verifies
  the artifact, warms up and acts once) and its peak RSS, against a baseline process that only
  imports numpy and onnxruntime.

Goals (issue 3): act() within 1.5x of bare onnxruntime and >= 2.5x faster than torch eager;
artifact < 150 KB per agent; process start to first action < 300 ms.

    .venv/bin/python bench/policy_speed.py [--calls 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import torch

from qmix_edge.envs import AgentSpec, EnvSpec
from qmix_edge.export import AgentGraph, export_agent_networks
from qmix_edge.runtime.policy import AgentPolicy, session_options
from qmix_edge.runtime.tensors import TensorNames
from qmix_edge.train.networks import AgentNetwork

OBS_DIM, N_ACTIONS, HIDDEN = 18, 5, 64


def per_call_us(fns: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of the mean time per call (us) of each ``name: (fn, calls)``.

    The candidates are interleaved within every repeat, so load from other processes on the
    machine hits them alike and the ratios stay meaningful.
    """
    for fn, calls in fns.values():
        for _ in range(min(calls, 2000)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, calls) in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


# Peak RSS is the kernel's high-water mark of the process itself (VmHWM; psutil's current RSS
# where /proc is missing): getrusage's ru_maxrss carries the parent's peak across fork/exec.
_CHILD = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from qmix_edge.runtime.policy import AgentPolicy
p = AgentPolicy.load(sys.argv[1], "agent_0")
r = p.act(np.zeros({obs}, np.float32))
t1 = time.perf_counter()
import json
print(json.dumps({{"in_process_ms": (t1 - t0) * 1e3, "peak_rss_kib": _peak_kib(), "action": r.action}}), flush=True)
"""

_PEAK = """
def _peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import psutil
    return psutil.Process().memory_info().rss // 1024
"""

_BASELINE = """
import json
import numpy, onnxruntime
print(json.dumps({"peak_rss_kib": _peak_kib()}), flush=True)
"""


def start_to_first_action(root: Path, runs: int) -> dict[str, float]:
    """Wall time from spawning a fresh interpreter to its first action (median of ``runs``)."""
    walls, inproc, rss, base_walls, base_rss = [], [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _PEAK + _CHILD.format(obs=OBS_DIM), str(root)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        walls.append((time.perf_counter() - t0) * 1e3)
        proc.wait()
        info = json.loads(line)
        inproc.append(info["in_process_ms"])
        rss.append(info["peak_rss_kib"] / 1024)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _PEAK + _BASELINE], capture_output=True, text=True, check=True
        )
        base_walls.append((time.perf_counter() - t0) * 1e3)
        base_rss.append(json.loads(out.stdout)["peak_rss_kib"] / 1024)
    return {
        "wall_ms": statistics.median(walls),
        "in_process_ms": statistics.median(inproc),
        "peak_rss_mib": statistics.median(rss),
        "baseline_wall_ms": statistics.median(base_walls),
        "baseline_peak_rss_mib": statistics.median(base_rss),
    }


def bench_kind(kind: str, root: Path, calls: int, repeats: int) -> dict[str, float]:
    spec = EnvSpec(
        "bench", tuple(AgentSpec(f"agent_{i}", OBS_DIM, N_ACTIONS) for i in range(3)), 30, 25
    )
    torch.manual_seed(0)
    net = AgentNetwork(spec, kind, hidden_dim=HIDDEN, use_prev_action=True)  # type: ignore[arg-type]
    out = root / kind
    manifest = export_agent_networks(net, spec, out, quantize=["int8", "fp16"])
    entry = manifest.agent("agent_0")

    policy = AgentPolicy.load(out, "agent_0")
    rng = np.random.default_rng(0)
    obs = rng.normal(size=OBS_DIM).astype(np.float32)
    obs64 = obs.astype(np.float64)  # a sensor's float64 array: act() converts it in its buffer
    mask = np.ones(N_ACTIONS, dtype=bool)

    session = ort.InferenceSession(
        (out / entry.file).read_bytes(), session_options(), providers=["CPUExecutionProvider"]
    )
    feed = {
        TensorNames.OBS: obs[None].copy(),
        TensorNames.ACTION_MASK: mask[None].copy(),
        TensorNames.PREV_ACTION: np.zeros(1, np.int64),
    }
    if entry.recurrent:
        feed[TensorNames.H_IN] = np.zeros((1, HIDDEN), np.float32)
    names = [o.name for o in session.get_outputs()]

    graph = AgentGraph(net, spec, 0)
    t_inputs = {k: torch.from_numpy(v) for k, v in feed.items()}

    def torch_call() -> object:
        with torch.inference_mode():
            return graph(**t_inputs)

    results = per_call_us(
        {
            "act_us": (lambda: policy.act(obs, mask), calls),
            "bare_ort_us": (lambda: session.run(names, feed), calls),
            "inner_ort_us": (lambda: session._sess.run(names, feed, None), calls),
            "torch_eager_us": (torch_call, max(calls // 4, 1000)),
            "act_no_mask_us": (lambda: policy.act(obs), calls),
            "act_float64_us": (lambda: policy.act(obs64, mask), calls),
        },
        repeats,
    )
    results["size_fp32_kib"] = entry.size_bytes / 1024
    for v in entry.variants:
        results[f"size_{v.precision}_kib"] = v.size_bytes / 1024
        results[f"agreement_{v.precision}"] = v.action_agreement
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per timing sample")
    parser.add_argument("--repeats", type=int, default=5, help="timing samples (median)")
    parser.add_argument("--starts", type=int, default=5, help="process starts to time (median)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    print(
        f"policy_speed: obs {OBS_DIM}, {N_ACTIONS} actions, hidden {HIDDEN}, batch 1, 1 thread; "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, "
        f"{psutil.cpu_count(logical=True)} logical CPUs"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="qmix-bench-") as tmp:
        root = Path(tmp)
        for kind in ("mlp", "gru"):
            r = bench_kind(kind, root, args.calls, args.repeats)
            vs_bare = r["act_us"] / r["bare_ort_us"]
            vs_torch = r["torch_eager_us"] / r["act_us"]
            print(
                f"{kind}: act {r['act_us']:.2f} us (no mask {r['act_no_mask_us']:.2f}), bare "
                f"onnxruntime {r['bare_ort_us']:.2f} us (its unvalidated inner run "
                f"{r['inner_ort_us']:.2f} us), torch eager {r['torch_eager_us']:.2f} us"
            )
            print(
                f"{kind}:   float64 obs: act {r['act_float64_us']:.2f} us, "
                f"{r['act_float64_us'] - r['act_us']:+.2f} us against float32 "
                f"({r['act_float64_us'] / r['act_us']:.3f}x): the conversion into the input buffer"
            )
            print(
                f"{kind}:   act / bare = {vs_bare:.2f}x (goal <= 1.5x), torch / act = "
                f"{vs_torch:.2f}x (goal >= 2.5x)"
            )
            print(
                f"{kind}:   size per agent fp32 {r['size_fp32_kib']:.1f} KiB (goal < 146.5 KiB), "
                f"int8 {r['size_int8_kib']:.1f} KiB (agreement {r['agreement_int8']:.2%}), "
                f"fp16 {r['size_fp16_kib']:.1f} KiB (agreement {r['agreement_fp16']:.2%})"
            )
            ok &= vs_bare <= 1.5 and vs_torch >= 2.5 and r["size_fp32_kib"] * 1024 < 150_000
        s = start_to_first_action(root / "gru", args.starts)
        print(
            f"gru: process start to first action {s['wall_ms']:.0f} ms (in-process "
            f"{s['in_process_ms']:.0f} ms; goal < 300 ms), peak RSS {s['peak_rss_mib']:.1f} MiB; "
            f"baseline (numpy + onnxruntime import only) {s['baseline_wall_ms']:.0f} ms, "
            f"{s['baseline_peak_rss_mib']:.1f} MiB; ratio {s['wall_ms'] / s['baseline_wall_ms']:.2f}x"
        )
        ok &= s["wall_ms"] < 300
    print("all goals met" if ok else "some goals missed (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
