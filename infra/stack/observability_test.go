package stack

import (
	"slices"
	"strings"
	"testing"
)

// TestLogMetricAlarmsWatchWhatTheFiltersPublish: an alarm on a metric a
// metric filter publishes must name the filter's dimensions exactly (a
// metric with other dimensions is another metric, one nothing publishes),
// and a filter's dimension takes its value from the log line and leaves no
// default value (CloudWatch Logs refuses a default value with dimensions).
// The audit feed's unsendable-record alarm named no dimension while its
// filter published Environment: it could never fire.
func TestLogMetricAlarmsWatchWhatTheFiltersPublish(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		alarms := s.resources("AWS::CloudWatch::Alarm")
		for id, f := range s.resources("AWS::Logs::MetricFilter") {
			for _, tr := range asAnySlice(props(f)["MetricTransformations"]) {
				mt := tr.(map[string]any)
				var keys []string
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
				slices.Sort(keys)
				var watched int
				for aid, a := range alarms {
					p := props(a)
					if p["Namespace"] != mt["MetricNamespace"] || p["MetricName"] != mt["MetricName"] {
						continue
					}
					watched++
					var names []string
					for _, d := range asAnySlice(p["Dimensions"]) {
						names = append(names, d.(map[string]any)["Name"].(string))
					}
					slices.Sort(names)
					if !slices.Equal(names, keys) {
						t.Errorf("alarm %s on %s names dimensions %v; its filter %s publishes %v", aid, mt["MetricName"], names, id, keys)
					}
				}
				if watched == 0 {
					t.Errorf("filter %s: no alarm watches %s", id, mt["MetricName"])
				}
			}
		}
	})
}
