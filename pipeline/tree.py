"""The live process forest of one device, built from its behaviour events.

Nodes are keyed by `process_key` (Sysmon ProcessGuid or a hash of pid and start time), never by
pid, so a reused pid is simply another node. Unknown parents are normal (the tree started before
the agent, or the start event was lost): a placeholder node is created from `parent_process_key`
and filled in if its `process_start` arrives later; a process seen only through other events is
created from `event.image`.

Memory is bounded per device, because one noisy or hostile device must not starve the worker:
- each node keeps at most `max_evidence_per_node` evidence records (the oldest go first; packed
  `ts_ms << 8 | code` int64s in one `pipeline._cring.Ring` buffer when that extension is built, 8 bytes
  each, else a deque of ints: `pipeline.node.new_evidence`) and
  `max_conns_per_node` connection records and `max_notable_per_node` raw "notable" events (those
  that earned a specific behaviour code or an indicator, and process starts whose command line shows a
  lone-command indicator: the evidence an alert shows);
- a device keeps at most `max_nodes` nodes. When a new node would exceed that, the forest evicts
  the oldest *exited* node first (by exit order), and only when none has exited the least recently
  active node. Every drop is counted in `ForestStats` so a flood is visible, never silent.
TTL eviction (`evict`) removes exited subtrees once every node in them has been gone for
`exited_ttl_ms` (at least the scoring window, so late evidence still scores), and any node idle for
`idle_ttl_ms` (its end was never reported). Time is the device's event time (`watermark_ms`), so
offline hunting evicts exactly as the stream does. The detector evicts a device only after the flush
that scores its latest changes (`Detector.evict_scored`): one batch may span more than a TTL (a spool
sent after a night offline, a sparse 4688 log), and its processes must be scored before they go.
Serialisation lives in `pipeline.tree_state`.

This is mutable state on purpose (an immutable forest per event would not reach the throughput
goal); it does no I/O and is deterministic, so it is as testable as a pure function.

The recency order (`_lru`, least recently active first: floods and idle eviction take from its front, the
state record keeps it) is not moved per event: the node an event names is appended to `_touched`, and
`_recency()` applies those touches (each node once, in the order of its last touch: the same order) before
anything reads or changes it (`pipeline.recency`).

`apply_run` is the hot path: when the optional C extension `pipeline._cforest` is built (setup.py),
it applies the common cases (behaviour and the end of a process already known, the start of a new
process under a known parent) in C and hands every other event to `apply`, before changing anything
for it; without the extension `apply` does all of it. Both build the same forest
(tests/unit/test_tree_compiled.py, test_tree_compiled_starts.py, test_tree_code_cache.py).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pipeline.behaviour import CODE_FIELDS, CODES_BY_KIND, GENERIC_CODES, STRONG_CODES, Counter, child_codes
from pipeline.indicators import indicator_mask, lone_mask
from pipeline.node import NO_CHANGE, Change, ForestStats, ProcessNode, TreeLimits, new_evidence
from pipeline.recency import TOUCHED_MAX, apply_touches
from schemas.fastcodec import Event

__all__ = ["NO_CHANGE", "Change", "DeviceForest", "ForestStats", "ProcessNode", "TreeLimits", "ts_ms"]


_CODES_BY_KIND, _STRONG, _GENERIC = CODES_BY_KIND, STRONG_CODES, GENERIC_CODES
_SCRIPT = (Counter.SCRIPT,)
_SCRIPT_SUSPICIOUS = (Counter.SCRIPT, Counter.SCRIPT_SUSPICIOUS)
CODE_CACHES: dict[str, tuple[Callable[[Any], tuple[Counter, ...]], tuple[str, ...], dict[Any, Any]]] = {
    kind: (CODES_BY_KIND[kind], fields, {}) for kind, fields in CODE_FIELDS.items()
}
"""Kind -> (its codes function, the fields it reads, their values -> its codes): the compiled fold's
memory of the classifiers, so the common event costs a dict lookup instead of a Python call. Shared
by every device (the classifiers are pure); bounded in `fold` (`CODES_CACHE_ENTRIES` per kind, emptied
when full; keys of plain str/int/bool/None values only, `CODES_CACHE_CHARS` characters at most). Used
only while the kind's `CODES_BY_KIND` function is the one cached here."""
Changed = list[tuple[str, str, bool]] | dict[tuple[str, str, bool], None]
"""(device_id, process_key, notable) of each process to re-score, what `Detector.ingest` queues: a list, or
the batcher's pending dict itself (set as keys, in order; a known one keeps its place)."""

_fold: Callable[..., int] | None
try:  # apply's common case in C (pipeline/_cforest.c); optional: without it `apply` does everything
    from pipeline._cforest import fold as _compiled_fold
except ImportError:  # pragma: no cover - depends on the build
    _fold = None
else:
    _fold = _compiled_fold


def ts_ms(event: Event) -> int:
    """Event time in integer milliseconds since the epoch."""
    return int(event.ts.timestamp() * 1000)


class DeviceForest:
    """All processes of one device; `apply` one event at a time, `evict` now and then.

    Slotted: the C fold reads a dozen of its attributes per call (a record of one device's events), and a
    slot is read at its offset (`pipeline/_slots.h`) where an instance dict is a type and dict lookup."""

    __slots__ = ("_blank", "_exited", "_lru", "_touched", "device_id", "epoch", "limits", "nodes", "platform",
                 "seq_hwm", "stats", "watermark_ms")  # fmt: skip

    def __init__(self, device_id: str, platform: str, limits: TreeLimits | None = None) -> None:
        self.device_id = device_id
        self.platform = platform
        self.limits = limits or TreeLimits()
        self.nodes: dict[str, ProcessNode] = {}
        self.stats = ForestStats()
        self.watermark_ms = 0  # latest event time seen on this device
        self.seq_hwm = -1  # highest seq seen (redelivery detection)
        self.epoch = 0  # stamped on the nodes events name; a state encoding moves it on (see `apply`)
        self._lru: OrderedDict[str, None] = OrderedDict()  # least recently active first, once `_recency()`d
        self._touched: list[ProcessNode] = []  # made most recently active since (pipeline.recency)
        self._exited: OrderedDict[str, None] = OrderedDict()  # in exit order
        self._blank = self._fresh("")  # what the compiled fold clones for a new node (see `_new_node`)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, key: object) -> bool:
        return key in self.nodes

    def recency_order(self) -> list[str]:
        """Node keys, least recently active first (the flood-eviction order)."""
        return list(self._recency())

    def _recency(self) -> OrderedDict[str, None]:
        """`_lru` with the pending touches applied: what reads or changes the order calls this first."""
        apply_touches(self._lru, self._touched)
        return self._lru

    def _touch(self, node: ProcessNode) -> None:
        """Make `node` the most recently active: put last by `_recency` (at once when too many wait)."""
        touched = self._touched
        touched.append(node)
        if len(touched) > TOUCHED_MAX:
            self._recency()

    def exit_order(self) -> list[str]:
        """Keys of exited nodes in the order they exited."""
        return list(self._exited)

    def restore(self, nodes: Iterable[ProcessNode], exited: Iterable[str]) -> None:
        """Load nodes (in recency order) and the exit order from a snapshot; children are relinked."""
        lru = self._recency()
        for node in nodes:
            self.nodes[node.key] = node
            lru[node.key] = None
        for node in self.nodes.values():
            parent = self.get(node.parent_key)
            if parent is not None:
                parent.children.append(node.key)
        self._exited.update((key, None) for key in exited if key in self.nodes)

    def get(self, key: str | None) -> ProcessNode | None:
        """The node for `key`, or None when unknown (or evicted)."""
        return None if key is None else self.nodes.get(key)

    def apply_run(self, events: Sequence[Event], start: int, changed: Changed) -> int:
        """Apply `events[start:]` up to the first event of another device; append what to re-score to
        `changed`. Returns the index of the first event not applied (`len(events)` when all were).

        `changed` is read as `Detector.ingest`'s batcher reads it, the first of equal changes counting:
        the compiled fold appends an equal change once per call, `apply` once per event."""
        device, end, i = self.device_id, len(events), start
        while i < end:
            if _fold is not None:  # stops before an event only `apply` handles, or another device's
                # what `_start` calls (the fold starts processes too), the `_new_node` it may clone for
                starts = (child_codes, indicator_mask, _PLAIN_NEW_NODE, lone_mask)
                i = _fold(self, events, i, changed, _CODES_BY_KIND, _STRONG, _GENERIC, CODE_CACHES, starts)
                if i >= end:
                    break
            event = events[i]
            if event.device_id != device:
                break
            keys, notable = self.apply(event)
            if keys:
                found = [(device, key, notable) for key in keys]
                if isinstance(changed, dict):  # the batcher's pending keys (Detector.ingest)
                    changed.update(dict.fromkeys(found))
                else:
                    changed += found
            i += 1
        if len(self._touched) > TOUCHED_MAX:
            self._recency()
        return i

    def apply(self, event: Event) -> Change:
        """Fold one event into the forest; say which processes should be re-scored.

        The hot path of the worker (once per event), so the redelivery check and the node lookup are
        inlined here; `_start` and `_behaviour` hold the rest.

        Every node the event names (its process and, when it exists, its parent key, and the parent a
        process_start credits) gets `stamp = epoch`, even for a dropped redelivery: the nodes
        `tree_state.ForestEncoder` must encode again (it moves `epoch` on at each encoding).
        """
        when = int(event.ts.timestamp() * 1000)
        seq, watermark = event.seq, self.watermark_ms
        if self.limits.dedupe_by_seq:
            # Redelivered: seq not above the high-water mark *and* not newer than the watermark.
            # An agent that restarted its counter sends low seqs with new timestamps: accepted, and
            # they reset the high-water mark instead of being dropped forever.
            if seq <= self.seq_hwm and when <= watermark:
                self.stats.duplicates_dropped += 1
                self._stamp_parent(event.parent_process_key)
                if (named := self.nodes.get(event.process_key)) is not None:
                    named.stamp = self.epoch
                    if event.payload.kind == "process_start":  # names the parent it credited, as below
                        self._stamp_parent(named.parent_key)
                return NO_CHANGE
            if seq > self.seq_hwm or when > watermark:
                self.seq_hwm = seq
        self.stats.events += 1
        if when > watermark:
            self.watermark_ms = when
        key = event.process_key
        node = self.nodes.get(key)
        if node is None:
            node = self._new_node(key)
        else:
            self._touch(node)
            if not node.image and not node.started:  # a placeholder: its own event arrived
                self.stats.placeholders_filled += 1
        image = event.image
        if image and not node.image:
            node.set_image(image)
        if when > node.last_ms:
            node.last_ms = when
        node.stamp = self.epoch
        payload: Any = event.payload
        if payload.kind == "process_start":
            change = self._start(node, event, payload, when)
        else:
            if event.parent_process_key is not None and node.parent_key is None:
                self._link(node, event.parent_process_key, when)
            change = self._behaviour(node, event, payload, when)
        self._stamp_parent(event.parent_process_key)
        return change

    def _stamp_parent(self, key: str | None) -> None:
        """Stamp the node an event names as its parent, if the forest holds one."""
        parent = None if key is None else self.nodes.get(key)
        if parent is not None:
            parent.stamp = self.epoch

    def _new_node(self, key: str, *, placeholder: bool = False, keep: str | None = None) -> ProcessNode:
        """A node for `key`, in the forest and most recently active (a placeholder: least). The compiled
        fold makes the common one (room to spare, no placeholder) as a clone of `_blank`, a `_fresh` node
        made with the forest (its containers empty: the clone gets new ones), while this method is the
        forest's own and the limits the blank was made for still hold."""
        if len(self.nodes) >= self.limits.max_nodes:
            self._make_room(keep)
        node = self._fresh(key)
        self.nodes[key] = node
        if placeholder:
            lru = self._recency()
            lru[key] = None
            lru.move_to_end(key, last=False)  # a placeholder is the first to go in a flood
            self.stats.placeholders_created += 1
        else:
            self._touch(node)
            self.stats.nodes_created += 1
        return node

    def _fresh(self, key: str) -> ProcessNode:
        limits = self.limits
        return ProcessNode(
            key,
            evidence=new_evidence(limits.max_evidence_per_node),
            conns=deque(maxlen=limits.max_conns_per_node),
            notable=deque(maxlen=limits.max_notable_per_node),
            stamp=self.epoch,
        )

    def _make_room(self, keep: str | None) -> None:
        """Flood policy: drop the oldest exited node, else the least recently active one."""
        key = next((k for k in self._exited if k != keep), None)
        if key is not None:
            self.stats.flood_evicted_exited += 1
        else:
            key = next((k for k in self._recency() if k != keep), None)
            self.stats.flood_evicted_idle += key is not None
        if key is not None:
            self._remove(key)

    def _start(self, node: ProcessNode, event: Event, start: Any, when: int) -> Change:
        """Fill the node; the parent earns child codes. The change is notable when the command line shows an
        indicator or the parent earns a specific code; a line with only lone-command indicators is kept as
        evidence (its first start) without making the change notable."""
        first = not node.started
        node.started, node.start_ms = True, when if first else node.start_ms
        node.set_image(start.image)
        node.command_line, node.cmd_mask = start.command_line, indicator_mask(start.command_line)
        node.sha256, node.user, node.pid = start.sha256 or node.sha256, start.user, start.pid
        node.integrity_level, node.uid = start.integrity_level, start.uid
        if node.cmd_mask or (first and lone_mask(start.command_line)):  # evidence; cmd_mask makes it notable
            node.notable.append(event)
        parent_key = event.parent_process_key
        parent = self._link(node, parent_key, when) if parent_key is not None else self.get(node.parent_key)
        if parent is not None:
            parent.stamp = self.epoch  # named by the start even when it is not credited again
        if parent is None or not first:
            return Change((node.key,), bool(node.cmd_mask))
        parent.last_ms = max(parent.last_ms, when)
        self._touch(parent)
        rescore, notable = self._add_evidence(parent, when, child_codes(start.image))
        notable = notable or bool(node.cmd_mask)
        return Change((node.key, parent.key) if rescore or notable else (node.key,), notable)

    def _link(self, node: ProcessNode, parent_key: str, when: int) -> ProcessNode | None:
        """Attach `node` under `parent_key` (creating a placeholder); refuse cycles and re-parenting."""
        if node.parent_key is not None:
            if node.parent_key != parent_key:
                self.stats.parent_conflicts += 1
            return self.get(node.parent_key)
        # Only a node that already has children can close a cycle (its parent would be below it).
        if parent_key == node.key or (node.children and self._is_ancestor_or_self(node.key, parent_key)):
            self.stats.cycles_refused += 1
            return None
        parent = self.nodes.get(parent_key)
        if parent is None:
            parent = self._new_node(parent_key, placeholder=True, keep=node.key)
            parent.last_ms = when
        node.parent_key = parent_key
        parent.children.append(node.key)
        return parent

    def _is_ancestor_or_self(self, key: str, start: str) -> bool:
        return any(n.key == key for n in self._chain(start))

    def _behaviour(self, node: ProcessNode, event: Event, payload: Any, when: int) -> Change:
        kind = payload.kind
        if kind == "process_end":
            node.end_ms = when
            self._exited[node.key] = None
            return Change((node.key,), False)
        if kind == "script":
            found = indicator_mask(payload.content)
            node.script_mask |= found
            codes: tuple[Counter, ...] = _SCRIPT_SUSPICIOUS if found else _SCRIPT
        else:
            codes_of = _CODES_BY_KIND.get(kind)
            codes = codes_of(payload) if codes_of is not None else ()
            if kind == "network_connect":
                node.conns.append((when, payload.dst_ip, payload.dst_port))
            elif kind == "image_load" and payload.path == node.image:
                node.signer, node.signed, node.static = payload.signer, payload.signed, None
        if not codes:
            return NO_CHANGE
        rescore, notable = self._add_evidence(node, when, codes)
        if notable:
            node.notable.append(event)
        return Change((node.key,), notable) if rescore else NO_CHANGE

    def _add_evidence(self, node: ProcessNode, when: int, codes: tuple[Counter, ...]) -> tuple[bool, bool]:
        """Record codes; return (re-score, notable).

        Re-scoring backs off per code: a process is re-scored when a code's lifetime count reaches
        1, 2, 4, 8... so counts stay within a factor of two of what was last scored and a process
        writing a million temp files costs twenty scorings, not a million. Strong codes (a Run key,
        an LSASS read...) always re-score; they and the first sight of any specific code are
        notable: the event is kept as alert evidence and the ancestors are re-scored too.
        """
        evidence, counts = node.evidence, node.code_counts
        if evidence.maxlen is not None:  # every append to a full ring or deque drops its oldest record
            overflow = len(evidence) + len(codes) - evidence.maxlen
            if overflow > 0:
                self.stats.evidence_dropped += min(overflow, len(codes))
        stamp = when << 8
        rescore = notable = False
        for code in codes:
            evidence.append(stamp | code)
            seen = counts.get(code, 0) + 1
            counts[code] = seen
            if code in _STRONG:
                rescore = notable = True
            elif seen & (seen - 1) == 0:
                rescore = True
                if seen == 1 and code not in _GENERIC:
                    notable = True
        return rescore, notable

    def _chain(self, key: str | None, length: int | None = None) -> Iterator[ProcessNode]:
        """`key`'s node then its ancestors, at most `length` nodes (default max_depth), stopping at
        unknown parents."""
        node = self.get(key)
        for _ in range(self.limits.max_depth if length is None else length):
            if node is None:
                return
            yield node
            node = self.get(node.parent_key)

    def ancestors(self, key: str, max_depth: int | None = None) -> list[ProcessNode]:
        """Known ancestors of `key`, nearest first."""
        depth = min(self.limits.max_depth, self.limits.max_depth if max_depth is None else max_depth)
        nodes, found = self.nodes, list[ProcessNode]()
        node = nodes.get(key)
        while node is not None and len(found) < depth and node.parent_key is not None:
            node = nodes.get(node.parent_key)
            if node is not None:
                found.append(node)
        return found

    def iter_ancestors(self, key: str) -> Iterator[ProcessNode]:
        """`ancestors(key)`, nearest first, one at a time: a caller that stops at the first parent it
        wants (`Detector`'s root search, usually the first) does not look up the rest of the chain.
        (`ancestors` stays a plain loop: listing a short chain through a generator costs twice as much.)"""
        chain = self._chain(key, self.limits.max_depth + 1)
        next(chain, None)  # the node itself
        return chain

    def descendants(self, key: str, *, active_since_ms: int = 0, max_nodes: int = 1024) -> list[ProcessNode]:
        """Known descendants of `key` active at or after `active_since_ms`, breadth first, bounded."""
        root = self.nodes.get(key)
        if root is None:
            return []
        found: list[ProcessNode] = []
        level, seen = [root], {key}
        for _ in range(self.limits.max_depth):
            level = [c for n in level for k in n.children if k not in seen and (c := self.nodes.get(k))]
            if not level:
                break
            seen.update(n.key for n in level)
            found.extend(n for n in level if n.last_ms >= active_since_ms)
            if len(found) >= max_nodes:
                return found[:max_nodes]
        return found

    def depth(self, key: str) -> int:
        """Number of known ancestors of `key`."""
        return sum(1 for _ in self._chain(key)) - 1 if key in self.nodes else 0

    def evict(self) -> int:
        """TTL eviction at the device's own clock; return how many nodes were removed."""
        now = self.watermark_ms
        removed = self._evict_idle(now - self.limits.idle_ttl_ms)
        return removed + self._evict_exited(now - self.limits.exited_ttl_ms)

    def _evict_idle(self, before_ms: int) -> int:
        idle = []
        for key in self._recency():
            if self.nodes[key].last_ms >= before_ms:
                break
            idle.append(key)
        for key in idle:
            self._remove(key)
        self.stats.evicted_idle += len(idle)
        return len(idle)

    def _evict_exited(self, before_ms: int) -> int:
        expired = {k for k in self._exited if (self.nodes[k].end_ms or 0) < before_ms}
        memo: dict[str, bool] = {}
        doomed = [k for k in expired if self._subtree_expired(k, expired, memo)]
        for key in doomed:
            self._remove(key)
        self.stats.evicted_exited += len(doomed)
        return len(doomed)

    def _subtree_expired(self, key: str, expired: set[str], memo: dict[str, bool]) -> bool:
        """True when `key` and every descendant still in the forest exited before the cut-off."""
        stack, order = [key], []
        while stack:
            current = stack.pop()
            if current in memo:
                continue
            memo[current] = current in expired
            order.append(current)
            stack.extend(c for c in self.nodes[current].children if c in self.nodes)
        for current in reversed(order):  # children before parents
            kids = self.nodes[current].children
            memo[current] = memo[current] and all(memo.get(c, True) for c in kids if c in self.nodes)
        return memo[key]

    def _remove(self, key: str) -> None:
        node = self.nodes.pop(key, None)
        if node is None:
            return
        self._recency().pop(key, None)
        self._exited.pop(key, None)
        parent = self.get(node.parent_key)
        if parent is not None and key in parent.children:
            parent.children.remove(key)
            if parent.placeholder and not parent.children:
                self._remove(parent.key)  # a placeholder exists only to hold children


_PLAIN_NEW_NODE = DeviceForest._new_node
