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
