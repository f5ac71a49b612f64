"""DeepSpeed's pipeline schedule, simulated, against the exposure comm.pp_seconds charges.

The schedule is DeepSpeed's TrainSchedule (deepspeed/runtime/pipe/schedule.py): 2 (m + p - 1)
steps, a stage's step is a forward or a backward by the parity of step and stage, and its
sends and receives are separate blocking calls issued at the step's start. A send and its
receive meet (both stages wait for the later one), then take the transfer's time on both."""

import pytest

from reports.model.comm import DEEPSPEED_P2P_EXPOSURE


def _micro_batch(step: int, stage: int, stages: int) -> tuple[int, bool]:
    # TrainSchedule._step_to_micro_batch and its four helpers
    if step % 2 == 0 and stage % 2 == 0:
        return step // 2 - stage // 2, True
    if step % 2 and stage % 2:
        return (step - 1) // 2 - stage // 2, True
    if step % 2 == 0:
        return step // 2 - stages + (stage + 1) // 2, False
    return (step - 1) // 2 - stages + 1 + stage // 2, False


def _commands(stage: int, stages: int, m: int) -> list[tuple[str, int]]:
    valid = range(m).__contains__
    cmds, prev = [], -1
    for step in range(2 * (m + stages - 1)):
        mb, forward = _micro_batch(step, stage, stages)
        if forward:
            if valid(prev) and stage > 0:
                cmds.append(("send_grad", prev))
            if valid(mb) and stage > 0:
                cmds.append(("recv_act", mb))
        else:
            if valid(mb) and stage < stages - 1:
                cmds.append(("recv_grad", mb))
            if valid(prev) and stage < stages - 1:
                cmds.append(("send_act", prev))
        if valid(mb):
            cmds.append(("F" if forward else "B", mb))
        prev = mb
    return cmds


_PEER = {"send_act": (1, "recv_act"), "recv_act": (-1, "send_act"),
         "send_grad": (-1, "recv_grad"), "recv_grad": (1, "send_grad")}


def _span(stages: int, m: int, fwd: float, bwd: float, send: float) -> float:
    progs = [_commands(r, stages, m) for r in range(stages)]
    at, clock = [0] * stages, [0.0] * stages
    moved = True
    while moved:
        moved = False
        for r in range(stages):
            while at[r] < len(progs[r]):
                kind, mb = progs[r][at[r]]
                if kind in ("F", "B"):
                    clock[r] += fwd if kind == "F" else bwd
                else:
                    step, want = _PEER[kind]
                    q = r + step
                    if at[q] >= len(progs[q]) or progs[q][at[q]] != (want, mb):
                        break  # the peer is not there yet
                    clock[r] = clock[q] = max(clock[r], clock[q]) + send
                    at[q] += 1
                at[r] += 1
                moved = True
    assert all(at[r] == len(progs[r]) for r in range(stages)), "deadlock"
    return max(clock)


def test_the_schedule_itself_costs_nothing_beyond_its_transfers():
    # free sends: exactly the 1F1B span (m + p - 1)(F + B), whatever the F:B split
    assert _span(35, 240, 1.0, 3.0, 0.0) == pytest.approx(274 * 4.0)
    assert _span(12, 64, 1.0, 2.0, 0.0) == pytest.approx(75 * 3.0)


@pytest.mark.parametrize("stages, m", [(35, 240), (35, 160), (12, 256)])
def test_each_transfer_crosses_the_critical_path_about_twice(stages, m):
    # MT-NLG's and BLOOM's pipelines; full recompute makes the backward 3x the forward
    base = _span(stages, m, 1.0, 3.0, 0.0)
    c = 0.01
    per_transfer = (_span(stages, m, 1.0, 3.0, c) - base) / (m + stages - 1) / (2 * c)
    assert per_transfer == pytest.approx(DEEPSPEED_P2P_EXPOSURE, abs=0.1)
