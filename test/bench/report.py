"""Turns the load generator's JSON lines into the README's table with ratios against storescp."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["label"]: r for r in rows}
scenarios = []
for r in rows:
    s = r["label"].split(" ", 2)[-1] if r["label"].startswith("storescp") else r["label"].split(" ", 2)[2]
    if s not in scenarios:
        scenarios.append(s)
print("| scenario | scp-task file (inst/s, MB/s) | scp-task S3 (inst/s, MB/s) | storescp (inst/s, MB/s) | file/storescp | S3/file |")
print("|---|---|---|---|---|---|")
for s in scenarios:
    f, s3, d = by.get("scp-task file " + s), by.get("scp-task s3 " + s), by.get("storescp " + s)
    cell = lambda r: "%.0f, %.1f" % (r["instancesPerSecond"], r["megabytesPerSecond"]) if r else "n/a"
    ratio = lambda a, b: "%.2f" % (a["megabytesPerSecond"] / b["megabytesPerSecond"]) if a and b and b["megabytesPerSecond"] else "n/a"
    print("| %s | %s | %s | %s | %s | %s |" % (s, cell(f), cell(s3), cell(d), ratio(f, d), ratio(s3, f)))
fails = [r for r in rows if r.get("failed")]
for r in fails:
    print("\nFAILED in %s: %d (%s)" % (r["label"], r["failed"], r.get("firstError", "")))
