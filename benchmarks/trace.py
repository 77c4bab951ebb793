"""What ``/trace`` and ``pyprof_http.mark()`` cost (DESIGN §6: mark() off <= 100 ns, <= 3x an
empty Python call).

Run:  .venv/bin/python benchmarks/trace.py [--quick] [--rounds 8] [--seconds 2] [--clients 8]

1. ``mark()`` and ``span()`` with no trace running, against an empty function of the same
   signature (``def empty(name, **attrs): pass``) and the same call again (the A/A control), and
   while a trace records (a buffer set as ``/trace`` sets it). ``timeit``: the best of
   ``--repeat`` runs of N calls, ns per call.
2. Throughput of the demo app (``demo_app/main.py`` under uvicorn in a child process, asyncio
   loop) under ``--clients`` keep-alive threads (8: enough to keep the loop busy) cycling its
   route mix ``/``, ``/order``, ``/work``, ``/sync``: requests/s in windows with no trace,
   again with none (A/A), and during a ``/trace?seconds=N`` window; the order rotates over
   ``--rounds``; the median per-round ratio is reported.
3. Trace size per second of that load: bytes of the Chrome JSON and events per second.
4. The worst case, in-process: a loop doing nothing but empty task steps (2,000 tasks x 20
   ``await asyncio.sleep(0)``), best of ``--repeat`` runs with no trace, again with none (A/A),
   and inside a trace window: the per-callback cost of the hooks, undiluted by real work.

Prints one table; loopback only; the server is stopped whatever happens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu  # noqa: E402  (benchmarks/cpu.py: the load generator)
from _server import ServerProcess, serve_on_free_port  # noqa: E402

ROUTES = ("/", "/order", "/work", "/sync")


def empty(name: str, /, **attrs: Any) -> None:
    pass


class EmptyContext:
    """The cheapest Python context manager, the baseline for ``with span()`` off."""

    __slots__ = ()

    def __enter__(self) -> EmptyContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def empty_context(name: str, /, **attrs: Any) -> EmptyContext:
    return _EMPTY


_EMPTY = EmptyContext()


def per_call_ns(stmt: str, setup_globals: dict[str, Any], number: int, repeat: int) -> float:
    times = timeit.repeat(stmt, globals=setup_globals, number=number, repeat=repeat)
    return min(times) / number * 1e9


def marker_costs(number: int, repeat: int) -> dict[str, float]:
    from pyprof_http import mark, markers, span

    names = {"mark": mark, "span": span, "empty": empty, "empty_context": empty_context}
    out = {
        "empty call": per_call_ns("empty('db.query', table='t')", names, number, repeat),
        "empty call (A/A)": per_call_ns("empty('db.query', table='t')", names, number, repeat),
        "mark() off": per_call_ns("mark('db.query', table='t')", names, number, repeat),
        "mark() off, no attrs": per_call_ns("mark('db.query')", names, number, repeat),
        "with empty_context()": per_call_ns("with empty_context('db.query', table='t'): pass",
                                            names, number, repeat),
        "with span() off": per_call_ns("with span('db.query', table='t'): pass", names,
                                       number, repeat),
    }
    on: list[float] = []
    span_on: list[float] = []
    for _ in range(repeat):
        markers.ACTIVE = markers.TraceBuffer(number * 2 + 10)
        try:
            on.append(timeit.timeit("mark('db.query', table='t')", globals=names,
                                    number=number) / number * 1e9)
            span_on.append(timeit.timeit("with span('db.query', table='t'): pass",
                                         globals=names, number=number) / number * 1e9)
        finally:
            markers.ACTIVE = None
    out["mark() recording"] = min(on)
    out["with span() recording"] = min(span_on)
    return out


async def _empty_steps() -> None:
    import asyncio

    async def worker() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(2000)))


def worst_case(repeat: int) -> dict[str, float]:
    import asyncio

    from pyprof_http.collectors import trace

    def untraced() -> float:
        started = time.perf_counter()
        asyncio.run(_empty_steps())
        return time.perf_counter() - started

    def traced() -> float:
        took: list[float] = []

        async def main() -> None:
            async def window(_: float) -> None:
                started = time.perf_counter()
                await _empty_steps()
                took.append(time.perf_counter() - started)

            await trace.record(1, window)

        asyncio.run(main())
        return took[0]

    out: dict[str, list[float]] = {"none": [], "none-b": [], "trace": []}
    untraced()
    traced()  # warm up: imports, first-call costs
    for _ in range(repeat):
        out["none"].append(untraced())
        out["trace"].append(traced())
        out["none-b"].append(untraced())
    return {name: min(values) for name, values in out.items()}


# --- the server ---------------------------------------------------------------------------


def serve() -> None:
    from demo_app.main import app

    serve_on_free_port(app)


def server_process() -> ServerProcess:
    return ServerProcess([sys.executable, os.path.abspath(__file__), "--serve"])


class Load(cpu.Load):
    """``clients`` threads on keep-alive connections cycling the route mix."""

    def _run(self, index: int) -> None:
        import httpx

        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as client:
            n = index
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                try:
                    client.get(ROUTES[n % len(ROUTES)]).raise_for_status()
                    self.counts[index] += 1
                except httpx.HTTPError:
                    self.errors += 1
                    time.sleep(0.01)
                n += 1


def _wait_ready(base: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server not ready")


def window(load: Load, seconds: float) -> float:
    before, started = load.total(), time.monotonic()
    time.sleep(seconds)
    return (load.total() - before) / (time.monotonic() - started)


def traced_window(load: Load, base: str, seconds: int) -> tuple[float, int, int]:
    """Requests/s during a ``/trace?seconds=N``; the trace's size in bytes and events."""
    import httpx

    result: list[httpx.Response] = []

    def get_trace() -> None:
        with httpx.Client(base_url=base, timeout=seconds + 60, trust_env=False) as client:
            result.append(client.get("/debug/pprof/trace", params={"seconds": str(seconds)}))

    thread = threading.Thread(target=get_trace)
    thread.start()
    settle = 0.15
    time.sleep(settle)
    rps = window(load, seconds - 2 * settle)
    thread.join(seconds + 60)
    if not result or result[0].status_code != 200:
        raise RuntimeError(f"trace failed: {result[0].text[:200] if result else 'no answer'}")
    body = result[0].content
    events = sum(1 for e in result[0].json()["traceEvents"] if e["ph"] != "M")
    return rps, len(body), events


def throughput(rounds: int, seconds: int, clients: int) -> dict[str, list[float]]:
    phases: dict[str, list[float]] = {"none": [], "none-b": [], "trace": [], "bytes": [],
                                      "events": []}
    with server_process() as server:
        base = f"http://127.0.0.1:{server.port}"
        _wait_ready(base)
        with Load(base, clients, rounds * 3 * (seconds + 2) + 60) as load:
            time.sleep(1.0)  # warm up
            for r in range(rounds):
                order = ["none", "trace", "none-b"] if r % 2 else ["none-b", "trace", "none"]
                for name in order:
                    if name == "trace":
                        rps, size, events = traced_window(load, base, seconds)
                        phases["bytes"].append(size / seconds)
                        phases["events"].append(events / seconds)
                    else:
                        time.sleep(0.15)
                        rps = window(load, seconds - 0.3)
                        time.sleep(0.15)
                    phases[name].append(rps)
                print(f"  round {r + 1}/{rounds}: none {phases['none'][-1]:.0f}, none-b "
                      f"{phases['none-b'][-1]:.0f}, trace {phases['trace'][-1]:.0f} req/s",
                      flush=True)
            if load.errors:
                print(f"  ({load.errors} load requests failed)")
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 8)
    number = 200_000 if args.quick else 1_000_000

    costs = marker_costs(number, args.repeat)
    base_ns = costs["empty call"]
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print(f"\n1. markers (best of {args.repeat} x {number:,} calls)")
    for name, ns in costs.items():
        print(f"  {name:<24} {ns:7.1f} ns  ({ns / base_ns:.2f}x the empty call)")
    off = costs["mark() off"]
    print(f"  target mark() off <= 100 ns and <= 3x an empty call: "
          f"{'PASS' if off <= 100 and off <= 3 * base_ns else 'MISS'}; recording <= 1 us: "
          f"{'PASS' if costs['mark() recording'] <= 1000 else 'MISS'}")

    worst = worst_case(args.repeat)
    print(f"\n4. worst case, 40,000 empty task steps (best of {args.repeat}): none "
          f"{worst['none'] * 1000:.0f} ms, none again {worst['none-b'] * 1000:.0f} ms (A/A "
          f"{worst['none-b'] / worst['none']:.2f}x), in a trace window "
          f"{worst['trace'] * 1000:.0f} ms ({worst['trace'] / worst['none']:.2f}x; "
          f"{(worst['trace'] - worst['none']) / 40_000 * 1e6:.1f} us per step)")

    print(f"\n2. demo route mix {', '.join(ROUTES)}: {args.clients} clients, "
          f"{args.seconds} s windows, {rounds} rounds")
    phases = throughput(rounds, args.seconds, args.clients)
    ratio = statistics.median(t / n for t, n in zip(phases["trace"], phases["none"],
                                                    strict=True))
    noise = statistics.median(b / n for b, n in zip(phases["none-b"], phases["none"],
                                                    strict=True))
    print(f"  throughput during a trace / none (median per round): {ratio:.3f}")
    print(f"  A/A none-b / none (noise):                            {noise:.3f}")
    print("\n3. trace size per second of that load: "
          f"{statistics.median(phases['bytes']) / 1024:.0f} KiB/s, "
          f"{statistics.median(phases['events']):.0f} events/s (Chrome JSON)")
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        sys.exit(main())
