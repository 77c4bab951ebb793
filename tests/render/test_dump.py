"""The debug=2 dump: thread and task blocks from a hand-built snapshot."""

from __future__ import annotations

import asyncio

from pyprof_http.captures.stacks import StackSnapshot, TaskStack, ThreadStack
from pyprof_http.collectors import stacks
from pyprof_http.model import frame
from pyprof_http.render.dump import render_dump

MAIN = frame("main", "/app/main.py", 3)
HANDLER = frame("handler", "/app/web.py", 12)
WAIT = frame("Event.wait", "/usr/lib/asyncio/locks.py", 213)


def _thread(**kwargs) -> ThreadStack:
    base = dict(ident=140001, native_id=5501, name="MainThread", daemon=False, state="running",
                stack=(HANDLER, MAIN))
    base.update(kwargs)
    return ThreadStack(**base)


def _task(**kwargs) -> TaskStack:
    base = dict(id=7, name="Task-7", state="awaiting", waiting_on="Event.wait",
                stack=(WAIT, HANDLER), thread="MainThread")
    base.update(kwargs)
    return TaskStack(**base)


def _render(threads=(), tasks=(), comments=()) -> str:
    rendered = render_dump(StackSnapshot(tuple(threads), tuple(tasks), 0, tuple(comments)))
    assert rendered.media_type == "text/plain; charset=utf-8"
    assert rendered.filename is None
    return rendered.body.decode()


def test_exact_dump() -> None:
    text = _render(
        threads=[
            _thread(),
            _thread(ident=140002, native_id=None, name="worker", daemon=True,
                    state="waiting on event", stack=(WAIT,)),
        ],
        tasks=[
            _task(id=3, name="parent", state="running", waiting_on=None, stack=(HANDLER, MAIN),
                  created_by=None, age_s=None),
            _task(awaited_by=(3,), age_s=125.0, created_by=MAIN, parent="parent"),
        ],
        comments=["loop on thread 'x' did not answer"],
    )
    assert text == (
        "goroutine dump: 2 threads, 2 tasks (frames innermost first)\n"
        "# loop on thread 'x' did not answer\n"
        "\n"
        'thread 140001 native 5501 "MainThread" [running]:\n'
        '  File "/app/web.py", line 12, in handler\n'
        '  File "/app/main.py", line 3, in main\n'
        "\n"
        'thread 140002 "worker" daemon [waiting on event]:\n'
        '  File "/usr/lib/asyncio/locks.py", line 213, in Event.wait\n'
        "\n"
        'task 3 "parent" [running]:\n'
        '  File "/app/web.py", line 12, in handler\n'
        '  File "/app/main.py", line 3, in main\n'
        "created by unknown (task created before pyprof_http's task factory)\n"
        'on thread "MainThread"\n'
        "\n"
        'task 7 "Task-7" [awaiting Event.wait, 2 minutes]:\n'
        '  File "/usr/lib/asyncio/locks.py", line 213, in Event.wait\n'
        '  File "/app/web.py", line 12, in handler\n'
        'awaited by task 3 "parent"\n'
        'created by main at /app/main.py:3 in task "parent", 125.0 s ago\n'
        'on thread "MainThread"\n'
    )


def test_blocks_are_separated_by_blank_lines() -> None:
    text = _render(threads=[_thread(), _thread(ident=2, name="b")],
                   tasks=[_task(id=1), _task(id=2)])
    assert text.endswith("\n") and not text.endswith("\n\n")
    blocks = text[:-1].split("\n\n")
    assert blocks[0].startswith("goroutine dump: 2 threads, 2 tasks")
    assert [b.split(" ", 1)[0] for b in blocks[1:]] == ["thread", "thread", "task", "task"]
    assert all(b.strip() for b in blocks)


def test_names_are_escaped_so_records_stay_on_their_lines() -> None:
    hostile = 'evil"\nthread 1 "fake" [running]:\r\\'
    text = _render(
        threads=[_thread(name=hostile)],
        tasks=[
            _task(id=1, name=hostile, thread=hostile, parent=hostile, created_by=MAIN,
                  age_s=1.0),
            _task(id=2, name="waiter", awaited_by=(1,)),
        ],
    )
    escaped = 'evil\\"\\nthread 1 \\"fake\\" [running]:\\r\\\\'
    lines = text.splitlines()
    assert f'thread 140001 native 5501 "{escaped}" [running]:' in lines
    assert f'task 1 "{escaped}" [awaiting Event.wait]:' in lines
    assert f'on thread "{escaped}"' in lines
    assert f'awaited by task 1 "{escaped}"' in lines
    assert f'created by main at /app/main.py:3 in task "{escaped}", 1.0 s ago' in lines
    assert not any(line.startswith('thread 1 "fake"') for line in lines)
    assert "\r" not in text


def test_minutes_only_from_sixty_seconds() -> None:
    def head(age) -> str:
        return _render(tasks=[_task(age_s=age, created_by=MAIN)]).splitlines()[2]

    assert head(None) == 'task 7 "Task-7" [awaiting Event.wait]:'
    assert head(0.5) == 'task 7 "Task-7" [awaiting Event.wait]:'
    assert head(59.99) == 'task 7 "Task-7" [awaiting Event.wait]:'
    assert head(60.0) == 'task 7 "Task-7" [awaiting Event.wait, 1 minutes]:'
    assert head(359.0) == 'task 7 "Task-7" [awaiting Event.wait, 5 minutes]:'


def test_minutes_without_waiting_on() -> None:
    text = _render(tasks=[_task(state="runnable", waiting_on=None, age_s=61)])
    assert 'task 7 "Task-7" [runnable, 1 minutes]:' in text.splitlines()


def test_created_by_without_parent_or_age() -> None:
    lines = _render(tasks=[_task(created_by=HANDLER, parent=None, age_s=None)]).splitlines()
    assert "created by handler at /app/web.py:12" in lines


def test_awaited_by_unknown_task_and_several_waiters() -> None:
    lines = _render(tasks=[_task(id=1, name="a"), _task(id=5, awaited_by=(1, 99))]).splitlines()
    assert 'awaited by task 1 "a"' in lines
    assert 'awaited by task 99 "?"' in lines


def test_empty_snapshot() -> None:
    assert _render() == "goroutine dump: 0 threads, 0 tasks (frames innermost first)\n"


def test_a_live_snapshot_renders() -> None:
    async def main():
        asyncio.current_task().set_name("dumper")
        event = asyncio.Event()
        task = asyncio.create_task(event.wait(), name="idle")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        task.cancel()
        return snap

    lines = render_dump(asyncio.run(main())).body.decode().splitlines()
    assert any(line.startswith('task ') and '"dumper" [running]:' in line for line in lines)
    assert any(line.startswith('task ') and '"idle" [awaiting Event.wait]:' in line
               for line in lines)
    assert lines[2].startswith("thread ") and lines[2].endswith("[running]:")
