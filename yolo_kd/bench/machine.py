"""Which machine a bench run ran on. Training is deterministic on one machine but not bit-identical across machines
(another CPU or GPU picks other float kernels), so a paired difference holds only between runs of one machine.

A run's `machine` is its processor, core count, GPU (with the CUDA version) and torch version, and `numerics`: a
digest of a fixed float computation on the CPU (a seeded conv net's forward, backward and three SGD steps, in the
run's own process and threads), which differs where the CPU kernels' arithmetic does. A report names the machine of
its runs and flags a seed whose runs come from more than one (a folder of runs resumed elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import platform


def cpu_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics() -> str:
    """8 hex digits of the parameters after three SGD steps of a seeded Conv-BN-SiLU-Conv net on seeded data."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.SiLU(),
                                  torch.nn.Conv2d(16, 8, 3, stride=2))
        x = torch.randn(4, 3, 32, 32)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
    data = b"".join(p.detach().numpy().tobytes() for p in net.parameters())
    return hashlib.sha1(data).hexdigest()[:8]


def on_cuda(device) -> bool:
    """Whether a run on `device` (Ultralytics' spelling: cpu, 0, 0,1, cuda:0, mps) runs on a CUDA GPU."""
    import torch

    return torch.cuda.is_available() and str(device) not in {"cpu", "mps"}


def fingerprint(device: str = "cpu") -> dict:
    """The machine a run on `device` ran on: {cpu, cores, gpu, torch, numerics}; gpu is None off CUDA."""
    import torch

    gpu = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if on_cuda(device) else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "numerics": numerics()}


def describe(machine: dict) -> str:
    """One line: 'AMD EPYC, 2 cores, torch 2.14.1, numerics 1a2b3c4d' (the GPU after the cores when there is one)."""
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine['cpu']}, {machine['cores']} cores{gpu}, torch {machine['torch']}, numerics {machine['numerics']}"


def machine_note(results: list[dict], step_machine: dict | None = None) -> str:
    """The report's lines on where its runs ran: the one machine, or each machine's seeds and a warning per seed
    whose runs ran on more than one; then the step-time bench's machine (`step_machine`, measured in the report's
    own process) where it is not the training runs' one. Runs from before machines were recorded are left out; ''
    when none is known."""
    seeds: dict[str, set] = {}
    for r in results:
        if r.get("machine"):
            seeds.setdefault(describe(r["machine"]), set()).add(r["seed"])
    step = describe(step_machine) if step_machine else None
    step_line = f"\nMachine{' (step time)' if seeds else ''}: {step}.\n" if step and step not in seeds else ""
    if len(seeds) <= 1:
        return "".join(f"\nMachine: {name}.\n" for name in seeds) + step_line
    named = [f"{name} (seed{'s' * (len(s) > 1)} {', '.join(map(str, sorted(s)))})" for name, s in seeds.items()]
    lines = ["", "Machines: " + "; ".join(named) + "."]
    for seed in sorted(set.union(*seeds.values())):
        count = sum(seed in s for s in seeds.values())
        if count > 1:
            lines.append(f"Warning: seed {seed} ran on {count} machines (training is not bit-identical across them), "
                         "so its paired differences mix machines: delete the seed's run folders made elsewhere and "
                         "re-run it on one machine.")
    return "\n".join(lines) + "\n" + step_line
