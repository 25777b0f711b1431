"""eventlag.py TIMINGS EVENTS_LOG LOADGEN_JSON_LINE: for a local-mode run,
the time from each C-STORE success (the load generator's -timings file) to
its Instance Stored event (the event's time, in the data directory's
events.log), as p50/p99, and the backlog's drain: from the send's last
response to the last Instance Stored event. Prints one JSON line."""
import json, sys
from datetime import datetime

def ns(ts):
    # RFC 3339 with up to nanoseconds, as the event log writes it.
    base, frac = ts.rstrip("Z"), "0"
    if "." in base:
        base, frac = base.split(".")
    sec = datetime.fromisoformat(base + "+00:00").timestamp()
    return int(sec) * 10**9 + int((frac + "000000000")[:9])

acked = {}
for line in open(sys.argv[1]):
    sop, t = line.split("\t")
    acked[sop] = int(t)
stored = {}
for line in open(sys.argv[2]):
    e = json.loads(line)
    if e.get("detail-type") == "Instance Stored":
        stored[e["detail"]["sopInstanceUid"]] = ns(e["time"])
run = json.loads(sys.argv[3])
lags = sorted(stored[s] - acked[s] for s in acked if s in stored)
if not lags:
    print(json.dumps({"label": run["label"], "matched": 0}))
    sys.exit(0)
pct = lambda p: lags[min(len(lags) - 1, len(lags) * p // 100)] / 1e6
print(json.dumps({"label": run["label"], "matched": len(lags), "acked": len(acked),
                  "eventP50ms": round(pct(50), 1), "eventP99ms": round(pct(99), 1),
                  "drainMs": round(max(0, max(stored.values()) - run["endNs"]) / 1e6, 1)}))
