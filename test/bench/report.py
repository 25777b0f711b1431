"""Turns the load generator's JSON lines (label "<receiver> <scenario>", one
per receiver, scenario and round) into the README's table: medians over the
rounds, and the range of the per-round ratios. With a second file (the
local runs' eventlag.jsonl) it adds local mode's pipeline table."""
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, scenarios = {}, []
for r in rows:
    kind, scenario = r["label"].split(" ", 1)
    runs.setdefault((kind, scenario), []).append(r)
    if scenario not in scenarios:
        scenarios.append(scenario)
rounds = max((len(v) for v in runs.values()), default=0)

def median(kind, s, field):
    rs = runs.get((kind, s))
    return statistics.median(r[field] for r in rs) if rs else None

def cell(kind, s):
    i, mb = median(kind, s, "instancesPerSecond"), median(kind, s, "megabytesPerSecond")
    return "%.0f / %.0f" % (i, mb) if i is not None else "n/a"

def ratio(a, b, s, field="megabytesPerSecond"):
    """Median ratio of a's to b's field (MB/s), with the range over the rounds."""
    ra, rb = runs.get((a, s)), runs.get((b, s))
    if not ra or not rb:
        return "n/a"
    per = [x[field] / y[field] for x, y in zip(ra, rb) if y[field]]
    if not per:
        return "n/a"
    if len(per) == 1:
        return "%.2f" % per[0]
    return "%.2f (%.2f–%.2f)" % (statistics.median(per), min(per), max(per))

print("instances/s / MB/s, medians of %d round(s); ratios by throughput, median (range) of the rounds' ratios" % rounds)
print()
print("| scenario | scp-task, file store (durable) | scp-task, S3 store → sink | scp-task, S3 store → gofakes3 | DCMTK storescp --fork | Orthanc (fsync) | protocol floor (keeps nothing) | disk floor (durable, no network) | file ÷ Orthanc | file ÷ storescp | file ÷ disk floor | S3 sink ÷ file |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in scenarios:
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        s, cell("file", s), cell("s3-sink", s), cell("s3-emulator", s), cell("storescp", s), cell("orthanc", s),
        cell("discard", s), cell("diskfloor", s), ratio("file", "orthanc", s), ratio("file", "storescp", s),
        ratio("file", "diskfloor", s), ratio("s3-sink", "file", s)))
print()
print("Local mode against the plain file store, same sender, same rounds: throughput ratio and C-STORE p99 ratio (local ÷ file)")
print()
print("| scenario | scp-task, file store | scp-task --local | local ÷ file | C-STORE p99 file / local (ms) | p99 local ÷ file |")
print("|---|---|---|---|---|---|")
for s in scenarios:
    if runs.get(("local", s)):
        print("| %s | %s | %s | %s | %s / %s | %s |" % (s, cell("file", s), cell("local", s), ratio("local", "file", s),
              median("file", s, "p99ms"), median("local", s, "p99ms"), ratio("local", "file", s, "p99ms")))
if len(sys.argv) > 2:
    lag = {}
    for l in open(sys.argv[2]):
        if l.strip():
            r = json.loads(l)
            lag.setdefault(r["label"].split(" ", 1)[1], []).append(r)
    if lag:
        print()
        print("Local mode's pipeline at that load: C-STORE success → Instance Stored (event time), and the backlog's drain after the send ends (medians of the rounds)")
        print()
        print("| scenario | event p50 (ms) | event p99 (ms) | drain (ms) | matched |")
        print("|---|---|---|---|---|")
        for s in scenarios:
            if s in lag:
                rs = [r for r in lag[s] if r.get("matched")]
                if rs:
                    m = lambda f: statistics.median(r[f] for r in rs)
                    print("| %s | %.0f | %.0f | %.0f | %d/%d |" % (s, m("eventP50ms"), m("eventP99ms"), m("drainMs"), rs[0]["matched"], rs[0]["acked"]))
for r in rows:
    if r.get("failed"):
        print("\nFAILED in %s: %d (%s)" % (r["label"], r["failed"], r.get("firstError", "")))
