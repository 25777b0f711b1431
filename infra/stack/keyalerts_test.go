package stack

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestKeyAlert: a KMS key of the stack disabled, scheduled for deletion or
// given another policy reaches the alarm topic as a readable message. The
// rule matches KMS's successful calls as CloudTrail delivers them to the
// default bus, by the key's ARN in the record's resources (what the caller
// passed in requestParameters.keyId may be a key id), for every key of the
// stack but the alarm topic's own (no message could reach the topic with
// it failing); the message names the environment, the call, the key, the
// caller and the time, and points at the runbook. Nothing told anyone
// before every write under the key failed.
func TestKeyAlert(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		var id string
		var r map[string]any
		for rid, rule := range s.resources("AWS::Events::Rule") {
			pat, _ := props(rule)["EventPattern"].(map[string]any)
			if slices.Contains(asStrings(pat["source"]), "aws.kms") {
				if r != nil {
					t.Fatalf("rules %s and %s both match KMS's events", id, rid)
				}
				id, r = rid, props(rule)
			}
		}
		if r == nil {
			t.Fatal("no rule matches KMS's events")
		}
		if id != s.stack.logicalID(s.stack.Observability.KeyAlert) {
			t.Errorf("the KMS rule is %s, want Observability.KeyAlert", id)
		}

		// Every key of the stack but the alarm topic's.
		topicKeyID := s.stack.logicalID(s.stack.Observability.TopicKey)
		var keys []any
		for kid := range s.resources("AWS::KMS::Key") {
			if kid != topicKeyID {
				keys = append(keys, map[string]any{"Fn::GetAtt": []any{kid, "Arn"}})
			}
		}
		if len(keys) != 3 {
			t.Errorf("%d keys besides the alarm topic's, want 3 (the stack's, the backup vault's, the bus dead-letter queue's)", len(keys))
		}
		pat := r["EventPattern"].(map[string]any)
		detail, _ := pat["detail"].(map[string]any)
		resources, _ := detail["resources"].(map[string]any)
		got := asAnySlice(resources["ARN"])
		key := func(v any) string { return js(v) }
		slices.SortFunc(keys, func(a, b any) int { return strings.Compare(key(a), key(b)) })
		slices.SortFunc(got, func(a, b any) int { return strings.Compare(key(a), key(b)) })
		want := plain(t, map[string]any{
			"source":      []string{"aws.kms"},
			"detail-type": []string{"AWS API Call via CloudTrail"},
			"detail": map[string]any{
				"eventSource": []string{"kms.amazonaws.com"},
				"eventName":   []string{"DisableKey", "ScheduleKeyDeletion", "PutKeyPolicy"},
				"resources":   map[string]any{"ARN": keys},
				"errorCode":   []any{map[string]any{"exists": false}},
			},
		})
		resources["ARN"] = got
		if d := cmp.Diff(want, plain(t, pat)); d != "" {
			t.Errorf("rule %s pattern (-want +got):\n%s", id, d)
		}
		if r["State"] != "ENABLED" || r["EventBusName"] != nil {
			t.Errorf("rule %s is %v on bus %s; CloudTrail delivers to the default bus", id, r["State"], js(r["EventBusName"]))
		}

		// The alarm topic, with no role, retried an hour at most.
		targets := asAnySlice(r["Targets"])
		if len(targets) != 1 {
			t.Fatalf("rule %s has %d targets, want the alarm topic", id, len(targets))
		}
		tg := targets[0].(map[string]any)
		if refID(tg["Arn"]) != s.stack.logicalID(s.stack.Observability.Topic) || tg["RoleArn"] != nil {
			t.Errorf("rule %s targets %s with role %s, want the alarm topic with none", id, js(tg["Arn"]), js(tg["RoleArn"]))
		}
		if rp, _ := tg["RetryPolicy"].(map[string]any); rp["MaximumEventAgeInSeconds"] != float64(alertMaxEventAge) {
			t.Errorf("rule %s retries for %v s, want %d", id, rp["MaximumEventAgeInSeconds"], alertMaxEventAge)
		}

		// The message: each field from the CloudTrail record, rendered
		// into one JSON string (SNS's message) with the environment and
		// the runbook's row.
		it, _ := tg["InputTransformer"].(map[string]any)
		paths, _ := it["InputPathsMap"].(map[string]any)
		tmpl, _ := it["InputTemplate"].(string)
		vars := map[string]string{}
		for name, p := range paths {
			vars[p.(string)] = name
		}
		sample := tmpl
		for _, p := range []string{"$.detail.eventName", "$.detail.resources[0].ARN", "$.detail.userIdentity.arn", "$.detail.sourceIPAddress", "$.detail.eventTime"} {
			name, ok := vars[p]
			if !ok || !strings.Contains(tmpl, "<"+name+">") {
				t.Errorf("rule %s's message does not give %s (paths %s, template %s)", id, p, js(paths), tmpl)
			}
			sample = strings.ReplaceAll(sample, "<"+name+">", "x")
		}
		var msg string
		if err := json.Unmarshal([]byte(sample), &msg); err != nil {
			t.Fatalf("rule %s's template %s is not a JSON string: %v", id, tmpl, err)
		}
		if rest := regexp.MustCompile(`<[^>]*>`).FindString(msg); rest != "" {
			t.Errorf("rule %s's message has %s, a variable no path fills", id, rest)
		}
		for _, w := range []string{"dicom-ingest " + s.cfg.Name + ":", "docs/operations/alarms.md, KeyDisabledOrPolicyChanged"} {
			if !strings.Contains(msg, w) {
				t.Errorf("rule %s's message %q does not say %q", id, msg, w)
			}
		}

		// A message it could not deliver sounds through CloudWatch
		// (the topic's and its key's policies: TestBackupFailuresAlert).
		found := false
		for _, a := range s.resources("AWS::CloudWatch::Alarm") {
			for _, m := range alarmMetrics(props(a)) {
				if m.namespace == "AWS/Events" && m.name == "FailedInvocations" && refID(m.dims["RuleName"]) == id {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("no alarm on rule %s's FailedInvocations", id)
		}
	})
}
