package stack

import (
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
)

// feeds is 1 when the environment has the audit feed.
func feeds(s *synthesized) int {
	if s.cfg.Audit.Syslog != nil {
		return 1
	}
	return 0
}

// TestAuditFeed: with audit.syslog configured (prod), a function on the
// audit table's NEW_IMAGE stream sends to the collector, in the VPC with
// egress only to the collector's address and port (and the Secrets Manager
// endpoint), reporting partial batch failures, with an on-failure queue and
// alarms on backlog and that queue. Without it (dev) there is none of it.
func TestAuditFeed(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		tables := s.resources("AWS::DynamoDB::Table")
		auditID := s.stack.logicalID(s.stack.Pipeline.AuditTable)
		stream, hasStream := props(tables[auditID])["StreamSpecification"]
		sl := s.cfg.Audit.Syslog
		if sl == nil {
			if hasStream || s.stack.Pipeline.AuditFeed != nil {
				t.Errorf("audit feed without audit.syslog: stream %v", stream)
			}
			for _, a := range s.resources("AWS::CloudWatch::Alarm") {
				if strings.Contains(js(a), "AuditFeed") {
					t.Errorf("audit feed alarm without audit.syslog: %s", js(a))
				}
			}
			return
		}
		if js(stream) != `{"StreamViewType":"NEW_IMAGE"}` {
			t.Errorf("audit table stream %s, want NEW_IMAGE", js(stream))
		}
		f := s.stack.Pipeline.AuditFeed
		fnID := s.stack.logicalID(f.Function)
		fn := props(s.res[fnID])
		// What the function reads (functions/auditfeed/main.go, and
		// lambdaio.Logger's ENVIRONMENT), and nothing else: not the
		// pipeline's bucket, tables and bus, which it never touches.
		env := fn["Environment"].(map[string]any)["Variables"].(map[string]any)
		wantEnv := map[string]any{"SYSLOG_HOST": sl.Host, "SYSLOG_PORT": "6514", "SYSLOG_CA_SECRET_ARN": sl.CaSecretArn,
			"SYSLOG_HOSTNAME": "dicom-ingest-" + s.cfg.Name, "ENVIRONMENT": s.cfg.Name}
		if sl.ClientCertificateSecretArn != "" {
			wantEnv["SYSLOG_CLIENT_CERT_SECRET_ARN"] = sl.ClientCertificateSecretArn
		}
		if d := cmp.Diff(wantEnv, env); d != "" {
			t.Errorf("audit feed environment (-want +got):\n%s", d)
		}

		// In the VPC, behind its own security group whose only ways out are
		// the collector and the Secrets Manager endpoint.
		vpc := fn["VpcConfig"].(map[string]any)
		sgs := vpc["SecurityGroupIds"].([]any)
		sgID := s.stack.logicalID(f.SecurityGroup)
		if len(sgs) != 1 || refID(sgs[0]) != sgID {
			t.Fatalf("function security groups %s, want only %s", js(sgs), sgID)
		}
		sg := props(s.res[sgID])
		if _, in := sg["SecurityGroupIngress"]; in {
			t.Errorf("audit feed security group admits traffic: %s", js(sg["SecurityGroupIngress"]))
		}
		var egress []string
		for _, e := range sg["SecurityGroupEgress"].([]any) {
			m := e.(map[string]any)
			dest, _ := m["CidrIp"].(string)
			if dest == "" {
				dest = "sg:" + refID(m["DestinationSecurityGroupId"])
			}
			egress = append(egress, js(m["IpProtocol"])+" "+dest+" "+js(m["FromPort"])+"-"+js(m["ToPort"]))
		}
		want := []string{
			`"tcp" ` + sl.Address + `/32 6514-6514`,
			`"tcp" sg:` + s.stack.logicalID(s.stack.Network.EndpointSecurityGroup) + ` 443-443`,
		}
		if d := cmp.Diff(want, egress); d != "" {
			t.Errorf("audit feed egress (-want +got):\n%s", d)
		}

		// Fed by the stream, new audit records only, with partial batch
		// failures and an on-failure queue.
		var esm map[string]any
		for _, m := range s.resources("AWS::Lambda::EventSourceMapping") {
			if refID(props(m)["FunctionName"]) == fnID {
				esm = props(m)
			}
		}
		if esm == nil {
			t.Fatal("no event source mapping for the audit feed")
		}
		if refID(esm["EventSourceArn"]) != auditID || esm["StartingPosition"] != "TRIM_HORIZON" || esm["ParallelizationFactor"] != float64(1) ||
			js(esm["FunctionResponseTypes"]) != `["ReportBatchItemFailures"]` || esm["MaximumRecordAgeInSeconds"] != float64(23*3600) {
			t.Errorf("event source mapping %s", js(esm))
		}
		if dest := refID(esm["DestinationConfig"].(map[string]any)["OnFailure"].(map[string]any)["Destination"]); dest != s.stack.logicalID(f.Dlq) {
			t.Errorf("on-failure destination %s, want the audit feed DLQ", dest)
		}
		filter := js(esm["FilterCriteria"])
		if !strings.Contains(filter, `\"eventName\":[\"INSERT\"]`) || !strings.Contains(filter, `\"sk\":{\"S\":[\"RECORD\"]}`) {
			t.Errorf("filter criteria %s, want INSERTs of sk RECORD", filter)
		}

		// It may read its secrets and nothing else of Secrets Manager.
		policies := js(s.resources("AWS::IAM::Policy"))
		if !strings.Contains(policies, sl.CaSecretArn) {
			t.Error("the function may not read the CA secret")
		}

		// Alarms: backlog (iterator age), DLQ, unsendable records, and
		// errors and throttles (TestEveryFunctionHasItsAlarms).
		alarms := map[string]map[string]any{}
		for id, a := range s.resources("AWS::CloudWatch::Alarm") {
			if strings.Contains(id, "AuditFeed") {
				alarms[id] = props(a)
			}
		}
		if len(alarms) != 6 {
			t.Errorf("%d audit feed alarms, want 6", len(alarms))
		}
		// Failed batches sound within minutes (the backlog alarm took some 8): a batch not delivered in each of
		// two minutes running, counted from the function's line (auditfeed.BatchNotDeliveredLog, the filter
		// below; TestAlarmsWatchWhatIsPublished holds the alarm to the filter's metric and dimension).
		var sawBacklog, sawDlq, sawNotDelivered bool
		for _, a := range alarms {
			switch {
			case a["MetricName"] == "IteratorAge":
				sawBacklog = a["Threshold"] == float64(300000) && a["Statistic"] == "Maximum"
			case a["MetricName"] == "ApproximateNumberOfMessagesVisible":
				sawDlq = a["Threshold"] == float64(0)
			case a["MetricName"] == "Errors":
				// Secrets are read at the first batch and no longer stop the function (lambdaio.KeptSecret): the
				// errors alarm names where unusable ones sound instead.
				if d, _ := a["AlarmDescription"].(string); strings.Contains(d, "secrets)") || !strings.Contains(d, "AuditFeedNotDelivered") {
					t.Errorf("errors alarm %q, want its causes (settings, a crash, a timeout) and unusable secrets sent to AuditFeedNotDelivered", d)
				}
			case a["MetricName"] == MetricAuditFeedNotDelivered:
				sawNotDelivered = a["Threshold"] == float64(0) && a["Statistic"] == "Sum" && a["Period"] == float64(60) &&
					a["EvaluationPeriods"] == float64(2) && a["ComparisonOperator"] == "GreaterThanThreshold"
				if !sawNotDelivered {
					t.Errorf("batches not delivered alarm %s", js(a))
				}
			}
			if len(a["AlarmActions"].([]any)) == 0 {
				t.Errorf("alarm %v notifies nobody", a["AlarmDescription"])
			}
		}
		if !sawBacklog || !sawDlq || !sawNotDelivered {
			t.Errorf("backlog alarm %v, DLQ alarm %v, batches not delivered alarm %v", sawBacklog, sawDlq, sawNotDelivered)
		}
		for _, k := range []string{"AuditFeedFunctionName", "AuditFeedDlqUrl"} {
			if _, ok := s.outputs[k]; !ok {
				t.Errorf("no output %s", k)
			}
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::Logs::MetricFilter"), map[string]any{
				"FilterPattern": `{ $.msg = "` + auditfeed.UnsendableLog + `" }`,
			})
			tpl.HasResourceProperties(jsii.String("AWS::Logs::MetricFilter"), map[string]any{
				"FilterPattern":         `{ $.msg = "` + auditfeed.BatchNotDeliveredLog + `" }`,
				"MetricTransformations": []any{map[string]any{"MetricName": MetricAuditFeedNotDelivered, "MetricNamespace": MetricsNamespace, "MetricValue": "1"}},
			})
		})
	})
}

// TestAuditFeedSecrets: the audit feed's role reads exactly its secrets
// and, when they are under a customer-managed key (secretKmsKeyArn), may
// decrypt with that key through Secrets Manager only; under
// aws/secretsmanager it gets no KMS statement for them at all.
func TestAuditFeedSecrets(t *testing.T) {
	const (
		keyArn    = "arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		clientArn = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:dicom-ingest/siem-client-Zz9Yy8"
	)
	for _, tc := range []struct {
		name      string
		mk        func() (*config.Config, error)
		secrets   []string // besides the CA's
		keyGrants []string
	}{
		{name: "prod", mk: example("prod")},
		{name: "cmk", mk: variant("prod", "feedcmk", func(c *config.Config) {
			c.Audit.Syslog.ClientCertificateSecretArn = clientArn
			c.Audit.Syslog.SecretKmsKeyArn = keyArn
		}), secrets: []string{clientArn},
			keyGrants: []string{`kms:Decrypt ` + keyArn + ` {"StringEquals":{"kms:ViaService":"secretsmanager.eu-west-1.amazonaws.com"}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := synthEnv(t, "feed-"+tc.name, tc.mk)
			role := refID(props(s.res[s.stack.logicalID(s.stack.Pipeline.AuditFeed.Function)])["Role"])
			var secrets, keyGrants []string
			for _, st := range s.roleStatements(role) {
				for _, a := range asStrings(st["Action"]) {
					switch {
					case a == "secretsmanager:GetSecretValue":
						secrets = append(secrets, asStrings(st["Resource"])...)
					case strings.HasPrefix(a, "kms:") && strings.Contains(js(st["Condition"]), "secretsmanager."):
						for _, r := range asStrings(st["Resource"]) {
							keyGrants = append(keyGrants, a+" "+r+" "+js(st["Condition"]))
						}
					}
				}
			}
			want := append([]string{s.cfg.Audit.Syslog.CaSecretArn}, tc.secrets...)
			slices.Sort(want)
			slices.Sort(secrets)
			if d := cmp.Diff(want, secrets); d != "" {
				t.Errorf("secrets read (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.keyGrants, keyGrants); d != "" {
				t.Errorf("key grants through Secrets Manager (-want +got):\n%s", d)
			}
		})
	}
}
