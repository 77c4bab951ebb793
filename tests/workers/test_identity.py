"""Who is a worker: both answers of ``auto``, and the two overrides."""

from __future__ import annotations

import os

from pyprof_http.workers.identity import detect, parent_command_line

UVICORN = ["/venv/bin/python", "/venv/bin/uvicorn", "app:app", "--workers", "3"]
GUNICORN = ["gunicorn: master [app:app]"]


def test_a_uvicorn_spawned_worker_is_one() -> None:
    role = detect("auto", environ={}, argv_of_parent=UVICORN, spawned_child=True)
    assert role.worker and role.server == os.getppid() and "spawned" in role.why


def test_a_gunicorn_worker_is_one() -> None:
    env = {"SERVER_SOFTWARE": "gunicorn/23.0.0"}
    assert detect("auto", environ=env, argv_of_parent=GUNICORN, spawned_child=False).worker


def test_single_process_servers_are_not() -> None:
    shell = ["/bin/bash"]
    assert not detect("auto", environ={}, argv_of_parent=UVICORN, spawned_child=False).worker
    assert not detect("auto", environ={}, argv_of_parent=shell, spawned_child=False).worker
    # uvicorn --reload runs one process under its supervisor: a single-process server
    reload = ["/venv/bin/uvicorn", "app:app", "--reload"]
    assert not detect("auto", environ={}, argv_of_parent=reload, spawned_child=True).worker
    # SERVER_SOFTWARE inherited by a process that gunicorn did not start directly
    env = {"SERVER_SOFTWARE": "gunicorn/23.0.0"}
    assert not detect("auto", environ=env, argv_of_parent=shell, spawned_child=False).worker


def test_the_setting_overrides_detection() -> None:
    assert detect("on", environ={}, argv_of_parent=["/bin/bash"], spawned_child=False).worker
    assert not detect("off", environ={}, argv_of_parent=UVICORN, spawned_child=True).worker


def test_this_test_process_is_no_worker_and_its_parent_is_read() -> None:
    assert parent_command_line(os.getppid())  # /proc is readable here
    assert parent_command_line(2**22 + 1) == []
    assert not detect("auto").worker  # pytest is a single process


def _as_uvicorn_child(reload: bool) -> bool:
    """Run ``detect`` the way uvicorn's spawned child does: under
    ``uvicorn._subprocess.subprocess_started(config, ...)`` on the main thread's stack."""
    from types import SimpleNamespace

    source = ("def subprocess_started(config, target, sockets, stdin_fileno):\n"
              "    return target()\n")
    namespace: dict[str, object] = {"__name__": "uvicorn._subprocess"}
    exec(compile(source, "uvicorn/_subprocess.py", "exec"), namespace)
    started = namespace["subprocess_started"]
    config = SimpleNamespace(reload=reload, workers=1 if reload else 3)
    role = started(config, lambda: detect(  # type: ignore[operator]
        "auto", environ={}, argv_of_parent=["/venv/bin/python", "main.py"], spawned_child=True),
        [], None)
    return bool(role.worker)


def test_a_reload_child_started_from_a_script_or_fastapi_dev_is_no_worker() -> None:
    """``uvicorn.run("app:app", reload=True)`` in main.py (and ``fastapi dev``) leave no
    ``--reload`` in the parent's argv: the one reloaded process counted as a worker."""
    assert not _as_uvicorn_child(reload=True)
    assert _as_uvicorn_child(reload=False)  # uvicorn.run(..., workers=3) from a script
