package stack

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
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

// agentPublishes says with which dimensions the agent publishes an SCP
// metric, if it does.
func agentPublishes(t *testing.T, decls []agentDeclaration, name string) ([]string, bool) {
	for _, d := range decls {
		for _, sel := range d.Selectors {
			re, err := regexp.Compile(sel)
			if err != nil {
				t.Fatalf("selector %q: %v", sel, err)
			}
			if re.MatchString(name) && len(d.Dimensions) == 1 {
				return slices.Sorted(slices.Values(d.Dimensions[0])), true
			}
		}
	}
	return nil, false
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
//     their dimensions, that scp-task registers (metricnames, whose tests
//     hold scp-task to it), read with a statistic that fits its kind.
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
			s.stack.logicalID(s.stack.Pipeline.AuditTable): tableOperations(func(a fnAccess) tableAccess { return a.audit }),
			s.stack.logicalID(s.stack.Pipeline.IndexTable): tableOperations(func(a fnAccess) tableAccess { return a.index }),
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
					dims, ok := agentPublishes(t, decls, m.name)
					switch {
					case !ok:
						t.Errorf("alarm %s watches %s, which no filter and no agent declaration publishes", aid, m.name)
					case !slices.Equal(names, dims):
						t.Errorf("alarm %s on %s names dimensions %v; the agent publishes %v", aid, m.name, names, dims)
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

// TestUncleanStopAlarmed: with scp.staging (the run markers live on its
// file system), a task killed or crashed is an alarm, from the agent's
// counter the next start raises and from the log line it writes, which
// the agent may miss (the counter rises before the first scrape). The
// counter was not published, and nothing alarmed.
func TestUncleanStopAlarmed(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		if s.cfg.Scp.Staging == nil {
			t.Fatal("the example configs stage objects on EFS")
		}
		if dims, ok := agentPublishes(t, s.agentDeclarations(t), MetricAuditUncleanStops); !ok || !slices.Equal(dims, []string{"Environment"}) {
			t.Errorf("the agent publishes %s: %v with %v", MetricAuditUncleanStops, ok, dims)
		}
		alarmed := s.alarmedMetrics()
		for _, name := range []string{MetricAuditUncleanStops, MetricAuditUncleanStopLogLines} {
			if !alarmed[name] {
				t.Errorf("no alarm on %s", name)
			}
		}
	})
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
