"""Does a faust GlobalTable hold every key on every worker? (Why `ringfence worker` is not a faust App.)

Usage: `.venv/bin/python scripts/faust_globaltable_check.py [BOOTSTRAP]` (default
$RINGFENCE_KAFKA_BOOTSTRAP or 127.0.0.1:9092). Two faust workers of one app share a 3-partition
"devices" topic; an agent copies each record into a GlobalTable (what a worker needs for the
devices and policy topics: all of them, whatever partitions it owns). A producer writes KEYS keys
over ~15 s; each worker then reports how many keys its table holds. Exit 0 when both hold all.
Measured 2026-11-27 with faust-streaming 0.15.3: they did not (see BENCHMARKS.md, "Pipeline";
the open report is faust-streaming/faust#283). Invoked with `worker` first, it *is* a worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

KEYS = 30
RUN_S = 30


def _worker() -> None:
    import faust

    suffix, out = os.environ["GT_SUFFIX"], os.environ["GT_OUT"]
    app = faust.App(f"rf-gtcheck-{suffix}", broker=f"kafka://{os.environ['GT_BOOTSTRAP']}", store="memory://",
                    web_enabled=False, datadir=tempfile.mkdtemp(prefix="rf-gtcheck-"), topic_partitions=3,
                    broker_session_timeout=10, key_serializer="raw", value_serializer="raw")
    topic = app.topic(f"rf-gtcheck-devices-{suffix}", key_type=bytes, value_type=bytes, partitions=3)
    table = app.GlobalTable("devices", key_type=bytes, value_type=bytes, partitions=3)

    @app.agent(topic)
    async def copy(stream):  # type: ignore[no-untyped-def]
        async for key, value in stream.items():
            table[key] = value

    @app.timer(1.0)
    async def report() -> None:
        with open(out, "w") as handle:
            handle.write(str(len(table)))

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


async def _topic(bootstrap: str, name: str, create: bool) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(name, 3, 1)])
        else:
            ours = [t for t in await admin.list_topics() if name in t]
            if ours:
                await admin.delete_topics(ours)
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(KEYS):
            await producer.send_and_wait(topic, b"1", key=f"device-{i}".encode())
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()


def main() -> int:
    bootstrap = (sys.argv[1] if len(sys.argv) > 1
                 else os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP") or "127.0.0.1:9092")
    suffix = uuid.uuid4().hex[:8]
    topic = f"rf-gtcheck-devices-{suffix}"
    asyncio.run(_topic(bootstrap, topic, create=True))
    folder = tempfile.mkdtemp(prefix="rf-gtcheck-")
    outs = [os.path.join(folder, f"worker-{i}.count") for i in range(2)]
    env = {**os.environ, "GT_SUFFIX": suffix, "GT_BOOTSTRAP": bootstrap}
    workers = [subprocess.Popen([sys.executable, __file__, "worker"], stdout=open(out + ".log", "wb"),
                                stderr=subprocess.STDOUT, env={**env, "GT_OUT": out})
               for out in outs]
    try:
        time.sleep(8)  # both joined
        asyncio.run(_produce(bootstrap, topic))
        time.sleep(max(0.0, RUN_S - 8 - KEYS * 0.5))
        held = [int(re.sub(r"\D", "", open(out).read()) or 0) if os.path.exists(out) else 0 for out in outs]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGINT)  # faust's clean shutdown
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        asyncio.run(_topic(bootstrap, f"rf-gtcheck-{suffix}", create=False))
        asyncio.run(_topic(bootstrap, topic, create=False))
    print(f"worker logs: {folder}")
    print(f"GlobalTable keys held after all {KEYS} were written: worker 1: {held[0]}, worker 2: {held[1]}")
    ok = held == [KEYS, KEYS]
    print("faust GlobalTable check:", "OK (both workers hold every key)" if ok else "FAILED (keys missing)")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker()
    else:
        sys.exit(main())
