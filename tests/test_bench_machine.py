"""A bench run records the machine it ran on, and a report flags a seed whose paired runs ran on two machines
(training is deterministic on one machine, not bit-identical across machines)."""

import os
import re

import torch

from yolo_kd.bench.machine import describe, fingerprint, machine_note


def test_fingerprint_names_the_machine_and_repeats_within_one_process():
    machine = fingerprint()
    assert machine == fingerprint()  # the numerics digest is deterministic here
    if not torch.cuda.is_available():  # Ultralytics' device spellings, on a machine without CUDA: the same CPU run
        assert fingerprint("0") == fingerprint("cuda:0") == machine
    assert re.fullmatch(r"[0-9a-f]{8}", machine["numerics"])
    assert machine["cores"] == os.cpu_count() and machine["torch"] == torch.__version__ and machine["gpu"] is None
    assert describe(machine) == (f"{machine['cpu']}, {os.cpu_count()} cores, torch {torch.__version__}, "
                                 f"numerics {machine['numerics']}")


def test_report_names_one_machine_and_warns_of_a_seed_run_on_two():
    here = fingerprint()
    elsewhere = {**here, "numerics": "0" * 8 if here["numerics"] != "0" * 8 else "1" * 8}
    runs = [{"label": label, "seed": seed, "machine": here} for seed in (1, 2) for label in ("baseline", "pool")]
    assert machine_note(runs) == f"\nMachine: {describe(here)}.\n"
    assert machine_note([{"label": "baseline", "seed": 1}]) == ""  # runs from before machines were recorded
    runs += [{"label": "baseline", "seed": 3, "machine": elsewhere}, {"label": "pool", "seed": 3, "machine": here}]
    note = machine_note(runs)
    assert f"Machines: {describe(here)} (seeds 1, 2, 3); {describe(elsewhere)} (seed 3)." in note
    assert "Warning: seed 3 ran on 2 machines" in note
    assert "seed 1 " not in note and "seed 2 " not in note


def test_report_names_the_step_time_machine_where_no_training_run_does():
    here = fingerprint()
    elsewhere = {**here, "cpu": here["cpu"] + " (another)"}
    assert machine_note([], here) == f"\nMachine: {describe(here)}.\n"  # a step-time-only bench
    runs = [{"label": "baseline", "seed": 1, "machine": here}]
    assert machine_note(runs, here) == machine_note(runs)  # the same machine is named once
    assert machine_note(runs, elsewhere) == (f"\nMachine: {describe(here)}.\n"
                                             f"\nMachine (step time): {describe(elsewhere)}.\n")
