"""Check faust-streaming against a Kafka broker: a changelog-backed table survives a worker restart.

Usage: `.venv/bin/python scripts/faust_check.py [BOOTSTRAP]` (default $RINGFENCE_KAFKA_BOOTSTRAP or
127.0.0.1:9092). It creates a uniquely named input topic, runs a tiny faust worker twice (a timer
produces, an agent counts per key into a Table), and checks that the second run starts from the
counts restored from the changelog. It deletes its topics at the end. Exit 0 = works.
Invoked with `worker` as first argument it *is* that faust worker (used by the check itself).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid

RUN_SECONDS = 25


def _worker() -> None:
    import faust

    suffix = os.environ["FAUST_CHECK_SUFFIX"]
    app = faust.App(f"rf-faustcheck-{suffix}", broker=f"kafka://{os.environ['FAUST_CHECK_BOOTSTRAP']}",
                    store="memory://", topic_partitions=2, web_enabled=False,
                    datadir=os.environ["FAUST_CHECK_DATADIR"])
    topic = app.topic(f"rf-faustcheck-in-{suffix}", key_type=str, value_type=str, partitions=2)
    counts = app.Table("counts", default=int, partitions=2)

    @app.agent(topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key, _value in stream.items():
            counts[key] += 1

    @app.timer(1.0)
    async def produce() -> None:
        for i in range(9):
            await topic.send(key=f"k{i % 3}", value="x")

    @app.timer(2.0)
    async def report() -> None:
        sys.stdout.write(f"TOTAL {sum(counts.values())}\n")
        sys.stdout.flush()

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


async def _admin(bootstrap: str, create: list[str], delete_prefix: str | None) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(name, 2, 1) for name in create])
        if delete_prefix:
            ours = [t for t in await admin.list_topics() if delete_prefix in t]
            if ours:
                await admin.delete_topics(ours)
    finally:
        await admin.close()


def _run_worker(bootstrap: str, suffix: str, datadir: str) -> list[int]:
    """Run the worker for RUN_SECONDS, stop it with SIGINT (a clean faust shutdown), return its totals."""
    env = {**os.environ, "FAUST_CHECK_SUFFIX": suffix, "FAUST_CHECK_BOOTSTRAP": bootstrap,
           "FAUST_CHECK_DATADIR": datadir}
    worker = subprocess.Popen([sys.executable, __file__, "worker"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = worker.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGINT)
        try:
            out, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
    # faust routes stdout through its logger, so the lines arrive as log records.
    return [int(n) for n in re.findall(r"TOTAL (\d+)", out)]


def main() -> int:
    bootstrap = (sys.argv[1] if len(sys.argv) > 1
                 else os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP") or "127.0.0.1:9092")
    suffix = uuid.uuid4().hex[:8]
    asyncio.run(_admin(bootstrap, [f"rf-faustcheck-in-{suffix}"], None))
    try:
        with tempfile.TemporaryDirectory(prefix="rf-faustcheck-") as datadir:
            first = _run_worker(bootstrap, suffix, datadir)
            second = _run_worker(bootstrap, suffix, datadir)
    finally:
        asyncio.run(_admin(bootstrap, [], f"rf-faustcheck-{suffix}"))
        asyncio.run(_admin(bootstrap, [], f"rf-faustcheck-in-{suffix}"))
    print(f"run 1 totals: {first[:3]} ... {first[-1:]}")
    print(f"run 2 totals: {second[:3]} ... {second[-1:]}")
    ok = bool(first) and first[-1] > 0 and bool(second) and second[0] >= first[-1]
    print("faust check:", "OK (table restored from changelog)" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker()
    else:
        sys.exit(main())
