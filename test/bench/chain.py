"""The chain bench's report (test/bench/chain.sh): latency through the
serverless chain, AWS calls per instance and per study, and their price.

  chain.py CHAIN.json PRICES.json

Calls are attributed by who makes them: scp-task, validate (once per
instance), audit (once per association record), notify (per study, and on
its schedule), and "aws" for what AWS does for the stack (S3's notification
deliveries, the event source mapping's polls and deletes). Prices come from
PRICES.json (public us-east-1 list prices, each with its source and date).
The deployment's shape (task size, counts, retention) is the CDK app's
default configuration (infra/config)."""
import json, sys

r = json.load(open(sys.argv[1]))
P = {k: v["usd"] for k, v in json.load(open(sys.argv[2]))["prices"].items()}
prices_meta = json.load(open(sys.argv[2]))

GB = 1e9  # AWS bills decimal gigabytes for S3 storage and data; close enough for these magnitudes
HOURS_MONTH = 730
# infra/config defaults: two Fargate tasks of 1 vCPU / 2 GiB on arm64, one NLB, the notify rule every
# minute; Lambda's event source mapping keeps at least 5 pollers per SQS mapping (two mappings).
TASKS, TASK_VCPU, TASK_GB, NLBS, MAPPINGS, POLLERS = 2, 1, 2, 1, 2, 5

inst = max(r["stored"] + r["rejected"], 1)
studies = max(r["studiesReceived"], 1)
cfg = r["config"]


def fmt_ms(q):
    return "%.0f / %.0f / %.0f" % (q["p50ms"], q["p99ms"], q["maxMs"]) if q.get("n") else "n/a"


print("## Serverless chain (validation run, shared machine)")
print()
print("Load: %d instances planned at %s/s over %s associations (%d sent in %.1f s: %.1f/s), studies of %s, images %s×%s, "
      "%s execution environments per function, batches of %s within %s; quiet period %s, notify every %s." % (
          r["planned"], cfg["rate"], cfg["associations"], r["sent"], r["sendSeconds"], r["achievedRate"], cfg["studySize"],
          cfg["image"], cfg["image"], cfg["concurrency"], cfg["batchSize"], cfg["batchWindow"], cfg["quietPeriod"], cfg["notifyEvery"]))
if cfg.get("scpArgs"):
    print("scp-task with %s." % cfg["scpArgs"])
print("Injected (P50/P99): S3 writes %s, S3 reads %s, notification delivery %s, queue to poller %s, EventBridge delivery %s, DynamoDB %s." % (
    cfg["s3WriteLatency"], cfg["s3ReadLatency"], cfg["notificationLatency"], cfg["sqsLatency"], cfg["eventBridgeLatency"], cfg["dynamodbLatency"]))
print()
print("| measure | n | p50 / p99 / max (ms) |")
print("|---|---|---|")
print("| C-STORE success → `Instance Stored` at a consumer | %d | %s |" % (r["instanceStored"].get("n", 0), fmt_ms(r["instanceStored"])))
for hop, q in sorted(r["hops"].items()):
    print("| … %s | %d | %s |" % (hop, q.get("n", 0), fmt_ms(q)))
print("| last instance's C-STORE success → `Study Received` | %d | %s |" % (r["studyReceived"].get("n", 0), fmt_ms(r["studyReceived"])))
for fn, u in sorted(r["lambda"].items()):
    print("| %s invocation (%d MB) | %d | %s |" % (fn, u["memoryMB"], u["invocations"], fmt_ms(u["duration"])))
problems = []
if r["unannounced"]:
    problems.append("%d instances never announced" % r["unannounced"])
if r["sendFailed"]:
    problems.append("%d C-STOREs failed" % r["sendFailed"])
if r["batchItemFailures"]:
    problems.append("%d batch item failures" % r["batchItemFailures"])
if r["studiesReceived"] < r["studies"]:
    problems.append("%d of %d studies announced" % (r["studiesReceived"], r["studies"]))
if problems:
    print()
    print("NOT COMPLETE: " + "; ".join(problems))

# Calls per instance and per study.
calls = r["calls"]
per_instance = ["scp-task", "validate", "audit", "aws"]
ops = sorted({op for c in per_instance + ["notify"] for op in calls.get(c, {})})
print()
print("## Calls per instance (validation run, shared machine)")
print()
print("Counted where they arrive; per stored instance (%d), notify per study announced (%d)." % (inst, studies))
print()
print("| call | scp-task | validate | audit | AWS for the stack | total per instance | notify per study |")
print("|---|---|---|---|---|---|---|")
for op in ops:
    row = [calls.get(c, {}).get(op, 0) / inst for c in per_instance]
    ns = calls.get("notify", {}).get(op, 0) / studies
    if "idle long poll" in op or op == "EventBridge scheduled invocation":
        continue
    print("| %s | %s | %.2f | %s |" % (op, " | ".join("%.2f" % x if x else "" for x in row), sum(row), "%.2f" % ns if ns else ""))
units = r.get("capacityUnits", {})


def ddb_units(caller, write):
    out = 0.0
    for op, u in units.get(caller, {}).items():
        is_write = any(w in op for w in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"))
        if is_write == write:
            out += u
    return out


print()
print("DynamoDB capacity (as dynalite meters it, ReturnConsumedCapacity INDEXES): %.2f write and %.2f read units per instance (validate and audit), "
      "%.2f write and %.2f read units per study (notify)." % (
          (ddb_units("validate", True) + ddb_units("audit", True)) / inst, (ddb_units("validate", False) + ddb_units("audit", False)) / inst,
          ddb_units("notify", True) / studies, ddb_units("notify", False) / studies))
logs = r["logBytes"]
print("Logs: %.0f bytes per instance (validate %.0f, audit %.0f, scp-task %.0f); CloudWatch gets no API call per instance: "
      "the metrics agent publishes scp-task's metrics on its own period." % (
          (logs.get("validate", 0) + logs.get("audit", 0) + logs.get("scp-task", 0)) / inst, logs.get("validate", 0) / inst,
          logs.get("audit", 0) / inst, logs.get("scp-task", 0) / inst))

# Cost.
def count(caller, op):
    return calls.get(caller, {}).get(op, 0)


def s3_requests(callers):
    put = get = 0
    for c in callers:
        for op, n in calls.get(c, {}).items():
            if not op.startswith("S3 "):
                continue
            if op.split(" ", 1)[1] in ("PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListObjects", "ListParts", "ListMultipartUploads"):
                put += n
            elif op.split(" ", 1)[1] not in ("DeleteObject", "AbortMultipartUpload"):
                get += n
    return put, get


st = r["storage"]
object_bytes = st.get("incoming", 0) / max(st.get("incoming objects", 1), 1)
lam = r["lambda"]
evb = r.get("eventBytes", {})


def lambda_cost(fn, n):
    u = lam.get(fn)
    if not u or not u["invocations"]:
        return 0.0, 0.0
    return u["invocations"] / n * P["lambda.request"], u["gbSeconds"] / n * P["lambda.gbs"]


def instance_lines():
    put, get = s3_requests(["scp-task", "validate", "audit"])
    sqs = sum(n for op, n in calls.get("aws", {}).items() if op.startswith("SQS") and "idle" not in op)
    inst_events = evb.get("Instance Stored billed events", 0) + evb.get("Instance Rejected billed events", 0)
    inst_event_bytes = evb.get("Instance Stored", 0) + evb.get("Instance Rejected", 0)
    vreq, vgbs = lambda_cost("validate", inst)
    areq, agbs = lambda_cost("audit", inst)
    s3_bytes = st.get("incoming", 0) + st.get("metadata", 0) + st.get("audit", 0)
    ddb_bytes = st.get("dynamodb audit", 0) + st.get("dynamodb index", 0)
    log_bytes = logs.get("validate", 0) + logs.get("audit", 0) + logs.get("scp-task", 0)
    return [
        ("S3 requests (PUT class %.2f, GET class %.2f per instance)" % (put / inst, get / inst), (put * P["s3.put"] + get * P["s3.get"]) / inst),
        ("DynamoDB request units", ((ddb_units("validate", True) + ddb_units("audit", True)) * P["dynamodb.wru"]
                                    + (ddb_units("validate", False) + ddb_units("audit", False)) * P["dynamodb.rru"]) / inst),
        ("Lambda requests", vreq + areq),
        ("Lambda GB-seconds at the measured durations", vgbs + agbs),
        ("SQS requests (%.2f per instance)" % (sqs / inst), sqs * P["sqs.request"] / inst),
        ("EventBridge events and archive", (inst_events * P["eventbridge.event"] + inst_event_bytes / GB * P["eventbridge.archive"]) / inst),
        ("CloudWatch Logs ingestion (%.0f bytes)" % (log_bytes / inst), log_bytes / GB * P["logs.ingest"] / inst),
        ("NLB data processed (the object through the NLB)", object_bytes / GB * P["nlb.nlcu"]),
        ("S3 storage, first month (%.0f KB: object, sidecars, audit records)" % (s3_bytes / inst / 1e3), s3_bytes / GB * P["s3.storage"] / inst),
        ("DynamoDB storage, first month (%.0f bytes)" % (ddb_bytes / inst), ddb_bytes / GB * P["dynamodb.storage"] / inst),
    ]


def study_lines():
    put, get = s3_requests(["notify"])
    nreq, ngbs = 0.0, 0.0
    n = evb.get("Study Received events", 0) + evb.get("Study Updated events", 0)
    ev = evb.get("Study Received billed events", 0) + evb.get("Study Updated billed events", 0)
    evbytes = evb.get("Study Received", 0) + evb.get("Study Updated", 0)
    return [
        ("DynamoDB request units (notify)", (ddb_units("notify", True) * P["dynamodb.wru"] + ddb_units("notify", False) * P["dynamodb.rru"]) / studies),
        ("EventBridge events (%.0f bytes each, billed as %.1f) and archive" % (evbytes / max(n, 1), ev / max(n, 1)),
         (ev * P["eventbridge.event"] + evbytes / GB * P["eventbridge.archive"]) / studies),
        ("S3 requests (notify)", (put * P["s3.put"] + get * P["s3.get"]) / studies),
    ]


il, sl = instance_lines(), study_lines()
per_inst = sum(v for _, v in il)
per_study_only = sum(v for _, v in sl)
size = int(cfg["studySize"])
print()
print("## Cost per 1,000 instances and per 1,000 studies (validation run's counts, list prices of %s)" % prices_meta["checked"])
print()
print("| item | per 1,000 instances (USD) |")
print("|---|---|")
for name, v in il:
    print("| %s | %.4f |" % (name, v * 1000))
print("| **total** | **%.4f** |" % (per_inst * 1000))
print()
print("| item | per 1,000 studies (USD) |")
print("|---|---|")
for name, v in sl:
    print("| %s | %.4f |" % (name, v * 1000))
print("| study-level total | %.4f |" % (per_study_only * 1000))
print("| with their instances (%d a study, as sent) | %.2f |" % (size, (per_study_only + size * per_inst) * 1000))
if object_bytes:
    efs = (-(-object_bytes // 4096) * 4096) / GB * (P["efs.write"] + P["efs.read"])
    print()
    print("Staged store on EFS (model): writing each %.0f KB object once and reading it once for the upload costs %.4f USD per 1,000 "
          "instances in Elastic Throughput (data only; staging storage lasts seconds: %.6f USD per 1,000 instances per hour held)." % (
              object_bytes / 1e3, efs * 1000, object_bytes / GB * P["efs.storage"] / HOURS_MONTH * 1000))
# Fixed costs: what the stack costs a month whatever it receives.
fargate = TASKS * (TASK_VCPU * P["fargate.vcpu_hour"] + TASK_GB * P["fargate.gb_hour"]) * HOURS_MONTH
nlb = NLBS * P["nlb.hour"] * HOURS_MONTH
nu = lam.get("notify")
notify = 0.0
if nu and nu["invocations"]:
    per_call_gbs = nu["gbSeconds"] / nu["invocations"]
    notify = HOURS_MONTH * 60 * (P["lambda.request"] + per_call_gbs * P["lambda.gbs"])
idle_polls = MAPPINGS * POLLERS * 3 * 60 * HOURS_MONTH * P["sqs.request"]
print()
print("Fixed, a month (730 h): Fargate %.2f USD (%d tasks of %d vCPU / %d GB, arm64), NLB hours %.2f USD, notify on its schedule %.2f USD, "
      "the event source mappings' idle long polls %.2f USD (%d mappings × %d pollers × 3 a minute): %.2f USD." % (
          fargate, TASKS, TASK_VCPU, TASK_GB, nlb, notify, idle_polls, MAPPINGS, POLLERS, fargate + nlb + notify + idle_polls))
