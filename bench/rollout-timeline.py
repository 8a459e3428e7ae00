#!/usr/bin/env python3
"""Per-step timings of the rollout benchmark (issue 9) from its kept logs.

    DSA_BENCH_KEEP_LOGS=DIR \
    DSA_LOG=info,daemonset_agent::agent::podsync=debug,daemonset_agent::agent::worker=debug,daemonset_agent::agent::controller=debug,daemonset_agent::server::controllers::daemonset=debug \
      DSA_BENCH_PROFILE=dev bash bench/run.sh --only rollout
    python3 bench/rollout-timeline.py DIR [DAEMONSET-NAME-PREFIX ...]

For each node of a rollout (maxUnavailable: the old pod goes, then the new one comes), the steps
from the controller's delete of the old pod (its grant) to the controller seeing the new pod
Ready, read from the server's and the agents' logs (HH:MM:SS.mmm on each line; one day, UTC),
then how long after each availability (Ready seen + minReadySeconds, 1 s in the bench) the next
node was granted. BUDGET=N (default 5: 25% of 20) pairs grants with availabilities. The pairing
of old and new pods is by node; the maxSurge run reads only partly right (its new pod comes
first)."""
import re, sys, glob, os, statistics
from collections import defaultdict

D = sys.argv[1]
prefixes = sys.argv[2:] or ["roll-one-0", "roll-one-1", "roll-one-2", "roll-maxunavailable", "roll-maxsurge"]
ts_re = re.compile(r'^(\d\d):(\d\d):(\d\d\.\d+)\s+(\w+)\s+(.*)$')
ansi = re.compile(r'\x1b\[[0-9;]*m')

def t_of(m):
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))

ev = []  # (t, where, kind, pod)
def podname(s):
    m = re.search(r'pod[=:]\s*"?(?:default/)?([a-z0-9-]+)', s)
    return m.group(1) if m else None

for path in glob.glob(os.path.join(D, "**", "*.log"), recursive=True):
    base = os.path.basename(path)
    where = "server" if base == "server.log" else base[len("agent-"):-4] if base.startswith("agent-roll") else None
    if where is None:
        continue
    for line in open(path, errors="replace"):
        line = ansi.sub("", line)
        m = ts_re.match(line)
        if not m:
            continue
        t, rest = t_of(m), m.group(5)
        if where == "server":
            if "pod event" in rest:
                pm = re.search(r'pod event pod="?([a-z0-9-]+)"? event=(\w+) ready=(\w+)', rest)
                if pm:
                    ev.append((t, where, f"s_event_{pm.group(2)}_{pm.group(3)}", pm.group(1)))
            elif "deleted pod" in rest:
                pm = re.search(r'deleted pod pod="?([a-z0-9-]+)"? why=(\w+)', rest)
                ev.append((t, where, "s_deleted", pm.group(1)))
            elif "created pod" in rest:
                pm = re.search(r'created pod pod="?([a-z0-9-]+)"?', rest)
                ev.append((t, where, "s_created", pm.group(1)))
            elif "told to pre-pull" in rest:
                pm = re.search(r'told to pre-pull pod="?([a-z0-9-]+)"?', rest)
                if pm:
                    ev.append((t, where, "s_told", pm.group(1)))
            continue
        # agent
        p = None
        pm = re.search(r'pod\{pod=default/([a-z0-9-]+)', rest)
        if pm:
            p = pm.group(1)
        if "pod plan" in rest:
            kinds = []
            if "Remove" in rest: kinds.append("a_plan_remove")
            if "Start" in rest: kinds.append("a_plan_start")
            for k in kinds:
                ev.append((t, where, k, p))
        elif "container removed" in rest:
            ev.append((t, where, "a_removed", p))
        elif "container started" in rest:
            ev.append((t, where, "a_started", p))
        elif "pod removed" in rest:
            ev.append((t, where, "a_pod_removed", p))
        elif "pod status written" in rest:
            pm = re.search(r'pod=default/([a-z0-9-]+) ready=(\w+)', rest)
            if pm:
                ev.append((t, where, "a_written_" + pm.group(2), pm.group(1)))
        elif "round begins" in rest:
            ev.append((t, where, "a_round", None))
        elif "pre-pull of the next revision finished" in rest:
            ev.append((t, where, "a_prepulled", None))
        elif "pre-pulling the next revision" in rest:
            ev.append((t, where, "a_prepull_start", None))
ev.sort()

def first(kind, pod, after=0.0):
    for e in ev:
        if e[2] == kind and e[3] == pod and e[0] >= after:
            return e[0]
    return None

def rounds_after(node, t):
    for e in ev:
        if e[1] == node and e[2] == "a_round" and e[0] >= t:
            return e[0]
    return None

STEPS = ["grant->agent plan(stop)", "plan(stop)->container removed", "removed->server sees delete",
         "delete seen->new pod created", "created->agent plan(start)", "plan(start)->started",
         "started->status written(ready=false)", "started->status written(ready=true)",
         "written ready->server event ready", "server ready->next grant",
         "= stop half: grant->server sees delete", "= start half: created->server sees ready"]

for prefix in prefixes:
    pods = sorted({e[3] for e in ev if e[3] and e[3].startswith(prefix + "-") and e[3][len(prefix)+1:].isalnum()})
    if not pods:
        continue
    created = {e[3]: (e[0]) for e in ev if e[2] == "s_created" and e[3] in pods}
    deleted = {e[3]: e[0] for e in ev if e[2] == "s_deleted" and e[3] in pods}
    node_of = {}
    for e in ev:
        if e[3] in pods and e[1] != "server":
            node_of.setdefault(e[3], e[1])
    # old pods: deleted by the controller (the rollout); new: created after the first delete
    if not deleted:
        continue
    t_first_grant = min(deleted.values())
    # the DaemonSet delete at the end also deletes: only grants before the last new pod is ready
    new = [p for p in pods if p in created and created[p] > t_first_grant - 0.001]
    olds = [p for p in pods if p in deleted and (p not in created or created[p] < t_first_grant)]
    rows = defaultdict(list)
    per_node = []
    grants = sorted(deleted[p] for p in olds)
    for o in olds:
        node = node_of.get(o)
        n = next((p for p in new if node_of.get(p) == node), None)
        if not n:
            continue
        g = deleted[o]
        tp = first("a_plan_remove", o, g)
        tr = first("a_removed", o, g)
        tsd = first("s_event_Deleted_false", o, g) or first("s_event_Deleted_true", o, g)
        tc = created.get(n)
        tps = first("a_plan_start", n, tc or 0)
        ts = first("a_started", n, tc or 0)
        twf = first("a_written_false", n, ts or 0)
        twt = first("a_written_true", n, ts or 0)
        tse = first("s_event_Modified_true", n, twt - 0.5 if twt else 0)
        nxt = [x for x in grants if tse and x > tse]
        tg = min(nxt) if nxt else None
        vals = [(g, tp), (tp, tr), (tr, tsd), (tsd, tc), (tc, tps), (tps, ts), (ts, twf), (ts, twt), (twt, tse), (tse, tg)]
        d = [None if a is None or b is None else b - a for a, b in vals]
        for k, x in zip(STEPS, d):
            if x is not None:
                rows[k].append(x)
        total = (tse - g) if tse else None
        if tsd and g:
            rows["= stop half: grant->server sees delete"].append(tsd - g)
        if tc and tse:
            rows["= start half: created->server sees ready"].append(tse - tc)
        per_node.append((g, node, o, n, d, total))
    print(f"\n== {prefix}: {len(olds)} old pods, {len(new)} new; first grant {t_first_grant % 60:.3f}")
    pre = [e for e in ev if e[2] == "a_prepulled" and t_first_grant - 60 < e[0] <= t_first_grant + 60]
    print(f"{'step':40} {'n':>3} {'median':>8} {'min':>8} {'max':>8}  (seconds)")
    for k in STEPS:
        xs = rows[k]
        if xs:
            print(f"{k:40} {len(xs):3} {statistics.median(xs):8.3f} {min(xs):8.3f} {max(xs):8.3f}")
    tot = [x[5] for x in per_node if x[5] is not None]
    if tot:
        print(f"{'grant->server sees ready (one node)':40} {len(tot):3} {statistics.median(tot):8.3f} {min(tot):8.3f} {max(tot):8.3f}")
    for g, node, o, n, d, total in sorted(per_node):
        print(f"  {g % 60:7.3f} {node} " + " ".join("   -  " if x is None else f"{x:6.3f}" for x in d))

# The chain between availabilities and grants (maxUnavailable, budget B): grant i (after the
# first wave) follows the (i-B)-th availability (server saw Ready + minReadySeconds).
B = int(os.environ.get("BUDGET", "5"))
MIN_READY = 1.0
for prefix in [p for p in prefixes if "maxunavailable" in p]:
    pods = {e[3] for e in ev if e[3] and e[3].startswith(prefix + "-")}
    deleted = sorted((e[0], e[3]) for e in ev if e[2] == "s_deleted" and e[3] in pods)
    created = {e[3]: e[0] for e in ev if e[2] == "s_created" and e[3] in pods}
    if not deleted:
        continue
    t0 = deleted[0][0]
    new = [p for p in created if created[p] > t0 - 0.001]
    ready = sorted(first("s_event_Modified_true", p, created[p]) for p in new)
    ready = [r for r in ready if r]
    grants = [g for g, p in deleted if p not in created or created[p] < t0][:len(new)]
    lags = []
    for i in range(B, len(grants)):
        a = ready[i - B] + MIN_READY
        lags.append(grants[i] - a)
    if lags:
        print(f"\n{prefix}: grant i vs availability i-{B} (ready seen + {MIN_READY}s): n={len(lags)} "
              f"median {statistics.median(lags):.3f} min {min(lags):.3f} max {max(lags):.3f}")
        print("  first wave grants:", " ".join(f"{g % 60:.3f}" for g in grants[:B]))
        pulls = sorted(e[0] for e in ev if e[2] == "a_prepulled" and t0 - 5 < e[0] < t0 + 10)
        starts = sorted(e[0] for e in ev if e[2] == "a_prepull_start" and t0 - 5 < e[0] < t0 + 10)
        if pulls and starts:
            print(f"  pre-pulls: first start {starts[0] % 60:.3f}, finished {pulls[0] % 60:.3f} .. {pulls[-1] % 60:.3f} (n={len(pulls)})")
            # how long the first wave waited on its pre-pulls: from the first pull started (the
            # template change seen) to the last first-wave grant
            if len(grants) >= B:
                print(f"  first wave waited on pre-pulls: {grants[B - 1] - starts[0]:.3f} s "
                      f"(first pull started -> its last grant)")
        # the pre-pull order (daemonset-agent.io/pull-next): when each wave was told, and how
        # long after being told each node was granted
        told = {e[3]: e[0] for e in ev if e[2] == "s_told" and e[3] in pods}
        if told:
            waits = [g - told[p] for g, p in deleted if p in told]
            print(f"  told to pre-pull: n={len(told)}, {min(told.values()) % 60:.3f} .. "
                  f"{max(told.values()) % 60:.3f}; told->granted median {statistics.median(waits):.3f} "
                  f"max {max(waits):.3f}")
        print(f"  last ready seen {ready[-1] % 60:.3f}")
