"""Agent footprint: CPU (% of one core) and resident memory of `ringfence-agent run` under live-like load.

The agent runs as its own process, exactly as deployed (linux source with the netlink connector,
the agent's default file collector on a folder (inotify; `--file-mode auto` for fanotify), the TCP
poller, spool with fsync, publisher to the broker at RINGFENCE_KAFKA_BOOTSTRAP, or to a dead port
when none is set: the spool then absorbs everything).
Load generator processes (one per 250 events/s, since one Python process cannot spawn fast enough
on this VM) produce: 20 % of the events from processes (`/bin/true` spawned, giving a
process_start and a process_end each), 80 % from rewrites of files in the watched folder (one
file_write each, hashed by the agent), roughly the mix of a busy host, where file activity
dominates. The agent is sampled from /proc/<pid>/stat (utime+stime over the measured window) and
/proc/<pid>/status (VmRSS, peak of samples); the offered rate is what the generators really did.
The baseline is the same agent left idle in the same run, so background activity of the machine
(other processes the agent also observes) is visible.
Goal (issue 4): <= 2 % of one core and <= 60 MB RSS at 100 events/s.

    .venv/bin/python -m bench.bench_agent [--quick] [--rates 100] [--file-mode auto]
                                          [--profile cprofile|pyinstrument]
    .venv/bin/python -m bench.bench_agent --paired TREE[:VAR=V,...] TREE... [--rounds 5] [--rates 100]

`--paired` compares agents side by side, for A/B on a shared, noisy host: one agent per TREE (a
checkout or copy holding agents/ and schemas/; `:VAR=V,...` adds environment, e.g. a setting) runs
at the same time, all watching the same folder, so they see the same host activity and the same
generated load; each round measures every agent's CPU over the same idle and loaded windows (the
agents compete with each other for the CPU too, alike). Rounds alternate the start order.

`--profile` runs the agent process under a profiler for the same load (its CPU figure then includes
the profiler's overhead, so it is only for finding where the time goes): `cprofile` sets the agent's
RINGFENCE_AGENT_PROFILE_PATH (cProfile in CPU time, `agent-<rate>.prof`, read it with `python -m
pstats`); `pyinstrument` (a sampling profiler in wall time, `pip install pyinstrument`) writes
`agent-<rate>.pyisession` (`pyinstrument --load FILE`). Both go into `--profile-dir`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import Result

REPO = Path(__file__).resolve().parents[1]
RATES = (100, 1000)
_TICKS = os.sysconf("SC_CLK_TCK")
_EMITTED = re.compile(r"source linux-live: read=\d+ emitted=(\d+)")


@dataclass(frozen=True)
class Sample:
    rate: int  # target events/s (0 = idle)
    offered_per_s: float  # events/s the generator actually produced in the window (it can fall behind)
    cpu_percent: float  # of one core, over the measured window
    rss_peak_mb: float
    emitted: int  # events the agent reported for its whole run (includes this host's other activity)
    seconds: float  # whole agent run


def _cpu_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _agent_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    suffix = uuid.uuid4().hex[:8]
    env.setdefault("RINGFENCE_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing listens: spool-only run
    # the agent's default file collector (inotify) unless RINGFENCE_AGENT_FILE_MODE / --file-mode says
    # otherwise (`auto`: fanotify, attributed, where the kernel allows it)
    env.update({
        "RINGFENCE_AGENT_DEVICE_ID": f"bench-agent-{suffix}",
        "RINGFENCE_AGENT_SPOOL_DIR": str(work / "spool"),
        "RINGFENCE_AGENT_WATCH_PATHS": str(work / "watched"),
        "RINGFENCE_AGENT_EVENTS_TOPIC": f"bench-agent-events-{suffix}",
        "RINGFENCE_AGENT_DEVICES_TOPIC": f"bench-agent-devices-{suffix}",
        "RINGFENCE_AGENT_QUARANTINE_DIR": str(work / "quarantine"),
        "RINGFENCE_AGENT_SOURCES": "linux",
    })
    return env


class Load:
    """Paced live-like load: of every 10 events, 2 come from a process (spawned `/bin/true`: start
    and end) and 8 from file rewrites, roughly the mix of a busy host, where file activity dominates."""

    def __init__(self, folder: Path, rate: float) -> None:
        self.folder = folder
        self.rate = rate
        self.files = [folder / f"f{index}.dat" for index in range(32)]
        for path in self.files:
            path.write_bytes(b"0" * 512)
        self.done = 0
        self.children: set[int] = set()

    def step(self, elapsed_s: float) -> None:
        """Do the actions due by `elapsed_s` (2 events per spawn, 1 per file write)."""
        due_events = int(elapsed_s * self.rate)
        while self.done < due_events:
            if self.done % 10 < 2:  # two events' worth: one spawn
                self.children.add(os.posix_spawn("/bin/true", ["/bin/true"], {}))
                self.done += 2
            else:
                self.files[self.done % len(self.files)].write_bytes(os.urandom(256))
                self.done += 1
        self.reap()

    def reap(self) -> None:
        for pid in list(self.children):
            if os.waitpid(pid, os.WNOHANG)[0]:
                self.children.discard(pid)

    def finish(self) -> None:
        for pid in self.children:
            os.waitpid(pid, 0)
        self.children.clear()


@dataclass(frozen=True)
class Profiling:
    """Run the agent under a profiler (see the module docstring); `out_dir` receives the reports."""

    tool: str  # "cprofile" (the agent's own RINGFENCE_AGENT_PROFILE_PATH, CPU time) or "pyinstrument"
    out_dir: Path

    def prefix(self, rate: int) -> list[str]:
        """Interpreter arguments before `-m agents.cli`."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.tool == "pyinstrument":
            out = self.out_dir / f"agent-{rate}.pyisession"
            return ["-m", "pyinstrument", "--interval", "0.0005", "-o", str(out)]
        return []

    def env(self, rate: int) -> dict[str, str]:
        if self.tool == "cprofile":
            return {"RINGFENCE_AGENT_PROFILE_PATH": str(self.out_dir.resolve() / f"agent-{rate}.prof")}
        return {}


def measure(rate: int, warmup_s: float, window_s: float, profiling: Profiling | None = None) -> Sample:
    """One fresh agent process: warm up, then `window_s` of load while sampling it."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        (work / "watched").mkdir()
        log_path = work / "agent.log"
        total_s = warmup_s + window_s + 2
        prefix = profiling.prefix(rate) if profiling is not None else []
        env = {**_agent_env(work), **(profiling.env(rate) if profiling is not None else {})}
        with open(log_path, "w") as log:
            agent = subprocess.Popen(
                [sys.executable, *prefix, "-m", "agents.cli", "run", "--duration-s", str(total_s),
                 "--flush-timeout-s", "2"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            time.sleep(warmup_s)
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited early:\n{log_path.read_text()[-2000:]}")
            cpu, rss, offered = _load_window(agent.pid, work / "watched", rate, window_s)
        finally:
            _stop(agent, log_path)
        match = _EMITTED.search(log_path.read_text())
    return Sample(rate, offered, cpu, rss, int(match[1]) if match else -1, total_s)


def _stop(agent: subprocess.Popen[bytes], log_path: Path) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=60)
    except subprocess.TimeoutExpired:
        agent.kill()
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"agent did not stop on SIGTERM:\n{tail}") from None


def _start_generators(folder: Path, rate: int, window_s: float) -> list[subprocess.Popen[str]]:
    workers = max(1, -(-rate // 250)) if rate else 0
    procs = []
    for index in range(workers):
        sub = folder / f"w{index}"
        sub.mkdir(exist_ok=True)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.bench_agent", "--generate", str(sub), str(rate / workers),
             str(window_s)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        ))
    return procs


def _load_window(pid: int, folder: Path, rate: int, window_s: float) -> tuple[float, float, float]:
    """(CPU % of one core, peak RSS MB, offered events/s) of the agent over the window."""
    start_ticks, start = _cpu_ticks(pid), time.monotonic()
    generators = _start_generators(folder, rate, window_s)
    rss_peak = _rss_mb(pid)
    while time.monotonic() - start < window_s:
        rss_peak = max(rss_peak, _rss_mb(pid))
        time.sleep(0.25)
    cpu_s = (_cpu_ticks(pid) - start_ticks) / _TICKS
    elapsed = time.monotonic() - start
    done = sum(int(proc.communicate(timeout=60)[0].strip() or 0) for proc in generators)
    return 100.0 * cpu_s / elapsed, max(rss_peak, _rss_mb(pid)), done / window_s


def generate(folder: Path, rate: float, seconds: float) -> int:
    """Worker: produce `rate` events/s of load in `folder` for `seconds`; returns events done."""
    load = Load(folder, rate)
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        load.step(elapsed)
        time.sleep(0.005)
    load.finish()
    return load.done


@dataclass(frozen=True)
class Contender:
    """One side of a paired run: a tree to run the agent from, with extra environment."""

    tree: Path
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Contender:
        tree, _, extra = spec.partition(":")
        pairs = tuple(tuple(item.split("=", 1)) for item in extra.split(",") if item)
        if not (Path(tree) / "agents" / "cli.py").is_file() or any(len(pair) != 2 for pair in pairs):
            raise argparse.ArgumentTypeError(f"{spec}: TREE[:VAR=V,...] with TREE/agents/cli.py")
        return cls(Path(tree).resolve(), pairs)  # type: ignore[arg-type]  # pairs of two, checked

    @property
    def name(self) -> str:
        extra = ",".join(f"{name}={value}" for name, value in self.env)
        return f"{self.tree}" + (f" [{extra}]" if extra else "")


def paired_round(
    contenders: list[Contender], rate: int, idle_s: float, window_s: float
) -> list[tuple[float, float]]:
    """(idle CPU %, loaded CPU %) of each contender, all running at once on one watched folder."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-paired-") as tmp:
        work = Path(tmp)
        (work / "watched").mkdir()
        agents = [_start_paired(contender, work, index, idle_s + window_s + 10)
                  for index, contender in enumerate(contenders)]
        try:
            time.sleep(6.0)  # warm-up
            marks = [[_cpu_ticks(agent.pid) for agent in agents]]
            started = [time.monotonic()]
            time.sleep(idle_s)
            marks.append([_cpu_ticks(agent.pid) for agent in agents])
            started.append(time.monotonic())
            generators = _start_generators(work / "watched", rate, window_s)
            time.sleep(window_s)
            marks.append([_cpu_ticks(agent.pid) for agent in agents])
            started.append(time.monotonic())
            for proc in generators:
                proc.communicate(timeout=60)
        finally:
            for index, agent in enumerate(agents):
                _stop(agent, work / f"a{index}" / "agent.log")
    idle, loaded = started[1] - started[0], started[2] - started[1]
    return [(100.0 * (marks[1][i] - marks[0][i]) / _TICKS / idle,
             100.0 * (marks[2][i] - marks[1][i]) / _TICKS / loaded) for i in range(len(agents))]


def _start_paired(contender: Contender, work: Path, index: int, total_s: float) -> subprocess.Popen[bytes]:
    own = work / f"a{index}"
    own.mkdir()
    env = {**_agent_env(own), "RINGFENCE_AGENT_WATCH_PATHS": str(work / "watched"), **dict(contender.env)}
    with open(own / "agent.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "run", "--duration-s", str(total_s),
             "--flush-timeout-s", "2"],
            cwd=contender.tree, env=env, stdout=log, stderr=subprocess.STDOUT,
        )


def run_paired(contenders: list[Contender], rounds: int, rate: int, quick: bool) -> None:
    """Print each round, then each contender's median [min .. max] idle and loaded CPU."""
    idle_s, window_s = (8.0, 12.0) if quick else (15.0, 30.0)
    figures: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(contenders))}
    for number in range(rounds):
        order = list(range(len(contenders)))[:: 1 if number % 2 == 0 else -1]
        results = paired_round([contenders[i] for i in order], rate, idle_s, window_s)
        for i, result in zip(order, results, strict=True):
            figures[i].append(result)
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"round {number + 1}: " + " | ".join(
            f"{contenders[i].name}: idle {figures[i][-1][0]:.2f} %, {rate}/s {figures[i][-1][1]:.2f} %"
            for i in range(len(contenders))) + f" (load {load})", flush=True)
    for i, contender in enumerate(contenders):
        idle, loaded = [f[0] for f in figures[i]], [f[1] for f in figures[i]]
        print(f"{contender.name}: idle {statistics.median(idle):.2f} % [{min(idle):.2f} .. {max(idle):.2f}], "
              f"{rate} events/s {statistics.median(loaded):.2f} % [{min(loaded):.2f} .. {max(loaded):.2f}]")


def run(quick: bool, rates: tuple[int, ...] = RATES, profiling: Profiling | None = None) -> list[Result]:
    """Idle, then each rate (100 and 1,000 events/s by default); one fresh agent process each."""
    warmup_s, window_s = (4.0, 10.0) if quick else (5.0, 30.0)
    idle = measure(0, warmup_s, window_s, profiling)
    results = [Result("agent idle: CPU (% of one core)", idle.cpu_percent, "%", higher_is_better=False),
               Result("agent idle: peak RSS", idle.rss_peak_mb, "MB", higher_is_better=False)]
    for rate in rates:
        sample = measure(rate, warmup_s, window_s, profiling)
        results += [
            Result(f"agent at {rate} events/s: CPU (% of one core)", sample.cpu_percent, "%",
                   baseline=idle.cpu_percent, baseline_name="the same agent idle, same run",
                   higher_is_better=False),
            Result(f"agent at {rate} events/s: peak RSS", sample.rss_peak_mb, "MB",
                   baseline=idle.rss_peak_mb, baseline_name="the same agent idle, same run",
                   higher_is_better=False),
            Result(f"agent at {rate} events/s: load actually offered", sample.offered_per_s, "events/s"),
            Result(f"agent at {rate} events/s: events emitted per second of run (incl. host activity)",
                   sample.emitted / sample.seconds, "events/s"),
        ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows (smoke run)")
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES), metavar="N",
                        help="loaded runs, in events/s (default: 100 1000); an idle run always comes first")
    parser.add_argument("--profile", choices=("cprofile", "pyinstrument"),
                        help="run the agent under this profiler (figures then include its overhead)")
    parser.add_argument("--profile-dir", type=Path, default=Path("bench-agent-profiles"),
                        help="--profile reports: agent-<rate>.prof or .txt (default: ./bench-agent-profiles)")
    parser.add_argument("--file-mode", choices=("inotify", "auto"),
                        help="the agent's RINGFENCE_AGENT_FILE_MODE (default: the agent's own default, "
                             "inotify; auto: fanotify attribution where the kernel allows it)")
    parser.add_argument("--paired", nargs="+", type=Contender.parse, metavar="TREE[:VAR=V,...]",
                        help="run agents from these trees side by side on the same load (A/B on a noisy "
                        "host); uses the first of --rates")
    parser.add_argument("--rounds", type=int, default=5, help="--paired: rounds (default 5)")
    parser.add_argument("--generate", nargs=3, metavar=("FOLDER", "RATE", "SECONDS"),
                        help=argparse.SUPPRESS)  # internal: run as a load generator worker
    args = parser.parse_args()
    if args.generate:
        folder, rate, seconds = args.generate
        print(generate(Path(folder), float(rate), float(seconds)))
        return
    if args.file_mode:
        os.environ["RINGFENCE_AGENT_FILE_MODE"] = args.file_mode  # the agent processes inherit it
    if args.paired:
        run_paired(args.paired, args.rounds, args.rates[0], args.quick)
        return
    profiling = Profiling(args.profile, args.profile_dir) if args.profile else None
    for result in run(args.quick, tuple(args.rates), profiling):
        base = f"  (idle: {result.baseline:.2f})" if result.baseline is not None else ""
        print(f"{result.name:<60} {result.figure:10.2f} {result.unit}{base}")


if __name__ == "__main__":
    main()
