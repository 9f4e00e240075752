"""Saga: book a trip step by step; when a step fails, durabletask.saga undoes the completed steps in reverse order."""

from __future__ import annotations

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.saga import Saga
from durabletask.worker import TaskHubGrpcWorker


class BookingError(Exception):
    """A booking step failed."""


def book(ctx: task.ActivityContext, params: dict) -> str:
    if params["step"] == params.get("fail_at"):
        raise BookingError(f"no availability for {params['step']}")
    return f"{params['step']} booked"


def cancel(ctx: task.ActivityContext, step: str) -> str:
    return f"{step} cancelled"


STEPS = ("flight", "hotel", "car")


def trip_booking(ctx: task.OrchestrationContext, params: dict):
    """Books every step; on failure the saga runs the compensations of what succeeded, newest first."""
    saga = Saga(ctx)
    done: list[str] = []
    try:
        for step in STEPS:
            yield ctx.call_activity(book, input={"step": step, "fail_at": params.get("fail_at")})
            saga.add_compensation(cancel, input=step)
            done.append(step)
    except task.TaskFailedError as err:
        # A failing compensation would raise SagaFailedError naming it and this error.
        report = yield from saga.compensate(err)
        return {"status": "compensated", "error": err.details.message, "compensations": report.results}
    return {"status": "booked", "steps": done}


def register(worker: TaskHubGrpcWorker) -> None:
    worker.add_orchestrator(trip_booking)
    worker.add_activity(book)
    worker.add_activity(cancel)


def run(client: TaskHubGrpcClient, timeout: float = 60) -> dict:
    ok = client.schedule_new_orchestration(trip_booking, input={})
    failing = client.schedule_new_orchestration(trip_booking, input={"fail_at": "car"})
    out = {}
    for key, instance_id in (("happy", ok), ("compensated", failing)):
        state = client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        out[key] = state.get_output()
    return out


def main() -> None:
    from samples._runner import run_sample

    run_sample(__doc__ or "", register, run)


if __name__ == "__main__":
    main()
