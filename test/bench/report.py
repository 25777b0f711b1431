"""Turns the load generator's JSON lines (label "<receiver> <scenario>") into the README's table."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by, scenarios = {}, []
for r in rows:
    kind, scenario = r["label"].split(" ", 1)
    by[(kind, scenario)] = r
    if scenario not in scenarios:
        scenarios.append(scenario)

def cell(r):
    return "%.0f / %.0f" % (r["instancesPerSecond"], r["megabytesPerSecond"]) if r else "n/a"

def ratio(a, b):
    return "%.2f" % (a["megabytesPerSecond"] / b["megabytesPerSecond"]) if a and b and b["megabytesPerSecond"] else "n/a"

print("instances/s / MB/s; ratios by throughput")
print()
print("| scenario | scp-task, file store (fsync) | scp-task, S3 store → sink | scp-task, S3 store → gofakes3 | DCMTK storescp --fork | file ÷ storescp | S3 sink ÷ file |")
print("|---|---|---|---|---|---|---|")
for s in scenarios:
    f, sink, emu, d = (by.get((k, s)) for k in ("file", "s3-sink", "s3-emulator", "storescp"))
    print("| %s | %s | %s | %s | %s | %s | %s |" % (s, cell(f), cell(sink), cell(emu), cell(d), ratio(f, d), ratio(sink, f)))
for r in rows:
    if r.get("failed"):
        print("\nFAILED in %s: %d (%s)" % (r["label"], r["failed"], r.get("firstError", "")))
