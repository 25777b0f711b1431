"""The site-link bench's arithmetic (test/bench/sitelink.sh).

  sitelink.py run [--metrics START END] LABEL RECEIVER RTT_MS ASSOCS LOG...
                                                       one JSON line for a run, from its storescu logs (and the
                                                       receiver's /metrics before and after it: the staging
                                                       file-system operations per object)
  sitelink.py report RESULTS.jsonl [RELAY_STATS.json...] the Markdown table

storescu logs with the pattern "%D{%s.%Q} %m" (epoch seconds, then
milliseconds with microseconds): a C-STORE's round trip runs from its
"Sending Store Request" line (the request and data set are about to be
written) to its "Received Store Response" line, as the load generator
measures it. A run's elapsed time runs from the first "Requesting
Association" to the last response, over every association."""
import json, os, re, statistics, sys

LINE = re.compile(r"^(\d+)\.(\d+)\.(\d+) (.*)$")


def stamp(m):
    return int(m.group(1)) + int(m.group(2)) / 1e3 + int(m.group(3)) / 1e6


def parse(label, receiver, rtt, assocs, logs):
    rtts, first, last, failed, nbytes, first_error = [], None, None, 0, 0, ""
    for path in logs:
        sending, current_file = None, None
        with open(path, errors="replace") as f:
            for raw in f:
                m = LINE.match(raw.rstrip("\n"))
                if not m:
                    continue
                t, msg = stamp(m), m.group(4)
                if msg.startswith("Requesting Association"):
                    first = t if first is None else min(first, t)
                elif msg.startswith("Sending file: "):
                    current_file = msg[len("Sending file: "):]
                elif msg.startswith("Sending Store Request"):
                    sending = t
                elif msg.startswith("Received Store Response") and sending is not None:
                    status = msg[msg.find("(") + 1:msg.rfind(")")]
                    if status == "Success" or status.startswith("Warning"):
                        rtts.append(t - sending)
                        if current_file and os.path.exists(current_file):
                            nbytes += os.path.getsize(current_file)
                    else:
                        failed += 1
                        first_error = first_error or status
                    last = t if last is None else max(last, t)
                    sending = None
                elif ("Association Rejected" in msg or "Store Failed" in msg or "Association Request Failed" in msg) and not first_error:
                    first_error = msg
    elapsed = (last - first) if first is not None and last is not None and last > first else 0
    rtts.sort()
    pick = lambda q: rtts[min(len(rtts) - 1, len(rtts) * q // 100)] * 1e3 if rtts else None
    out = {
        "label": label, "receiver": receiver, "rttMs": rtt, "associations": assocs,
        "instances": len(rtts), "failed": failed, "bytes": nbytes, "elapsedNs": int(elapsed * 1e9),
        "instancesPerSecond": len(rtts) / elapsed if elapsed else 0,
        "megabytesPerSecond": nbytes / 1e6 / elapsed if elapsed else 0,
        "p50ms": pick(50), "p99ms": pick(99),
    }
    if first_error:
        out["firstError"] = first_error
    return out


OPS = re.compile(r'^dicom_ingest_staging_fs_operations_total\{op="(\w+)"\} (\S+)$')
STAGED = "dicom_ingest_staging_objects_total"


def staging_counts(path):
    """The staging file-system operations by kind and the objects staged, from a /metrics scrape."""
    ops, objects = {}, 0.0
    try:
        f = open(path)
    except OSError:
        return ops, objects
    with f:
        for line in f:
            line = line.strip()
            m = OPS.match(line)
            if m:
                ops[m.group(1)] = float(m.group(2))
            elif line.startswith(STAGED + " "):
                objects = float(line.split()[1])
    return ops, objects


def ops_per_object(start, end):
    """Each staging operation's count per object staged between two scrapes (None without staging)."""
    ops0, n0 = staging_counts(start)
    ops1, n1 = staging_counts(end)
    if n1 - n0 <= 0:
        return None
    return {op: round((v - ops0.get(op, 0)) / (n1 - n0), 3) for op, v in sorted(ops1.items()) if v - ops0.get(op, 0) > 0}


def report(results, relay_stats):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    receivers, scenarios, runs = [], [], {}
    for r in rows:
        if r["receiver"] not in receivers:
            receivers.append(r["receiver"])
        key = (r["rttMs"], r["label"])
        if key not in scenarios:
            scenarios.append(key)
        runs.setdefault((key, r["receiver"]), []).append(r)
    rounds = max((len(v) for v in runs.values()), default=0)
    base = "storescp" if "storescp" in receivers else None
    others = [x for x in receivers if x != base]

    def med(key, rec, field):
        rs = [r[field] for r in runs.get((key, rec), []) if r.get(field) is not None]
        return statistics.median(rs) if rs else None

    def cell(key, rec):
        i = med(key, rec, "instancesPerSecond")
        if i is None:
            return "n/a"
        return "%.1f (%.0f / %.0f ms)" % (i, med(key, rec, "p50ms") or 0, med(key, rec, "p99ms") or 0)

    def ratio(key, rec):
        a, b = runs.get((key, rec)), runs.get((key, base))
        if not a or not b:
            return "n/a"
        per = [x["instancesPerSecond"] / y["instancesPerSecond"] for x, y in zip(a, b) if y["instancesPerSecond"]]
        if not per:
            return "n/a"
        if len(per) == 1:
            return "%.2f" % per[0]
        return "%.2f (%.2f–%.2f)" % (statistics.median(per), min(per), max(per))

    print("instances/s (C-STORE round trip p50 / p99), medians of %d round(s); ratios by instances/s" % rounds)
    print()
    head = ["link", "workload"] + receivers + (["%s ÷ %s" % (o, base) for o in others] if base else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in scenarios:
        rtt, label = key
        cells = ["%g ms RTT" % rtt, label] + [cell(key, x) for x in receivers]
        if base:
            cells += [ratio(key, o) for o in others]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if r.get("failed") or not r.get("instances"):
            print("\nFAILED in %s %s @ %g ms: %d failed, %d stored (%s)" % (r["receiver"], r["label"], r["rttMs"], r.get("failed", 0), r.get("instances", 0), r.get("firstError", "")))
    staged = [(k, x) for k in scenarios for x in receivers if any(r.get("stagingOpsPerObject") for r in runs.get((k, x), []))]
    if staged:
        print()
        print("Staging file-system operations per object staged (each an NFS round trip on EFS but syncstable, an fdatasync")
        print("after only direct writes that fit in one WRITE, which owes no COMMIT; write and the syncs are the")
        print("acknowledgement's, audit records and segment headers included; read is the uploads'), medians of the rounds:")
        print()
        for key, rec in staged:
            per = {}
            for r in runs[(key, rec)]:
                for op, v in (r.get("stagingOpsPerObject") or {}).items():
                    per.setdefault(op, []).append(v)
            print("- %g ms RTT, %s, %s: %s" % (key[0], key[1], rec,
                  ", ".join("%s %.2f" % (op, statistics.median(v)) for op, v in sorted(per.items()))))
    for path in relay_stats:
        try:
            lines = json.load(open(path))
        except (OSError, ValueError):
            continue
        print()
        for s in lines:
            print("relay %s: held %g ms, left late by p50 %.0f µs / p99 %.0f µs over %d packets (%d dropped)" % (
                s["line"], s["delayMs"], s["lateP50us"], s["lateP99us"], s["packets"], s.get("dropped", 0)))


if __name__ == "__main__":
    args = sys.argv[2:]
    if len(sys.argv) >= 2 and sys.argv[1] == "run" and args[:1] == ["--metrics"] and len(args) >= 8:
        start, end, args = args[1], args[2], args[3:]
        out = parse(args[0], args[1], float(args[2]), int(args[3]), args[4:])
        per = ops_per_object(start, end)
        if per:
            out["stagingOpsPerObject"] = per
        print(json.dumps(out))
    elif len(sys.argv) >= 7 and sys.argv[1] == "run":
        print(json.dumps(parse(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6:])))
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
