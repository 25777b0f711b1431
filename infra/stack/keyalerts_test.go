package stack

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
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
		// the runbook's row, as EventBridge renders it: a variable whose
		// path the record lacks is left empty. A call an AWS service made
		// as itself has no userIdentity.arn, and the message read "by
		// (from …)", naming nobody: it names the caller by what
		// CloudTrail gives for each.
		it, _ := tg["InputTransformer"].(map[string]any)
		paths, _ := it["InputPathsMap"].(map[string]any)
		tmpl, _ := it["InputTemplate"].(string)
		for _, c := range []struct {
			name     string
			identity map[string]any
			want     []string // in the message
		}{
			{"an IAM role", map[string]any{"type": "AssumedRole", "principalId": "AROAEXAMPLE:ops", "arn": "arn:aws:sts::111122223333:assumed-role/Ops/ops", "accountId": "111122223333"},
				[]string{"type=AssumedRole arn=arn:aws:sts::111122223333:assumed-role/Ops/ops invokedBy= from 192.0.2.7"}},
			{"an AWS service", map[string]any{"type": "AWSService", "invokedBy": "backup.amazonaws.com"},
				[]string{"type=AWSService arn= invokedBy=backup.amazonaws.com from 192.0.2.7"}},
			{"a role through a service", map[string]any{"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/Deploy/cfn", "invokedBy": "cloudformation.amazonaws.com"},
				[]string{"type=AssumedRole arn=arn:aws:sts::111122223333:assumed-role/Deploy/cfn invokedBy=cloudformation.amazonaws.com"}},
		} {
			event := map[string]any{"detail": map[string]any{
				"eventName": "DisableKey", "eventTime": "2026-01-02T03:04:05Z", "sourceIPAddress": "192.0.2.7",
				"resources":    []any{map[string]any{"ARN": "arn:aws:kms:eu-west-1:111122223333:key/k1", "type": "AWS::KMS::Key"}},
				"userIdentity": c.identity,
			}}
			sample := tmpl
			for name, p := range paths {
				sample = strings.ReplaceAll(sample, "<"+name+">", jsonPathValue(event, p.(string)))
			}
			var msg string
			if err := json.Unmarshal([]byte(sample), &msg); err != nil {
				t.Fatalf("rule %s's template %s is not a JSON string: %v", id, tmpl, err)
			}
			if rest := regexp.MustCompile(`<[^>]*>`).FindString(msg); rest != "" {
				t.Errorf("rule %s's message has %s, a variable no path fills", id, rest)
			}
			for _, w := range append([]string{"dicom-ingest " + s.cfg.Name + ":", "DisableKey on KMS key arn:aws:kms:eu-west-1:111122223333:key/k1 at 2026-01-02T03:04:05Z",
				"docs/operations/alarms.md, KeyDisabledOrPolicyChanged"}, c.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("rule %s's message for %s %q does not say %q", id, c.name, msg, w)
				}
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

// jsonPathValue is what EventBridge's input transformer puts for path
// ($.a.b[0].c) in a text template: the string at it, or nothing when the
// event has no such path.
func jsonPathValue(event map[string]any, path string) string {
	var v any = event
	for _, part := range strings.Split(strings.TrimPrefix(path, "$."), ".") {
		name, index, indexed := strings.Cut(strings.TrimSuffix(part, "]"), "[")
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		if v, ok = m[name]; !ok {
			return ""
		}
		if indexed {
			i, err := strconv.Atoi(index)
			a, ok := v.([]any)
			if err != nil || !ok || i >= len(a) {
				return ""
			}
			v = a[i]
		}
	}
	s, _ := v.(string)
	return s
}
