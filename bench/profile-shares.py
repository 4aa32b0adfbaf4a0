#!/usr/bin/env python3
"""Where the daemon's CPU goes, per profile: a markdown table of shares from folded stacks.

    bench/profile-shares.py CASE.folded [CASE.folded ...]

Reads the folded stacks that bench/flamegraphs.sh writes (inferno-collapse-perf: one line per
stack, frames from the root to the leaf separated by `;`, then the sample weight) and puts every
sample in one row: allocation and clock reads when the innermost user-space frame is malloc's or
the clock's; else the innermost frame that names one of the activities below (a socket read,
decoding, a hook, routing...); else the engine's or the runtime's remaining code. Each column is
one file, each figure its share of that file's samples, so a column sums to 100 %.
"""

import os
import re
import sys

# The innermost user-space frame decides these two (the work is in them, whoever called them).
LEAF = [
    ("allocation (malloc, free)", re.compile(
        r"^(__libc_|__GI___libc_)?(malloc|free|cfree|realloc|calloc)$|^_int_(malloc|free|realloc)$"
        r"|^malloc_consolidate$|^unlink_chunk|^tcache_|^__rustc::__rust_(alloc|dealloc|realloc)$")),
    ("clock reads", re.compile(r"clock_gettime")),
]

# The innermost frame that matches one of these, in this order of precedence when one frame
# matches several. Matched against the frame's path without generic arguments (the session loop's
# functions are generic over the stream, so every one of them names rustls under TLS).
ACTIVITIES = [
    ("socket reads (system calls)", re.compile(
        r"^__libc_recv|^__libc_read$|^recv$|^read$|^<std::sys::net::connection::socket::unix::Socket>::recv")),
    ("socket writes (system calls)", re.compile(r"^(__GI___)?writev$|^__writev|^__libc_write$|^__libc_send")),
    ("waiting for readiness (epoll)", re.compile(r"epoll_wait")),
    ("TLS (rustls, ring)", re.compile(r"^<?(rustls|tokio_rustls|ring)::|^ring_core_")),
    ("decoding packets", re.compile(r"^<?rmqtt_codec::.*[dD]ecode")),
    ("encoding packets", re.compile(r"^<?rmqtt_codec::.*[eE]ncode")),
    ("hooks (rights, delivery checks and counts)", re.compile(
        r"^<?(rmqtt::hook::|sensorgate::topic::|sensorgate::broker::(message_hooks|acl|policy"
        r"|delivery_counts|gate|watch|read_grants|message_counts)::)")),
    ("routing (topic match, backlog, hand-off)", re.compile(
        r"^<?(sensorgate::broker::(backlog|route_cache|shared_groups)::|rmqtt::(shared|router|trie|topic)::)"
        r"|^rmqtt::session::SessionState::(inner_)?forwards")),
    ("locks (tokio's RwLock semaphores, parking_lot, dashmap)", re.compile(
        r"^<?(tokio::sync::(batch_semaphore|rwlock)|parking_lot|lock_api|dashmap::lock)::")),
    ("session channels and deliver queue", re.compile(r"^<?(futures_channel::|rmqtt::queue::)")),
    ("scheduler: parking, timers, wake-ups", re.compile(
        r"park_internal|park_yield|park_timeout|^<?tokio::runtime::(time|io)::|wake_by_(val|ref)"
        r"|Defer::wake|schedule_task|notify_parked|transition_to_(running|idle|notified)")),
]

REST = [
    ("the engine's session loop (rest)", re.compile(r"^<?rmqtt(_net|_codec|_utils)?::")),
    ("the runtime (rest)", re.compile(r"^<?(tokio|tokio_util|futures_util|futures_core)::")),
    ("sensorgate (rest)", re.compile(r"^<?sensorgate::")),
]

OTHER = "other (inlined frames only, libc, std, the kernel alone)"


def is_kernel(frame):
    return frame.endswith("_[k]")


def path(frame):
    """The frame without ` (inlined)` and generic arguments: `<A<T> as B>::f<U>` -> `<A as B>::f`."""
    frame = frame.removesuffix(" (inlined)")
    kept, depth = [], 0
    for i, ch in enumerate(frame):
        if ch == "<" and (i > 0 or depth > 0):
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            kept.append(ch)
    return "".join(kept)


def category(frames):
    user = [path(f) for f in frames if not is_kernel(f)]
    if user:
        for name, pattern in LEAF:
            if pattern.search(user[-1]):
                return name
    paths = [path(f) for f in frames]
    for table in (ACTIVITIES, REST):
        for frame in reversed(paths):
            for name, pattern in table:
                if pattern.search(frame):
                    return name
    return OTHER


def shares(path):
    totals = {}
    for line in open(path, errors="replace"):
        stack, _, weight = line.rstrip("\n").rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        name = category(stack.split(";"))
        totals[name] = totals.get(name, 0) + int(weight)
    whole = sum(totals.values()) or 1
    return {name: 100.0 * value / whole for name, value in totals.items()}


def main(paths):
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    columns = [(os.path.basename(p).removesuffix(".folded"), shares(p)) for p in paths]
    rows = [name for name, _ in LEAF + ACTIVITIES + REST]
    rows.append(OTHER)
    print("| share of the daemon's CPU samples | " + " | ".join(c for c, _ in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for row in rows:
        print(f"| {row} | " + " | ".join(f"{s.get(row, 0.0):.1f} %" for _, s in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
