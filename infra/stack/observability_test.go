package stack

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/dicom-ingest/dicom-ingest/infra/access"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// watched is one metric an alarm watches: its own, or one its math
// expression reads.
type watched struct {
	namespace, name, statistic string
	dims                       map[string]any // name -> value
}

// alarmMetrics lists the metrics an alarm's properties watch.
func alarmMetrics(p map[string]any) []watched {
	dims := func(v any) map[string]any {
		out := map[string]any{}
		for _, d := range asAnySlice(v) {
			dm := d.(map[string]any)
			out[dm["Name"].(string)] = dm["Value"]
		}
		return out
	}
	if name, ok := p["MetricName"].(string); ok {
		ns, _ := p["Namespace"].(string)
		stat, _ := p["Statistic"].(string)
		return []watched{{ns, name, stat, dims(p["Dimensions"])}}
	}
	var out []watched
	for _, q := range asAnySlice(p["Metrics"]) {
		ms, ok := q.(map[string]any)["MetricStat"].(map[string]any)
		if !ok {
			continue // the expression itself
		}
		m := ms["Metric"].(map[string]any)
		ns, _ := m["Namespace"].(string)
		stat, _ := ms["Stat"].(string)
		out = append(out, watched{ns, m["MetricName"].(string), stat, dims(m["Dimensions"])})
	}
	return out
}

// rendered is a template string, with what a Fn::Join joins as "TOKEN" where
// it is not a literal (a Ref, a GetAtt), so that JSON joined from literals
// and references parses.
func rendered(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	j, _ := v.(map[string]any)["Fn::Join"].([]any)
	if len(j) != 2 {
		return "TOKEN"
	}
	var b strings.Builder
	for i, part := range asAnySlice(j[1]) {
		if i > 0 {
			b.WriteString(j[0].(string))
		}
		if s, ok := part.(string); ok {
			b.WriteString(s)
		} else {
			b.WriteString("TOKEN")
		}
	}
	return b.String()
}

// agentDeclaration is one metric declaration of the CloudWatch agent's
// configuration as the task definition carries it.
type agentDeclaration struct {
	Dimensions [][]string `json:"dimensions"`
	Selectors  []string   `json:"metric_selectors"`
}

// agentDeclarations reads the metrics agent's declarations from the
// synthesized task definition.
func (s *synthesized) agentDeclarations(t *testing.T) []agentDeclaration {
	t.Helper()
	raw := rendered(s.containerEnv(t, "metrics-agent")["CW_CONFIG_CONTENT"])
	var cfg struct {
		Logs struct {
			MetricsCollected struct {
				Prometheus struct {
					EMF struct {
						Declarations []agentDeclaration `json:"metric_declaration"`
					} `json:"emf_processor"`
				} `json:"prometheus"`
			} `json:"metrics_collected"`
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Logs.MetricsCollected.Prometheus.EMF.Declarations
}

// agentPublishes says with which dimension sets (each sorted) the agent
// publishes an SCP metric, if it does: each set is a metric of its own.
func agentPublishes(t *testing.T, decls []agentDeclaration, name string) ([][]string, bool) {
	var sets [][]string
	for _, d := range decls {
		for _, sel := range d.Selectors {
			re, err := regexp.Compile(sel)
			if err != nil {
				t.Fatalf("selector %q: %v", sel, err)
			}
			if re.MatchString(name) {
				for _, dims := range d.Dimensions {
					sets = append(sets, slices.Sorted(slices.Values(dims)))
				}
			}
		}
	}
	return sets, len(sets) > 0
}

// publishedWith reports whether names is one of the dimension sets.
func publishedWith(sets [][]string, names []string) bool {
	return slices.ContainsFunc(sets, func(dims []string) bool { return slices.Equal(dims, names) })
}

// TestAlarmsWatchWhatIsPublished: every alarm watches metrics something
// publishes, under the dimensions it publishes them with (a metric with
// other dimensions is another metric, one nothing publishes):
//   - a metric filter's: the filter's dimensions exactly, each taking its
//     value from the log line with no default value (CloudWatch Logs refuses
//     a default value with dimensions). The audit feed's unsendable-record
//     alarm named no dimension while its filter published Environment: it
//     could never fire.
//   - an SCP metric: one the metrics agent's declarations select, with
//     one of their dimension sets (a labelled metric is published by
//     Environment alone as well as by its label), that scp-task registers
//     (metricnames, whose tests hold scp-task to it), read with a
//     statistic that fits its kind.
//   - DynamoDB's ThrottledRequests: published per table and operation, for
//     operations something calls; so a table of the stack and an operation
//     the functions' roles are granted on it.
//
// And every filter is watched.
func TestAlarmsWatchWhatIsPublished(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		filters := map[string][]string{} // metric name -> dimension keys
		for id, f := range s.resources("AWS::Logs::MetricFilter") {
			for _, tr := range asAnySlice(props(f)["MetricTransformations"]) {
				mt := tr.(map[string]any)
				keys := []string{}
				for _, d := range asAnySlice(mt["Dimensions"]) {
					dm := d.(map[string]any)
					keys = append(keys, dm["Key"].(string))
					if v, _ := dm["Value"].(string); !strings.HasPrefix(v, "$.") {
						t.Errorf("filter %s: dimension %v is not a field of the log line", id, dm)
					}
				}
				if _, ok := mt["DefaultValue"]; ok && len(keys) > 0 {
					t.Errorf("filter %s: a default value with dimensions %v", id, keys)
				}
				if mt["MetricNamespace"] != MetricsNamespace {
					t.Errorf("filter %s publishes into %v", id, mt["MetricNamespace"])
				}
				slices.Sort(keys)
				filters[mt["MetricName"].(string)] = keys
			}
		}
		decls := s.agentDeclarations(t)
		tableOps := map[string][]string{
			s.stack.logicalID(s.stack.Pipeline.AuditTable): tableOperations(func(a access.Function) access.Table { return a.Audit }),
			s.stack.logicalID(s.stack.Pipeline.IndexTable): tableOperations(func(a access.Function) access.Table { return a.Index }),
		}
		watchedFilters := map[string]bool{}
		for aid, a := range s.resources("AWS::CloudWatch::Alarm") {
			for _, m := range alarmMetrics(props(a)) {
				names := slices.Sorted(func(yield func(string) bool) {
					for k := range m.dims {
						if !yield(k) {
							return
						}
					}
				})
				switch m.namespace {
				case MetricsNamespace:
					if keys, ok := filters[m.name]; ok {
						watchedFilters[m.name] = true
						if !slices.Equal(names, keys) {
							t.Errorf("alarm %s on %s names dimensions %v; its filter publishes %v", aid, m.name, names, keys)
						}
						continue
					}
					sets, ok := agentPublishes(t, decls, m.name)
					switch {
					case !ok:
						t.Errorf("alarm %s watches %s, which no filter and no agent declaration publishes", aid, m.name)
					case !publishedWith(sets, names):
						t.Errorf("alarm %s on %s names dimensions %v; the agent publishes %v", aid, m.name, names, sets)
					}
					if k, ok := metricnames.Kinds[m.name]; !ok {
						t.Errorf("alarm %s watches %s, which is not one of scp-task's published metrics (metricnames)", aid, m.name)
					} else if !metricnames.StatisticFits(k, m.statistic) {
						t.Errorf("alarm %s reads the %s %s with %s", aid, k, m.name, m.statistic)
					}
				case "AWS/DynamoDB":
					if m.name != "ThrottledRequests" {
						t.Errorf("alarm %s watches %s; only ThrottledRequests is expected", aid, m.name)
						continue
					}
					ops, ok := tableOps[refID(m.dims["TableName"])]
					if !ok || !slices.Contains(ops, m.dims["Operation"].(string)) || len(m.dims) != 2 {
						t.Errorf("alarm %s watches %s %v: not a table of the stack and an operation called on it (%v)", aid, m.name, m.dims, tableOps)
					}
				}
			}
		}
		for name := range filters {
			if !watchedFilters[name] {
				t.Errorf("no alarm watches %s, which a filter publishes", name)
			}
		}
	})
}

// TestFailureModesAlarmed: the failures that had no alarm have one:
// association audit records lost (in the agent's metric and in the log
// line each loss writes, which outlives the task), scale-in protection
// that cannot be set, and throttling of either table.
func TestFailureModesAlarmed(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		want := map[string]bool{
			MetricAuditRecordsLost:        false,
			MetricAuditRecordLostLogLines: false,
			MetricTaskProtectionFailures:  false,
		}
		throttled := map[string]bool{}
		for _, a := range s.resources("AWS::CloudWatch::Alarm") {
			for _, m := range alarmMetrics(props(a)) {
				if _, ok := want[m.name]; ok {
					want[m.name] = true
				}
				if m.name == "ThrottledRequests" {
					throttled[refID(m.dims["TableName"])] = true
				}
			}
		}
		for name, found := range want {
			if !found {
				t.Errorf("no alarm on %s", name)
			}
		}
		for _, tb := range []string{s.stack.logicalID(s.stack.Pipeline.AuditTable), s.stack.logicalID(s.stack.Pipeline.IndexTable)} {
			if !throttled[tb] {
				t.Errorf("no alarm on throttling of table %s", tb)
			}
		}
	})
}

// TestAnnouncePanicAlarmed: a study's announcement that panicked (a bug,
// logged as pipeline.AnnouncePanicLog by notify's runs and by
// commitment's, which announce the studies a request completes) is
// counted from both functions' log groups and alarmed, like the other
// lines that mean a human must act. It was logged, and nothing watched it.
func TestAnnouncePanicAlarmed(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		filtered := map[string]bool{} // log group logical id → a filter counts the line there
		for id, f := range s.resources("AWS::Logs::MetricFilter") {
			p := props(f)
			if p["FilterPattern"] != `{ $.msg = "`+pipeline.AnnouncePanicLog+`" }` {
				continue
			}
			for _, tr := range asAnySlice(p["MetricTransformations"]) {
				if mt := tr.(map[string]any); mt["MetricName"] != MetricAnnouncePanics || mt["MetricNamespace"] != MetricsNamespace || mt["MetricValue"] != "1" {
					t.Errorf("filter %s publishes %s", id, js(mt))
				}
			}
			filtered[refID(p["LogGroupName"])] = true
		}
		for _, name := range []string{FnNotify, FnCommitment} {
			if lg := s.stack.logicalID(s.stack.Pipeline.Functions[name].LogGroup()); !filtered[lg] {
				t.Errorf("no filter counts %q on the %s function's log group %s (filtered: %v)", pipeline.AnnouncePanicLog, name, lg, filtered)
			}
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
				"MetricName": MetricAnnouncePanics, "Namespace": MetricsNamespace, "Threshold": 0, "Statistic": "Sum",
				"ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
				"Dimensions": []any{map[string]any{"Name": "Environment", "Value": s.cfg.Name}},
			})
		})
	})
}

// TestFunctionPanicsAlarmed: a panic a function recovered (a bug) is
// counted from every function's log group, by the line its handler logs
// (pipeline.MessagePanicLog for a queue's message, ScheduledPanicLog for a
// scheduled run; the audit feed's auditfeed.PanicLog), and alarmed. They
// were logged, and only the dead-letter queues and the Errors alarms saw
// them, late or not at all: a message that panicked fails alone, no
// invocation error, and waits out its retries before its DLQ sounds.
func TestFunctionPanicsAlarmed(t *testing.T) {
	lambdaLines := []string{pipeline.MessagePanicLog, pipeline.ScheduledPanicLog}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		want := map[string][]string{} // function → the lines its log group's filter must count
		for _, name := range FunctionNames {
			want[name] = lambdaLines
		}
		if s.stack.Pipeline.AuditFeed != nil {
			want[FnAuditFeed] = []string{auditfeed.PanicLog}
		}
		patterns := map[string]string{} // log group logical id → pattern of a filter publishing the metric
		for id, f := range s.resources("AWS::Logs::MetricFilter") {
			p := props(f)
			for _, tr := range asAnySlice(p["MetricTransformations"]) {
				mt := tr.(map[string]any)
				if mt["MetricName"] != MetricFunctionPanics {
					continue
				}
				if mt["MetricNamespace"] != MetricsNamespace || mt["MetricValue"] != "1" {
					t.Errorf("filter %s publishes %s", id, js(mt))
				}
				patterns[refID(p["LogGroupName"])], _ = p["FilterPattern"].(string)
			}
		}
		for name, lines := range want {
			fn := s.stack.Pipeline.Functions[name]
			if name == FnAuditFeed {
				fn = s.stack.Pipeline.AuditFeed.Function
			}
			lg := s.stack.logicalID(fn.LogGroup())
			if got, want := patterns[lg], jsonlog.MessageFilter(lines...); got != want {
				t.Errorf("the %s function's log group %s: filter pattern %q, want %q", name, lg, got, want)
			}
		}
		if len(patterns) != len(want) {
			t.Errorf("%d log groups counted, want %d (the functions'): %v", len(patterns), len(want), patterns)
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
				"MetricName": MetricFunctionPanics, "Namespace": MetricsNamespace, "Threshold": 0, "Statistic": "Sum",
				"ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching", "EvaluationPeriods": 1,
				"Dimensions": []any{map[string]any{"Name": "Environment", "Value": s.cfg.Name}},
			})
		})
	})
}

// alarmedMetrics are the names of the metrics the stack's alarms watch.
func (s *synthesized) alarmedMetrics() map[string]bool {
	out := map[string]bool{}
	for _, a := range s.resources("AWS::CloudWatch::Alarm") {
		for _, m := range alarmMetrics(props(a)) {
			out[m.name] = true
		}
	}
	return out
}

// TestStagingCountersAlarmed: with scp.staging, the agent publishes each
// staging counter below by Environment and an alarm watches it (and the
// log line counted beside it, if any). Neither counter was published, and
// nothing alarmed.
func TestStagingCountersAlarmed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		counter string
		alarmed []string
	}{
		// A task killed or crashed (the run markers live on the staging
		// file system): the agent's counter the next start raises, and
		// the log line it writes, which the agent may miss (the counter
		// rises before the first scrape).
		{"unclean stop", MetricAuditUncleanStops, []string{MetricAuditUncleanStops, MetricAuditUncleanStopLogLines}},
		// A staging write that found no space: that C-STORE failed A700
		// and the task refuses associations until space is back, on a
		// file system every task shares.
		{"no space", MetricStagingNoSpace, []string{MetricStagingNoSpace}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachEnv(t, func(t *testing.T, s *synthesized) {
				if s.cfg.Scp.Staging == nil {
					t.Fatal("the example configs stage objects on EFS")
				}
				if sets, ok := agentPublishes(t, s.agentDeclarations(t), tc.counter); !ok || !publishedWith(sets, []string{"Environment"}) {
					t.Errorf("the agent publishes %s: %v with %v", tc.counter, ok, sets)
				}
				alarmed := s.alarmedMetrics()
				for _, name := range tc.alarmed {
					if !alarmed[name] {
						t.Errorf("no alarm on %s", name)
					}
				}
			})
		})
	}
}

// TestDashboardReadsGaugesAsGauges: a graph of one of the SCP's gauges
// reads it with a gauge's statistic, and a counter with Sum. The agent
// publishes a gauge once per task per scrape (every 30 s), so the
// Associations graph's Sum over a minute showed about twice the
// associations there were.
func TestDashboardReadsGaugesAsGauges(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		dash := first(s.resources("AWS::CloudWatch::Dashboard"))
		var body struct {
			Widgets []struct {
				Properties struct {
					Title   string  `json:"title"`
					Metrics [][]any `json:"metrics"`
				} `json:"properties"`
			} `json:"widgets"`
		}
		if err := json.Unmarshal([]byte(rendered(props(dash)["DashboardBody"])), &body); err != nil {
			t.Fatal(err)
		}
		var seen int
		for _, w := range body.Widgets {
			for _, m := range w.Properties.Metrics {
				if len(m) < 3 || m[0] != MetricsNamespace {
					continue
				}
				name, _ := m[1].(string)
				opts, _ := m[len(m)-1].(map[string]any)
				stat, _ := opts["stat"].(string)
				if stat == "" {
					stat = "Average" // a graph's default, which CDK leaves out
				}
				k, ok := metricnames.Kinds[name]
				if !ok {
					continue // a metric filter's count
				}
				seen++
				if !metricnames.StatisticFits(k, stat) {
					t.Errorf("graph %q reads the %s %s with %q", w.Properties.Title, k, name, stat)
				}
			}
		}
		if seen == 0 {
			t.Error("no graph of an SCP metric found on the dashboard")
		}
	})
}

// TestLabelledMetricsPublishedByLabel: the counters whose label the
// on-call engineer needs (rejects by reason, C-STORE failures by status:
// metricnames.Dimensions) reach CloudWatch with that label as a dimension,
// and by Environment alone, their sum, which is what the alarms on them
// watch; the dashboard graphs them by the label with a SEARCH over the
// published dimension set. No other label becomes a dimension: each value
// is a CloudWatch metric of its own, so only labels with a small, fixed
// value set (metricnames.RejectReasons, FailureStatuses,
// TLSHandshakeReasons) may. The agent published their sums alone, and
// failed TLS handshakes had no reason at all.
func TestLabelledMetricsPublishedByLabel(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		decls := s.agentDeclarations(t)
		for _, d := range decls {
			for _, dims := range d.Dimensions {
				for _, dim := range dims {
					if dim == "Environment" {
						continue
					}
					for _, sel := range d.Selectors {
						name := strings.TrimSuffix(strings.TrimPrefix(sel, "^"), "$")
						if metricnames.Dimensions[name] != dim {
							t.Errorf("the agent publishes %s with dimension %q, which metricnames.Dimensions does not name for it", sel, dim)
						}
					}
				}
			}
		}
		dash := first(s.resources("AWS::CloudWatch::Dashboard"))
		body := rendered(props(dash)["DashboardBody"])
		alarms := s.resources("AWS::CloudWatch::Alarm")
		for name, label := range metricnames.Dimensions {
			sets, ok := agentPublishes(t, decls, name)
			if name == MetricTLSHandshakeFailures && s.cfg.Dicom.TLS == nil {
				// Without dicom.tls there are no handshakes to count.
				if ok {
					t.Errorf("the agent publishes %s without dicom.tls", name)
				}
				continue
			}
			want := [][]string{{"Environment"}, slices.Sorted(slices.Values([]string{"Environment", label}))}
			if !ok || len(sets) != len(want) || !publishedWith(sets, want[0]) || !publishedWith(sets, want[1]) {
				t.Errorf("the agent publishes %s with %v, want %v", name, sets, want)
			}
			var alarmed bool
			for aid, a := range alarms {
				for _, m := range alarmMetrics(props(a)) {
					if m.name != name {
						continue
					}
					alarmed = true
					if _, byLabel := m.dims[label]; byLabel || len(m.dims) != 1 {
						t.Errorf("alarm %s watches %s by %v; want its sum, by Environment alone", aid, name, m.dims)
					}
				}
			}
			if !alarmed {
				t.Errorf("no alarm watches %s", name)
			}
			search := fmt.Sprintf(`SEARCH('{%s,Environment,%s} MetricName=\"%s\" Environment=\"%s\"'`, MetricsNamespace, label, name, s.cfg.Name)
			if !strings.Contains(body, search) {
				t.Errorf("the dashboard has no graph of %s by %s (%s)", name, label, search)
			}
		}
	})
}

// TestRunbookMetricsArePublished: every SCP metric the runbooks name
// (docs/operations/alarms.md, deploy.md; deploy.md shortens the prefix to
// "…_") is one the metrics agent publishes to CloudWatch, where the
// on-call engineer looks for it: a task's /metrics is on its health port,
// which only the load balancer reaches. And deploy.md's list of what the
// agent publishes names every metric it does. The runbooks named the
// staging backlog's parked objects and adopted journals, the audit
// trail's writable state and scale-in protection's state, none published.
// dicom_ingest_tls_reloads_total is named as what is not published.
func TestRunbookMetricsArePublished(t *testing.T) {
	notPublished := map[string]bool{metricnames.TLSReloads: true}
	var published []string
	for _, d := range scpDeclarations(true) {
		published = append(published, d.metrics...)
	}
	named := regexp.MustCompile(`(?:dicom_ingest|…)(_[a-z0-9_]+[a-z])`) // s3 has a digit
	inDoc := map[string]map[string]bool{}
	for _, doc := range []string{"alarms.md", "deploy.md"} {
		b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "operations", doc))
		if err != nil {
			t.Fatal(err)
		}
		inDoc[doc] = map[string]bool{}
		for _, m := range named.FindAllStringSubmatch(string(b), -1) {
			name := "dicom_ingest" + m[1]
			inDoc[doc][name] = true
			if !notPublished[name] && !slices.Contains(published, name) {
				t.Errorf("docs/operations/%s names %s, which the metrics agent does not publish (scpDeclarations)", doc, name)
			}
		}
	}
	for _, name := range published {
		if !inDoc["deploy.md"][name] {
			t.Errorf("the metrics agent publishes %s, which docs/operations/deploy.md's list does not name", name)
		}
	}
	// configuration.md lists every metric of /metrics; each is published
	// or named in its paragraph of those only on /metrics, which names no
	// published one. A name followed by _* stands for a family.
	b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	const onlyMark = "**Only on a task's `/metrics`**"
	start := strings.Index(conf, onlyMark)
	if start < 0 {
		t.Fatalf("docs/configuration.md has no paragraph %s", onlyMark)
	}
	end := start + strings.Index(conf[start:], "\n\n")
	onlyLocal := map[string]bool{}
	var families []string
	for _, ix := range named.FindAllStringSubmatchIndex(conf[start:end], -1) {
		name := "dicom_ingest" + conf[start+ix[2]:start+ix[3]]
		if strings.HasPrefix(conf[start+ix[1]:], "_*") {
			families = append(families, name+"_")
			continue
		}
		onlyLocal[name] = true
		if slices.Contains(published, name) {
			t.Errorf("docs/configuration.md says %s is only on /metrics; the metrics agent publishes it", name)
		}
	}
	for _, ix := range named.FindAllStringSubmatchIndex(conf, -1) {
		if strings.HasPrefix(conf[ix[1]:], "_*") {
			continue
		}
		name := "dicom_ingest" + conf[ix[2]:ix[3]]
		inFamily := slices.ContainsFunc(families, func(f string) bool { return strings.HasPrefix(name, f) })
		if !onlyLocal[name] && !inFamily && !slices.Contains(published, name) {
			t.Errorf("docs/configuration.md names %s, neither published (scpDeclarations) nor in its paragraph of metrics only on /metrics", name)
		}
	}
}

// runbookRows reads the names the alarms table of docs/operations/alarms.md
// gives in its first column: the alarms', and those of the EventBridge
// rules that reach the topic too, marked "(rule)".
func runbookRows(t *testing.T) (alarms, rules map[string]bool) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "operations", "alarms.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "\n| Alarm |")
	if !ok {
		t.Fatal("docs/operations/alarms.md has no table headed | Alarm |")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	alarms, rules = map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		first, _, ok := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		if !ok || !strings.HasPrefix(line, "| `") {
			continue
		}
		into := alarms
		if strings.Contains(first, "(rule)") {
			into = rules
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(first, -1) {
			into[m[1]] = true
		}
	}
	if len(alarms) == 0 {
		t.Fatal("no alarm rows read from docs/operations/alarms.md")
	}
	return alarms, rules
}

// alarmRunbookNames maps each alarm of a synthesized stack (by construct
// id) to the names its runbook row may give it: its id, a site's alarm as
// <site>/…, a function's as <function>….
func alarmRunbookNames(s *synthesized) map[string][]string {
	out := map[string][]string{}
	for _, c := range *s.stack.Stack.Node().FindAll(constructs.ConstructOrder_PREORDER) {
		r, ok := c.(awscdk.CfnResource)
		if !ok || *r.CfnResourceType() != "AWS::CloudWatch::Alarm" {
			continue
		}
		alarm := c.Node().Scope().Node()
		id := *alarm.Id()
		names := []string{id}
		if strings.HasPrefix(*alarm.Scope().Node().Id(), "Site-") {
			names = []string{"<site>/" + id}
		}
		for _, fn := range append(slices.Clone(FunctionNames), FnAuditFeed) {
			if rest, ok := strings.CutPrefix(id, fn); ok && rest != "" {
				names = append(names, "<function>"+rest)
			}
		}
		out[*alarm.Path()] = names
	}
	return out
}

// TestEveryAlarmHasARunbookRow: each alarm the stack creates has a row in
// docs/operations/alarms.md, where the on-call engineer looks it up by
// its name (a site's alarm as <site>/…, a function's as <function>…).
func TestEveryAlarmHasARunbookRow(t *testing.T) {
	documented, _ := runbookRows(t)
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		alarms := alarmRunbookNames(s)
		if len(alarms) == 0 {
			t.Fatal("no alarms found in the construct tree")
		}
		for path, names := range alarms {
			if !slices.ContainsFunc(names, func(n string) bool { return documented[n] }) {
				t.Errorf("alarm %s (%s) has no row in docs/operations/alarms.md", names[0], path)
			}
		}
	})
}

// TestEveryRunbookRowHasAnAlarm: the other way round, each name the
// alarms table of docs/operations/alarms.md gives is an alarm (or, marked
// "(rule)", an EventBridge rule) of the stack in an example environment
// or in the variant with every optional alarm (tlsOnly: a client CRL), so
// the on-call engineer never reads of an alarm that cannot sound (a
// renamed or removed one).
func TestEveryRunbookRowHasAnAlarm(t *testing.T) {
	if testing.Short() {
		t.Skip("synthesizes the variant with a client CRL; skipped with -short")
	}
	documentedAlarms, documentedRules := runbookRows(t)
	alarms, rules := map[string]bool{}, map[string]bool{}
	stacks := []*synthesized{synthEnv(t, "tlsonly", tlsOnly)}
	for _, env := range envs {
		stacks = append(stacks, synthEnv(t, env, example(env)))
	}
	for _, s := range stacks {
		for _, names := range alarmRunbookNames(s) {
			for _, n := range names {
				alarms[n] = true
			}
		}
		for _, c := range *s.stack.Stack.Node().FindAll(constructs.ConstructOrder_PREORDER) {
			if r, ok := c.(awscdk.CfnResource); ok && *r.CfnResourceType() == "AWS::Events::Rule" {
				rules[*c.Node().Scope().Node().Id()] = true
			}
		}
	}
	for n := range documentedAlarms {
		if !alarms[n] {
			t.Errorf("docs/operations/alarms.md has a row for alarm %s, which no example environment's stack creates", n)
		}
	}
	for n := range documentedRules {
		if !rules[n] {
			t.Errorf("docs/operations/alarms.md has a row for rule %s, which no example environment's stack creates", n)
		}
	}
}

// TestEveryFunctionHasItsAlarms: every function of the stack (the pipeline's
// and, with audit.syslog, the audit feed's) has the alarms every function
// has (functionAlarms): its invocation errors in any minute, and its
// throttles in each of 5 minutes. The audit feed's function had an errors
// alarm and no throttles alarm.
func TestEveryFunctionHasItsAlarms(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		fns := map[string]bool{}
		for id, f := range s.resources("AWS::Lambda::Function") {
			if props(f)["Handler"] == "bootstrap" {
				fns[id] = true
			}
		}
		if len(fns) != len(FunctionNames)+feeds(s) {
			t.Fatalf("%d functions, want %d", len(fns), len(FunctionNames)+feeds(s))
		}
		for _, c := range []struct {
			metric  string
			periods float64
		}{
			{"Errors", 1},
			{"Throttles", 5},
		} {
			alarmed := map[string]int{}
			for aid, a := range s.resources("AWS::CloudWatch::Alarm") {
				p := props(a)
				for _, m := range alarmMetrics(p) {
					if m.namespace != "AWS/Lambda" || m.name != c.metric {
						continue
					}
					fn := refID(m.dims["FunctionName"])
					alarmed[fn]++
					if m.statistic != "Sum" || p["Threshold"] != float64(0) || p["ComparisonOperator"] != "GreaterThanThreshold" ||
						p["EvaluationPeriods"] != c.periods || p["Period"] != float64(60) {
						t.Errorf("alarm %s on %s's %s: %s %v %v over %v periods of %v s, want Sum > 0 over %v of 60 s",
							aid, fn, c.metric, m.statistic, p["ComparisonOperator"], p["Threshold"], p["EvaluationPeriods"], p["Period"], c.periods)
					}
				}
			}
			for fn := range fns {
				if alarmed[fn] != 1 {
					t.Errorf("function %s has %d alarms on its %s, want 1", fn, alarmed[fn], c.metric)
				}
			}
		}
	})
}
