"""fleetcap.core.tasks.TaskSet: a background task is held until it ends, and its failure is seen."""

import asyncio
import gc
import logging

import pytest

from fleetcap.core.tasks import TaskSet

log = logging.getLogger("test.tasks")


class Expected(Exception):
    pass


def test_a_failure_is_logged_with_its_traceback_and_handed_on(caplog):
    seen: list[BaseException] = []

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    async def body() -> None:
        tasks = TaskSet("hashing", log)
        handed_on = asyncio.Event()
        tasks.start(fails(), on_error=lambda e: (seen.append(e), handed_on.set()), detail="a.cap")
        assert len(tasks) == 1
        gc.collect()  # the set, not the caller, holds the task
        await asyncio.wait_for(handed_on.wait(), 5)
        assert len(tasks) == 0

    asyncio.run(body())
    assert [type(e).__name__ for e in seen] == ["RuntimeError"]
    [record] = [r for r in caplog.records if r.name == "test.tasks"]
    assert (record.levelno, record.getMessage(), record.exc_info is not None) == (logging.ERROR, "hashing (a.cap) failed: boom", True)


def test_an_expected_failure_is_a_warning_without_a_traceback(caplog):
    async def fails() -> None:
        raise Expected("etcd is away")

    async def body() -> None:
        tasks = TaskSet("budget exchange", log, expected=(Expected,))
        task = tasks.start(fails())
        with pytest.raises(Expected):
            await task

    asyncio.run(body())
    [record] = [r for r in caplog.records if r.name == "test.tasks"]
    assert (record.levelno, record.getMessage(), record.exc_info) == (logging.WARNING, "budget exchange failed: etcd is away", None)


def test_close_cancels_what_is_left_and_waits_for_it(caplog):
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("cleaned up")

    async def body() -> None:
        tasks = TaskSet("waiting", log)
        for _ in range(3):
            tasks.start(forever())
        await asyncio.sleep(0)
        await tasks.close()
        assert len(tasks) == 0

    asyncio.run(body())
    assert ended == ["cleaned up"] * 3
    assert [r for r in caplog.records if r.name == "test.tasks"] == []  # a cancellation is no failure
