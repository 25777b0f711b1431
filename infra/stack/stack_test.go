package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/cxapi"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Synthesis through jsii takes tens of seconds, so each environment is
// synthesized once and shared by every test that asserts on it.

var (
	tmpRoot string
	synthMu sync.Mutex
	synths  = map[string]*synthesized{}
)

func TestMain(m *testing.M) {
	// The examples run on Node 20 too; silence jsii's end-of-life banner.
	os.Setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
	dir, err := os.MkdirTemp("", "infra-stack-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type synthesized struct {
	cfg      *config.Config
	app      awscdk.App
	stack    *IngestStack
	template assertions.Template
	// res is the template's Resources section as plain Go values.
	res      map[string]map[string]any
	outputs  map[string]any
	manifest cxapi.CloudAssembly
}

// fakeAssets creates what the app stages: a bootstrap per function and the
// two Dockerfiles, so tests need neither `make build` nor Docker.
func fakeAssets(dir string) (functions, scpCtx, agentCtx string, err error) {
	functions = filepath.Join(dir, "functions")
	scpCtx = filepath.Join(dir, "scp")
	agentCtx = filepath.Join(dir, "agent")
	files := map[string]string{
		filepath.Join(scpCtx, "go.mod"):                 "module example\n",
		filepath.Join(scpCtx, "scp-task", "Dockerfile"): "FROM scratch\n",
		filepath.Join(scpCtx, "unrelated", "big.bin"):   "not part of the image context\n",
		filepath.Join(agentCtx, "Dockerfile"):           "FROM scratch\n",
	}
	for _, name := range append(slices.Clone(FunctionNames), FnAuditFeed) {
		files[filepath.Join(functions, name, "bootstrap")] = "#!/bin/sh\n# test stand-in for " + name + "\n"
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", "", "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			return "", "", "", err
		}
	}
	return functions, scpCtx, agentCtx, nil
}

// synthEnv returns the synthesized app for a config, building it on first
// use. key names the variant (the env name, or a derived config's name).
func synthEnv(t *testing.T, key string, mk func() (*config.Config, error)) *synthesized {
	t.Helper()
	synthMu.Lock()
	defer synthMu.Unlock()
	if s, ok := synths[key]; ok {
		if s == nil {
			t.Fatalf("synthesis of %s failed earlier", key)
		}
		return s
	}
	synths[key] = nil
	cfg, err := mk()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmpRoot, key)
	functions, scpCtx, agentCtx, err := fakeAssets(dir)
	if err != nil {
		t.Fatal(err)
	}
	app := awscdk.NewApp(&awscdk.AppProps{Context: AppContext(), Outdir: jsii.String(filepath.Join(dir, "cdk.out"))})
	st, err := NewIngestStack(app, "DicomIngest-"+cfg.Name, &Props{
		Config: cfg, FunctionsDir: functions, ScpContextDir: scpCtx, ScpDockerfile: "scp-task/Dockerfile", AgentContextDir: agentCtx,
	})
	if err != nil {
		t.Fatal(err)
	}
	ApplyNag(app)
	s := &synthesized{cfg: cfg, app: app, stack: st}
	s.manifest = app.Synth(nil)
	// From the assembly already synthesized: Template_FromStack would
	// synthesize again.
	raw := s.manifest.GetStackArtifact(st.Stack.ArtifactId()).Template()
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var rawMap map[string]any
	if err := json.Unmarshal(b, &rawMap); err != nil {
		t.Fatal(err)
	}
	s.template = assertions.Template_FromJSON(&rawMap, nil)
	var tpl struct {
		Resources map[string]map[string]any
		Outputs   map[string]any
	}
	if err := json.Unmarshal(b, &tpl); err != nil {
		t.Fatal(err)
	}
	s.res, s.outputs = tpl.Resources, tpl.Outputs
	synths[key] = s
	return s
}

func example(env string) func() (*config.Config, error) {
	return func() (*config.Config, error) { return config.Load("../config", env) }
}

// variant is the example environment env named name and changed by change,
// validated.
func variant(env, name string, change func(c *config.Config)) func() (*config.Config, error) {
	return func() (*config.Config, error) {
		c, err := config.Load("../config", env)
		if err != nil {
			return nil, err
		}
		c.Name = name
		change(c)
		return c, c.Validate()
	}
}

// envs are the example environments every template test runs against.
var envs = []string{"dev", "prod"}

func forEachEnv(t *testing.T, f func(t *testing.T, s *synthesized)) {
	for _, env := range envs {
		t.Run(env, func(t *testing.T) { f(t, synthEnv(t, env, example(env))) })
	}
}

// check runs assertions on the template, turning the jsii panic of a failed
// assertion into a test error so one failure does not end the run.
func (s *synthesized) check(t *testing.T, f func(tpl assertions.Template)) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%v", r)
		}
	}()
	f(s.template)
}

// resources returns the resources of a type, by logical id.
func (s *synthesized) resources(typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range s.res {
		if r["Type"] == typ {
			out[id] = r
		}
	}
	return out
}

func props(r map[string]any) map[string]any {
	p, _ := r["Properties"].(map[string]any)
	return p
}

// js renders a value as compact JSON, for substring checks and messages.
func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// getAtt and ref extract the logical id a value points at.
func refID(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	if r, ok := m["Ref"].(string); ok {
		return r
	}
	if ga, ok := m["Fn::GetAtt"].([]any); ok && len(ga) > 0 {
		s, _ := ga[0].(string)
		return s
	}
	return ""
}

func TestListenerAndTargetGroup(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		c := s.cfg
		s.check(t, func(tpl assertions.Template) {
			tpl.ResourceCountIs(jsii.String("AWS::ElasticLoadBalancingV2::Listener"), jsii.Number(float64(len(dicomPorts(c)))))
		})
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::LoadBalancer"), map[string]any{
				"Scheme": "internal",
				"Type":   "network",
			})
		})
		listeners := s.resources("AWS::ElasticLoadBalancingV2::Listener")
		for _, l := range listeners {
			p := props(l)
			taskPort, ok := dicomPorts(c)[p["Port"].(float64)]
			if !ok || p["Protocol"] != "TCP" {
				t.Errorf("listener %v/%v, want TCP on one of %v", p["Protocol"], p["Port"], dicomPorts(c))
			}
			want := []any{map[string]any{"Key": "tcp.idle_timeout.seconds", "Value": fmt.Sprint(c.Dicom.IdleTimeoutSeconds)}}
			if d := cmp.Diff(want, p["ListenerAttributes"]); d != "" {
				t.Errorf("listener attributes (-want +got):\n%s", d)
			}
			actions := p["DefaultActions"].([]any)
			tgID := refID(actions[0].(map[string]any)["TargetGroupArn"])
			tg := props(s.res[tgID])
			if tg["Port"] != taskPort || tg["Protocol"] != "TCP" || tg["TargetType"] != "ip" {
				t.Errorf("target group %s: %v %v %v, want TCP %v ip", tgID, tg["Protocol"], tg["Port"], tg["TargetType"], taskPort)
			}
			if tg["HealthCheckProtocol"] != "HTTP" || tg["HealthCheckPort"] != "8081" || tg["HealthCheckPath"] != "/readyz" {
				t.Errorf("health check %v %v %v, want HTTP 8081 /readyz", tg["HealthCheckProtocol"], tg["HealthCheckPort"], tg["HealthCheckPath"])
			}
			attrs := map[string]string{}
			for _, a := range tg["TargetGroupAttributes"].([]any) {
				m := a.(map[string]any)
				attrs[m["Key"].(string)] = m["Value"].(string)
			}
			proxy := fmt.Sprint(c.ProxyProtocolEnabled())
			wantAttrs := map[string]string{
				"proxy_protocol_v2.enabled":            proxy,
				"preserve_client_ip.enabled":           fmt.Sprint(!c.ProxyProtocolEnabled()),
				"deregistration_delay.timeout_seconds": fmt.Sprint(c.Scp.DeregistrationDelay()),
			}
			for k, v := range wantAttrs {
				if attrs[k] != v {
					t.Errorf("target group attribute %s = %q, want %q", k, attrs[k], v)
				}
			}
			env := s.containerEnv(t, "scp")
			if env["SCP_PROXY_PROTOCOL"] != proxy {
				t.Errorf("SCP_PROXY_PROTOCOL = %v, target group proxy_protocol_v2 = %s: they must agree", env["SCP_PROXY_PROTOCOL"], proxy)
			}
		}
		// The NLB has one fixed address per zone, which the outputs list.
		lb := props(first(s.resources("AWS::ElasticLoadBalancingV2::LoadBalancer")))
		maps := lb["SubnetMappings"].([]any)
		if len(maps) != len(c.AvailabilityZones) {
			t.Errorf("%d subnet mappings, want one per zone (%d)", len(maps), len(c.AvailabilityZones))
		}
		var ips []string
		for _, m := range maps {
			ips = append(ips, m.(map[string]any)["PrivateIPv4Address"].(string))
		}
		if got := s.outputs["NlbAddresses"].(map[string]any)["Value"]; got != strings.Join(ips, ",") {
			t.Errorf("NlbAddresses output %v, want %v", got, ips)
		}
	})
}

func first(m map[string]map[string]any) map[string]any {
	for _, v := range m {
		return v
	}
	return nil
}

// containerEnv returns a container's environment from the task definition.
func (s *synthesized) containerEnv(t *testing.T, name string) map[string]any {
	t.Helper()
	for _, td := range s.resources("AWS::ECS::TaskDefinition") {
		for _, cd := range props(td)["ContainerDefinitions"].([]any) {
			m := cd.(map[string]any)
			if m["Name"] != name {
				continue
			}
			env := map[string]any{}
			for _, kv := range m["Environment"].([]any) {
				e := kv.(map[string]any)
				env[e["Name"].(string)] = e["Value"]
			}
			return env
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func TestVpnTunnels(t *testing.T) {
	allowedEnc := []string{"AES256", "AES256-GCM-16"}
	allowedInt := []string{"SHA2-256", "SHA2-384", "SHA2-512"}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		conns := s.resources("AWS::EC2::VPNConnection")
		if len(conns) != len(s.cfg.Sites) {
			t.Fatalf("%d VPN connections, want one per site (%d)", len(conns), len(s.cfg.Sites))
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.ResourceCountIs(jsii.String("AWS::EC2::CustomerGateway"), jsii.Number(float64(len(s.cfg.Sites))))
		})
		s.check(t, func(tpl assertions.Template) {
			tpl.ResourceCountIs(jsii.String("AWS::EC2::VPNGatewayRoutePropagation"), jsii.Number(1))
		})
		for id, conn := range conns {
			p := props(conn)
			if refID(p["VpnGatewayId"]) == "" {
				t.Errorf("%s: not on the VPC's virtual private gateway: %v", id, p["VpnGatewayId"])
			}
			tunnels := p["VpnTunnelOptionsSpecifications"].([]any)
			if len(tunnels) != 2 {
				t.Errorf("%s: %d tunnels, want 2", id, len(tunnels))
			}
			for i, tun := range tunnels {
				o := tun.(map[string]any)
				vals := func(key string) []any {
					var out []any
					for _, v := range o[key].([]any) {
						out = append(out, v.(map[string]any)["Value"])
					}
					return out
				}
				if d := cmp.Diff([]any{"ikev2"}, vals("IKEVersions")); d != "" {
					t.Errorf("%s tunnel %d IKEVersions (-want +got):\n%s", id, i, d)
				}
				for _, phase := range []string{"Phase1", "Phase2"} {
					enc := vals(phase + "EncryptionAlgorithms")
					if !slices.Contains(enc, any("AES256")) {
						t.Errorf("%s tunnel %d %s encryption %v lacks AES256", id, i, phase, enc)
					}
					for _, e := range enc {
						if !slices.Contains(allowedEnc, e.(string)) {
							t.Errorf("%s tunnel %d %s allows %v", id, i, phase, e)
						}
					}
					integ := vals(phase + "IntegrityAlgorithms")
					if !slices.Contains(integ, any("SHA2-256")) {
						t.Errorf("%s tunnel %d %s integrity %v lacks SHA2-256", id, i, phase, integ)
					}
					for _, e := range integ {
						if !slices.Contains(allowedInt, e.(string)) {
							t.Errorf("%s tunnel %d %s allows %v", id, i, phase, e)
						}
					}
					for _, g := range vals(phase + "DHGroupNumbers") {
						if g.(float64) < 14 || g.(float64) == 22 {
							t.Errorf("%s tunnel %d %s allows DH group %v", id, i, phase, g)
						}
					}
				}
				psk := js(o["PreSharedKey"])
				if !strings.Contains(psk, "{{resolve:secretsmanager:") {
					t.Errorf("%s tunnel %d PreSharedKey is not a Secrets Manager dynamic reference: %s", id, i, psk)
				}
			}
		}
		for _, site := range s.cfg.Sites {
			var conn map[string]any
			for _, r := range conns {
				if strings.Contains(js(props(r)["Tags"]), `"`+s.cfg.Name+"-"+site.Name+`"`) {
					conn = props(r)
				}
			}
			if conn == nil {
				t.Fatalf("no connection tagged for site %s", site.Name)
			}
			if conn["StaticRoutesOnly"] != (site.Routing == config.RoutingStatic) {
				t.Errorf("site %s: StaticRoutesOnly %v with routing %s", site.Name, conn["StaticRoutesOnly"], site.Routing)
			}
			if _, ok := s.outputs["VpnConnection"+strings.ReplaceAll(site.Name, "-", "")]; !ok {
				t.Errorf("no VpnConnection output for site %s", site.Name)
			}
		}
		// Static routes exist for exactly the static sites' CIDRs.
		var want, got []string
		for _, site := range s.cfg.Sites {
			if site.Routing == config.RoutingStatic {
				want = append(want, site.Cidrs...)
			}
		}
		for _, r := range s.resources("AWS::EC2::VPNConnectionRoute") {
			got = append(got, props(r)["DestinationCidrBlock"].(string))
		}
		sort.Strings(want)
		sort.Strings(got)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("static routes (-want +got):\n%s", d)
		}
		// One tunnel-state alarm per connection.
		n := 0
		for _, a := range s.resources("AWS::CloudWatch::Alarm") {
			if props(a)["MetricName"] == "TunnelState" {
				n++
			}
		}
		if n != len(s.cfg.Sites) {
			t.Errorf("%d tunnel alarms, want %d", n, len(s.cfg.Sites))
		}
	})
}

func TestBucket(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		bucketID := s.stack.logicalID(s.stack.Storage.Bucket)
		b := s.res[bucketID]
		if b["DeletionPolicy"] != "Retain" || b["UpdateReplacePolicy"] != "Retain" {
			t.Errorf("bucket deletion policy %v/%v, want Retain", b["DeletionPolicy"], b["UpdateReplacePolicy"])
		}
		p := props(b)
		enc := js(p["BucketEncryption"])
		keyID := s.stack.logicalID(s.stack.Storage.Key)
		if !strings.Contains(enc, `"SSEAlgorithm":"aws:kms"`) || !strings.Contains(enc, keyID) {
			t.Errorf("bucket encryption %s, want aws:kms with key %s", enc, keyID)
		}
		if js(p["VersioningConfiguration"]) != `{"Status":"Enabled"}` {
			t.Errorf("versioning %s", js(p["VersioningConfiguration"]))
		}
		wantBPA := `{"BlockPublicAcls":true,"BlockPublicPolicy":true,"IgnorePublicAcls":true,"RestrictPublicBuckets":true}`
		if js(p["PublicAccessBlockConfiguration"]) != wantBPA {
			t.Errorf("public access block %s", js(p["PublicAccessBlockConfiguration"]))
		}
		if refID(p["LoggingConfiguration"].(map[string]any)["DestinationBucketName"]) != s.stack.logicalID(s.stack.Storage.LogBucket) {
			t.Errorf("access logs not delivered to the log bucket: %s", js(p["LoggingConfiguration"]))
		}
		if (p["ObjectLockEnabled"] == true) != (s.cfg.Storage.ObjectLock != nil) {
			t.Errorf("ObjectLockEnabled %v with config %+v", p["ObjectLockEnabled"], s.cfg.Storage.ObjectLock)
		}
		if ol := s.cfg.Storage.ObjectLock; ol != nil {
			want := fmt.Sprintf(`{"DefaultRetention":{"Days":%d,"Mode":"%s"}}`, ol.Days, ol.Mode)
			if got := js(p["ObjectLockConfiguration"].(map[string]any)["Rule"]); got != want {
				t.Errorf("object lock rule %s, want %s", got, want)
			}
		}
		if !strings.Contains(js(p["LifecycleConfiguration"]), `"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}`) {
			t.Errorf("no rule aborting incomplete multipart uploads: %s", js(p["LifecycleConfiguration"]))
		}
		// The bucket policy's statements.
		var statements []map[string]any
		for _, bp := range s.resources("AWS::S3::BucketPolicy") {
			if refID(props(bp)["Bucket"]) != bucketID {
				continue
			}
			for _, st := range props(bp)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				statements = append(statements, st.(map[string]any))
			}
		}
		// TLS-only: a Deny on aws:SecureTransport=false in the bucket policy.
		found := false
		for _, m := range statements {
			if m["Effect"] == "Deny" && js(m["Condition"]) == `{"Bool":{"aws:SecureTransport":"false"}}` && m["Action"] == "s3:*" {
				found = true
			}
		}
		if !found {
			t.Error("bucket policy has no TLS-only deny")
		}
		// Only this key: other keys and other encryption kinds are denied.
		var denies []string
		for _, m := range statements {
			if m["Effect"] == "Deny" && m["Action"] == "s3:PutObject" {
				denies = append(denies, js(m["Condition"]))
			}
		}
		wantDenies := []string{
			`{"StringNotEqualsIfExists":{"s3:x-amz-server-side-encryption":"aws:kms"}}`,
			`{"StringNotEqualsIfExists":{"s3:x-amz-server-side-encryption-aws-kms-key-id":{"Fn::GetAtt":["` + keyID + `","Arn"]}}}`,
		}
		sort.Strings(denies)
		if d := cmp.Diff(wantDenies, denies); d != "" {
			t.Errorf("encryption denies (-want +got):\n%s", d)
		}
		// The key of everything here but the backups (which have their
		// own, TestBackupVaultUnderItsOwnKey): kept with the stack's
		// deletion, and a scheduled deletion can still be cancelled for 30
		// days.
		k := s.res[keyID]
		if k["DeletionPolicy"] != "Retain" || k["UpdateReplacePolicy"] != "Retain" {
			t.Errorf("key deletion policy %v/%v, want Retain", k["DeletionPolicy"], k["UpdateReplacePolicy"])
		}
		if kp := props(k); kp["EnableKeyRotation"] != true || kp["PendingWindowInDays"] != float64(30) {
			t.Errorf("key rotation %v, deletion window %v, want rotation and 30 days", kp["EnableKeyRotation"], kp["PendingWindowInDays"])
		}
		s.check(t, func(tpl assertions.Template) {
			// The stack's, the backup vault's, the bus dead-letter queue's,
			// the alarm topic's.
			tpl.ResourceCountIs(jsii.String("AWS::KMS::Key"), jsii.Number(4))
		})
	})
}

func TestQueuesHaveDeadLetterQueues(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		queues := s.resources("AWS::SQS::Queue")
		dlqs := map[string]bool{} // queues something sends its failures to
		for _, q := range queues {
			if rp, ok := props(q)["RedrivePolicy"].(map[string]any); ok {
				dlqs[refID(rp["deadLetterTargetArn"])] = true
				if rp["maxReceiveCount"] != float64(s.cfg.Pipeline.MaxReceiveCount) {
					t.Errorf("maxReceiveCount %v", rp["maxReceiveCount"])
				}
			}
		}
		for _, bus := range s.resources("AWS::Events::EventBus") {
			dlqs[refID(props(bus)["DeadLetterConfig"].(map[string]any)["Arn"])] = true
		}
		for _, esm := range s.resources("AWS::Lambda::EventSourceMapping") {
			if dc, ok := props(esm)["DestinationConfig"].(map[string]any); ok {
				dlqs[refID(dc["OnFailure"].(map[string]any)["Destination"])] = true
			}
		}
		for _, rule := range s.resources("AWS::Events::Rule") {
			for _, tg := range props(rule)["Targets"].([]any) {
				if dl, ok := tg.(map[string]any)["DeadLetterConfig"].(map[string]any); ok {
					dlqs[refID(dl["Arn"])] = true
				}
			}
		}
		for id, q := range queues {
			p := props(q)
			// Notifications name object keys, events UIDs: the stack's key
			// (the bus's dead-letter queue: its own, TestBusDlqUnderItsOwnKey).
			want := s.stack.logicalID(s.stack.Storage.Key)
			if id == s.stack.logicalID(s.stack.Pipeline.BusDlq) {
				want = s.stack.logicalID(s.stack.Pipeline.BusDlqKey)
			}
			if refID(p["KmsMasterKeyId"]) != want {
				t.Errorf("queue %s is not encrypted with %s (KmsMasterKeyId=%v)", id, want, js(p["KmsMasterKeyId"]))
			}
			if _, hasDLQ := p["RedrivePolicy"]; !hasDLQ && !dlqs[id] {
				t.Errorf("queue %s has no dead-letter queue and is none", id)
			}
		}
		// Every work queue feeds a function with partial batch responses.
		for _, esm := range s.resources("AWS::Lambda::EventSourceMapping") {
			if js(props(esm)["FunctionResponseTypes"]) != `["ReportBatchItemFailures"]` {
				t.Errorf("event source mapping without partial batch responses: %s", js(props(esm)))
			}
			if _, stream := props(esm)["StartingPosition"]; stream {
				continue // the audit feed's stream: one poller per shard (TestAuditFeed)
			}
			// More pollers than reserved concurrency would throttle batches
			// into the DLQ.
			if got := js(props(esm)["ScalingConfig"]); got != fmt.Sprintf(`{"MaximumConcurrency":%d}`, s.cfg.Pipeline.ReservedConcurrency) {
				t.Errorf("event source scaling %s, want the reserved concurrency %d", got, s.cfg.Pipeline.ReservedConcurrency)
			}
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.ResourceCountIs(jsii.String("AWS::Lambda::EventSourceMapping"), jsii.Number(float64(3+feeds(s))))
		})
		// S3 notifications: incoming/, audit/ and commitment/requests/ each to their queue.
		notif := js(props(first(s.resources("Custom::S3BucketNotifications")))["NotificationConfiguration"])
		for _, prefix := range []string{PrefixIncoming, PrefixAudit, PrefixCommitmentRequests} {
			if !strings.Contains(notif, `{"Name":"prefix","Value":"`+prefix+`"}`) {
				t.Errorf("no bucket notification for %s: %s", prefix, notif)
			}
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::Events::Archive"), map[string]any{
				"EventPattern":  map[string]any{"source": []any{pipeline.EventSource}},
				"RetentionDays": s.cfg.Pipeline.ArchiveRetention(),
			})
		})
	})
}

// TestCommitmentTimeout: the commitment function's timeout is config.CommitmentTimeoutSeconds, which the docs and
// the pipeline's cut of a delivery (pipeline.CommitmentWriteMargin before the invocation's end) count on, and leaves a
// delivery time within it; its queue's visibility is six times it.
func TestCommitmentTimeout(t *testing.T) {
	if left := time.Duration(config.CommitmentTimeoutSeconds)*time.Second - pipeline.CommitmentWriteMargin; left < time.Minute/2 {
		t.Errorf("a delivery has %v of the commitment function's %d s, less than half a minute", left, config.CommitmentTimeoutSeconds)
	}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		fn := s.stack.logicalID(s.stack.Pipeline.Functions[FnCommitment])
		if got := props(s.resources("AWS::Lambda::Function")[fn])["Timeout"]; got != float64(config.CommitmentTimeoutSeconds) {
			t.Errorf("commitment function's timeout %v, want %d", got, config.CommitmentTimeoutSeconds)
		}
		q := s.stack.logicalID(s.stack.Pipeline.Queues[FnCommitment].Queue)
		if got := props(s.resources("AWS::SQS::Queue")[q])["VisibilityTimeout"]; got != float64(6*config.CommitmentTimeoutSeconds) {
			t.Errorf("commitment queue's visibility %v, want %d", got, 6*config.CommitmentTimeoutSeconds)
		}
	})
}

// TestScheduledFunctions: a schedule invokes its function asynchronously.
// The rule target's dead-letter queue receives only the events EventBridge
// could not hand to Lambda (the function gone, its permission refused);
// what the function does with an invocation it accepted (an error, a
// timeout, a throttled invocation that waited past its age) is up to the
// function's asynchronous invocation config. So the alarm on that queue
// sounds when the function fails, the function's on-failure destination
// is the same queue, with no retries (the next minute's run is the retry).
func TestScheduledFunctions(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		invokeConfigs := map[string]map[string]any{} // by function
		for _, c := range s.resources("AWS::Lambda::EventInvokeConfig") {
			invokeConfigs[refID(props(c)["FunctionName"])] = props(c)
		}
		schedules := s.schedules()
		for _, name := range []string{FnNotify, FnCommitment} {
			if fn := s.stack.logicalID(s.stack.Pipeline.Functions[name]); len(schedules[fn]) == 0 {
				t.Errorf("%s is not scheduled", name)
			}
		}
		for fn, targets := range schedules {
			for _, tg := range targets {
				dl, _ := tg["DeadLetterConfig"].(map[string]any)
				dlq := refID(dl["Arn"])
				if dlq == "" {
					t.Errorf("%s: its schedule's target has no dead-letter queue", fn)
				}
				ic, ok := invokeConfigs[fn]
				if !ok {
					t.Errorf("%s has no asynchronous invocation config: its failed runs reach no queue, and the alarm on %s never sounds for them", fn, dlq)
					continue
				}
				dest, _ := ic["DestinationConfig"].(map[string]any)
				onFailure, _ := dest["OnFailure"].(map[string]any)
				if got := refID(onFailure["Destination"]); got != dlq {
					t.Errorf("%s: failed runs go to %q, want the schedule's dead-letter queue %s", fn, got, dlq)
				}
				if ic["MaximumRetryAttempts"] != 0.0 {
					t.Errorf("%s retries a failed run %v times, want 0: the next minute's run does the same work", fn, ic["MaximumRetryAttempts"])
				}
			}
		}
	})
}

// schedules returns the targets of the schedule rules that are functions,
// by the function's logical id.
func (s *synthesized) schedules() map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, rule := range s.resources("AWS::Events::Rule") {
		if _, ok := props(rule)["ScheduleExpression"]; !ok {
			continue
		}
		for _, tg := range props(rule)["Targets"].([]any) {
			tg := tg.(map[string]any)
			if fn := refID(tg["Arn"]); s.res[fn]["Type"] == "AWS::Lambda::Function" {
				out[fn] = append(out[fn], tg)
			}
		}
	}
	return out
}

// TestPollersFitTheReservation: a function's queue pollers
// (MaximumConcurrency) and its schedule's run, which holds a slot while it
// lasts (commitment's, up to 50 s of moving transactions on), fit in its
// reserved concurrency together. Were they to exceed it, the pollers'
// batches would be throttled, and a throttled batch counts as a receive on
// its way to the dead-letter queue.
func TestPollersFitTheReservation(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		pollers := map[string]float64{} // by function
		for _, esm := range s.resources("AWS::Lambda::EventSourceMapping") {
			if sc, ok := props(esm)["ScalingConfig"].(map[string]any); ok {
				pollers[refID(props(esm)["FunctionName"])] += sc["MaximumConcurrency"].(float64)
			}
		}
		schedules := s.schedules()
		for fn, p := range pollers {
			n := float64(len(schedules[fn]))
			if r := props(s.res[fn])["ReservedConcurrentExecutions"]; r != p+n {
				t.Errorf("%s: reserved concurrency %v, want its pollers' %v and %v for its schedule", fn, r, p, n)
			}
		}
	})
}

// TestEventBus: the bus says what a subscriber finds on it, every
// detail-type and the source, as the pipeline names them; and it is as
// docs/pipeline.md's Subscribing tells a subscriber: named by the outputs
// EventBusName and EventBusArn, with no rule of the stack's on it and no
// resource policy (a rule is the subscriber's, in the deployment's
// account).
func TestEventBus(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		buses := s.resources("AWS::Events::EventBus")
		if len(buses) != 1 {
			t.Fatalf("%d event buses, want 1", len(buses))
		}
		desc, _ := props(first(buses))["Description"].(string)
		for _, want := range append([]string{pipeline.EventSource}, pipeline.DetailTypes...) {
			if !strings.Contains(desc, want) {
				t.Errorf("bus description %q does not name %q", desc, want)
			}
		}
		bus := s.stack.logicalID(s.stack.Pipeline.Bus)
		for _, out := range []string{"EventBusName", "EventBusArn"} {
			o, _ := s.outputs[out].(map[string]any)
			if refID(o["Value"]) != bus {
				t.Errorf("output %s is %s, want the bus %s", out, js(o["Value"]), bus)
			}
		}
		if n := len(s.resources("AWS::Events::EventBusPolicy")); n != 0 {
			t.Errorf("%d resource policies on event buses; Subscribing says the bus has none", n)
		}
		for id, r := range s.resources("AWS::Events::Rule") {
			if on := props(r)["EventBusName"]; refID(on) == bus {
				t.Errorf("rule %s is on the bus; Subscribing says the stack creates none", id)
			}
		}
		// The bus is under the stack's key, which encrypts the events
		// and each rule's pattern and targets on it ("Encrypting
		// EventBridge event buses with AWS KMS keys"): EventBridge needs
		// kms:DescribeKey, kms:GenerateDataKey and kms:Decrypt in the key
		// policy ("Authorizing EventBridge to use a customer managed key"),
		// here for this bus alone. Without it no subscriber's rule could
		// match an event.
		busName := js(props(first(buses))["Name"])
		var forBus []string
		for _, x := range props(s.res[s.stack.logicalID(s.stack.Storage.Key)])["KeyPolicy"].(map[string]any)["Statement"].([]any) {
			st := x.(map[string]any)
			if st["Effect"] != "Allow" || js(st["Principal"]) != `{"Service":"events.amazonaws.com"}` {
				continue
			}
			eq, _ := st["Condition"].(map[string]any)["StringEquals"].(map[string]any)
			arn := js(eq["aws:SourceArn"])
			if arn == "null" || !strings.Contains(arn, "event-bus/") || !strings.Contains(arn, strings.Trim(busName, `"`)) ||
				js(eq["kms:EncryptionContext:aws:events:event-bus:arn"]) != arn ||
				!slices.Contains([]string{`{"Ref":"AWS::AccountId"}`, `"` + s.cfg.Account + `"`}, js(eq["aws:SourceAccount"])) {
				continue
			}
			forBus = append(forBus, asStrings(st["Action"])...)
		}
		if d := cmp.Diff([]string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"}, slices.Sorted(slices.Values(forBus))); d != "" {
			t.Errorf("the stack's key lets EventBridge use it for the bus %s (-want +got):\n%s", busName, d)
		}
	})
}

// TestBusDlqUnderItsOwnKey: the bus's dead-letter queue, which catches the
// events the bus could not encrypt or decrypt with the stack's key, is
// under a key of its own (rotated, retained), which EventBridge may use to
// deliver to this account's queues for this account's buses only; the
// stack's key no longer lets EventBridge deliver for buses at all.
func TestBusDlqUnderItsOwnKey(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		p := s.stack.Pipeline
		dlq := props(s.res[s.stack.logicalID(p.BusDlq)])
		keyID := refID(dlq["KmsMasterKeyId"])
		if keyID == "" || keyID == s.stack.logicalID(s.stack.Storage.Key) {
			t.Fatalf("bus dead-letter queue under %s, want a key of its own", js(dlq["KmsMasterKeyId"]))
		}
		key := s.res[keyID]
		if props(key)["EnableKeyRotation"] != true || key["DeletionPolicy"] != "Retain" {
			t.Errorf("its key: rotation %v, deletion policy %v; want rotated and retained", props(key)["EnableKeyRotation"], key["DeletionPolicy"])
		}
		sources := func(k map[string]any, service string) []string {
			var out []string
			for _, st := range props(k)["KeyPolicy"].(map[string]any)["Statement"].([]any) {
				m := st.(map[string]any)
				if js(m["Principal"]) == `{"Service":"`+service+`"}` {
					out = append(out, js(m["Condition"]))
				}
			}
			return out
		}
		got := sources(key, "events.amazonaws.com")
		if len(got) != 1 || !strings.Contains(got[0], `"aws:SourceAccount"`) || !strings.Contains(got[0], `:event-bus/*"`) ||
			!strings.Contains(got[0], `"kms:EncryptionContext:aws:sqs:arn"`) {
			t.Errorf("EventBridge's statements in the dead-letter queue's key policy: %v", got)
		}
		for _, c := range sources(s.res[s.stack.logicalID(s.stack.Storage.Key)], "events.amazonaws.com") {
			if strings.Contains(c, `"kms:EncryptionContext:aws:sqs:arn"`) && strings.Contains(c, "event-bus/") {
				t.Errorf("the stack's key still lets EventBridge deliver to queues for buses: %s", c)
			}
		}
	})
}

func TestFunctions(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		n := 0
		reservedAll := 0.0 // by any function of the stack, CDK's own too
		for id, f := range s.resources("AWS::Lambda::Function") {
			p := props(f)
			if r, ok := p["ReservedConcurrentExecutions"].(float64); ok {
				reservedAll += r
			}
			if p["Handler"] != "bootstrap" {
				continue // CDK's own custom-resource handlers
			}
			n++
			if p["Runtime"] != "provided.al2023" || js(p["Architectures"]) != `["arm64"]` {
				t.Errorf("%s: runtime %v architectures %v, want provided.al2023 arm64", id, p["Runtime"], p["Architectures"])
			}
			// commitment's schedule holds one slot beside its queue's
			// pollers (TestScheduledFunctions).
			reserved := s.cfg.Pipeline.ReservedConcurrency
			if id == s.stack.logicalID(s.stack.Pipeline.Functions[FnCommitment]) {
				reserved = s.cfg.Pipeline.CommitmentReservedConcurrency()
			}
			if p["ReservedConcurrentExecutions"] != float64(reserved) {
				t.Errorf("%s: reserved concurrency %v, want %d", id, p["ReservedConcurrentExecutions"], reserved)
			}
			if _, ok := p["VpcConfig"]; !ok {
				t.Errorf("%s: not in the VPC", id)
			}
			env := p["Environment"].(map[string]any)["Variables"].(map[string]any)
			// The source is pipeline.EventSource, in the code: a variable
			// no function reads would only look like a setting.
			if v, ok := env["EVENT_SOURCE"]; ok {
				t.Errorf("%s: EVENT_SOURCE %v in the environment, which no function reads", id, v)
			}
			if f := s.stack.Pipeline.AuditFeed; f != nil && id == s.stack.logicalID(f.Function) {
				continue // not a pipeline function: its environment is TestAuditFeed's
			}
			for _, k := range []string{"BUCKET", "AUDIT_TABLE", "INDEX_TABLE", "EVENT_BUS_NAME"} {
				if _, ok := env[k]; !ok {
					t.Errorf("%s: no %s in the environment", id, k)
				}
			}
			// Events name objects by ARN: the bucket's, as CloudFormation
			// gives it, in the partition deployed to.
			bucketID := s.stack.logicalID(s.stack.Storage.Bucket)
			if got, want := js(env["BUCKET_ARN"]), `{"Fn::GetAtt":["`+bucketID+`","Arn"]}`; got != want || refID(env["BUCKET"]) != bucketID {
				t.Errorf("%s: BUCKET %s, BUCKET_ARN %s, want the ARN of %s", id, js(env["BUCKET"]), got, bucketID)
			}
			if env["EVENT_PATIENT_DATA"] != s.cfg.Pipeline.EventPatientData {
				t.Errorf("%s: EVENT_PATIENT_DATA %v", id, env["EVENT_PATIENT_DATA"])
			}
		}
		if n != len(FunctionNames)+feeds(s) {
			t.Errorf("%d pipeline functions, want %d", n, len(FunctionNames)+feeds(s))
		}
		// What config.Validate holds against the account's concurrency
		// (pipeline.accountConcurrency) is what the stack reserves.
		if total, fns := s.cfg.ReservedConcurrencyTotal(); reservedAll != float64(total) || fns != n {
			t.Errorf("the stack reserves %v over %d functions, the configuration counts %d over %d", reservedAll, n, total, fns)
		}
	})
}

// TestEveryFunctionIsDeployed checks the stack deploys exactly the
// programs under functions/ (make build-functions builds each of them):
// FunctionNames always, the audit feed where audit.syslog is configured. No
// function exists that the stack does not run.
func TestEveryFunctionIsDeployed(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("..", "..", "functions"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "internal" {
			dirs = append(dirs, e.Name())
		}
	}
	want := slices.Sorted(slices.Values(append(slices.Clone(FunctionNames), FnAuditFeed)))
	if d := cmp.Diff(want, dirs); d != "" {
		t.Errorf("functions/ (-deployed +built):\n%s", d)
	}
}

func TestTables(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		tables := s.resources("AWS::DynamoDB::Table")
		if len(tables) != 2 {
			t.Fatalf("%d tables, want audit and index", len(tables))
		}
		for id, tb := range tables {
			p := props(tb)
			if js(p["PointInTimeRecoverySpecification"]) != `{"PointInTimeRecoveryEnabled":true}` {
				t.Errorf("%s: PITR %s", id, js(p["PointInTimeRecoverySpecification"]))
			}
			if p["DeletionProtectionEnabled"] != true || tb["DeletionPolicy"] != "Retain" {
				t.Errorf("%s: deletion protection %v, policy %v", id, p["DeletionProtectionEnabled"], tb["DeletionPolicy"])
			}
			sse := props(tb)["SSESpecification"].(map[string]any)
			if sse["SSEEnabled"] != true || sse["SSEType"] != "KMS" || refID(sse["KMSMasterKeyId"]) != s.stack.logicalID(s.stack.Storage.Key) {
				t.Errorf("%s: encryption %s, want the customer-managed key", id, js(sse))
			}
		}
		sel := js(s.resources("AWS::Backup::BackupSelection")) // the tables' (and the staging file system's)
		for id := range tables {
			if !strings.Contains(sel, id) {
				t.Errorf("table %s is not in the backup selection", id)
			}
		}
		// Nothing expires the audit trail's rows (docs/pipeline.md,
		// retention): no TTL.
		if ttl := props(tables[s.stack.logicalID(s.stack.Pipeline.AuditTable)])["TimeToLiveSpecification"]; ttl != nil {
			t.Errorf("the audit table expires rows: %s", js(ttl))
		}
		// The audit trail is append-only: no role may update or delete it,
		// by its ARN or by a wildcard that matches it, in a policy of its
		// own or one inline in a role.
		auditID := s.stack.logicalID(s.stack.Pipeline.AuditTable)
		statements := map[string][]any{} // by policy or role
		for pid, pol := range s.resources("AWS::IAM::Policy") {
			statements[pid] = props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any)
		}
		for rid, role := range s.resources("AWS::IAM::Role") {
			for _, pol := range asAnySlice(props(role)["Policies"]) {
				statements[rid] = append(statements[rid], pol.(map[string]any)["PolicyDocument"].(map[string]any)["Statement"].([]any)...)
			}
		}
		for pid, sts := range statements {
			for _, st := range sts {
				m := st.(map[string]any)
				if r := js(m["Resource"]); !strings.Contains(r, auditID) && !strings.Contains(r, "*") {
					continue
				}
				for _, a := range asStrings(m["Action"]) {
					if strings.HasPrefix(a, "dynamodb:") && (strings.Contains(a, "Update") || strings.Contains(a, "Delete") || strings.Contains(a, "*") || strings.Contains(a, "BatchWrite")) {
						t.Errorf("policy %s allows %s on the audit table", pid, a)
					}
				}
			}
		}
	})
}

// TestAuditTrailKeptSixYears: the audit table has backups kept for
// pipeline.auditBackupRetentionDays (six years by default, HIPAA
// §164.316(b)(2)), in a plan that selects it alone. The trail could be
// restored only within PITR's 35 days and the daily backups' retention (7
// days in dev, 35 in prod), so an item overwritten or deleted by hand was
// gone for good after five weeks.
func TestAuditTrailKeptSixYears(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		want := s.cfg.Pipeline.AuditBackupRetentionDays
		if want < config.DefaultAuditBackupRetentionDays {
			t.Errorf("%s keeps audit backups %d days, less than six years", s.cfg.Name, want)
		}
		auditID := s.stack.logicalID(s.stack.Pipeline.AuditTable)
		plans := s.resources("AWS::Backup::BackupPlan")
		var found []string
		for selID, sel := range s.resources("AWS::Backup::BackupSelection") {
			p := props(sel)
			planID := refID(p["BackupPlanId"])
			res := js(p["BackupSelection"].(map[string]any)["Resources"])
			if !strings.Contains(res, auditID) || strings.Contains(res, s.stack.logicalID(s.stack.Pipeline.IndexTable)) {
				continue
			}
			for _, r := range props(plans[planID])["BackupPlan"].(map[string]any)["BackupPlanRule"].([]any) {
				lc, _ := r.(map[string]any)["Lifecycle"].(map[string]any)
				if days, _ := lc["DeleteAfterDays"].(float64); int(days) == want {
					found = append(found, selID)
				}
			}
		}
		if len(found) != 1 {
			t.Errorf("backups of the audit table alone kept %d days: %v, want one selection", want, found)
		}
	})
}

func asStrings(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// rules gathers every security group rule of a direction ("Ingress" or
// "Egress"), inline or standalone, by security group logical id.
func (s *synthesized) rules(direction string) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for id, sg := range s.resources("AWS::EC2::SecurityGroup") {
		if rules, ok := props(sg)["SecurityGroup"+direction].([]any); ok {
			for _, r := range rules {
				out[id] = append(out[id], r.(map[string]any))
			}
		}
	}
	for _, r := range s.resources("AWS::EC2::SecurityGroup" + direction) {
		p := props(r)
		out[refID(p["GroupId"])] = append(out[refID(p["GroupId"])], p)
	}
	return out
}

func TestSecurityGroupsAdmitSitesOnly(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) { checkIngress(t, s) })
}

func checkIngress(t *testing.T, s *synthesized) {
	c := s.cfg
	siteCidrs := c.SourceCidrs()
	lbSG := s.stack.logicalID(s.stack.Ingest.LbSecurityGroup)
	taskSG := s.stack.logicalID(s.stack.Ingest.TaskSecurityGroup)
	endpointSG := s.stack.logicalID(s.stack.Network.EndpointSecurityGroup)
	rules := s.rules("Ingress")
	ports := dicomPorts(c)
	var taskPorts []float64
	for _, tp := range ports {
		taskPorts = append(taskPorts, tp)
	}
	var lbCidrs []string
	for sg, rs := range rules {
		for _, r := range rs {
			cidr, _ := r["CidrIp"].(string)
			if cidr == "" {
				if r["CidrIpv6"] != nil || r["SourcePrefixListId"] != nil {
					t.Errorf("%s: unexpected ingress %s", sg, js(r))
				}
				continue
			}
			from, to := r["FromPort"], r["ToPort"]
			switch {
			case sg == lbSG:
				lbCidrs = append(lbCidrs, fmt.Sprintf("%s:%v", cidr, from))
				if _, ok := ports[from.(float64)]; !ok || from != to {
					t.Errorf("NLB ingress from %s on %v-%v, want only the DICOM ports %v", cidr, from, to, ports)
				}
			case sg == taskSG && !c.ProxyProtocolEnabled() && (slices.Contains(siteCidrs, cidr) || (cidr == c.VpcCidr && c.Vpn.ClientVpn != nil)):
				if !slices.Contains(taskPorts, from.(float64)) || from != to {
					t.Errorf("task ingress from %s on %v-%v, want one of %v", cidr, from, to, taskPorts)
				}
			case sg == endpointSG && cidr == c.VpcCidr && from == float64(443) && to == float64(443):
			default:
				t.Errorf("security group %s admits %s on %v-%v", sg, cidr, from, to)
			}
		}
	}
	sort.Strings(lbCidrs)
	var want []string
	for port := range ports {
		for _, cidr := range siteCidrs {
			want = append(want, fmt.Sprintf("%s:%v", cidr, port))
		}
	}
	sort.Strings(want)
	if d := cmp.Diff(want, lbCidrs); d != "" {
		t.Errorf("NLB ingress CIDRs (-site CIDRs +got):\n%s", d)
	}
	// In PROXY mode the tasks admit the DICOM port only from the NLB.
	for _, r := range rules[taskSG] {
		if slices.Contains(taskPorts, r["FromPort"].(float64)) && r["CidrIp"] == nil && refID(r["SourceSecurityGroupId"]) != lbSG {
			t.Errorf("task DICOM ingress from %s, want the NLB's group", js(r["SourceSecurityGroupId"]))
		}
	}
	if c.Vpn.ClientVpn != nil {
		cvpn := s.stack.logicalID(s.stack.Vpn.ClientVpnSecurityGroup)
		ok := false
		for _, r := range rules[lbSG] {
			if _, dicom := ports[r["FromPort"].(float64)]; refID(r["SourceSecurityGroupId"]) == cvpn && dicom {
				ok = true
			}
		}
		if !ok {
			t.Error("NLB does not admit the Client VPN endpoint on the DICOM port")
		}
	}
}

// TestTaskEgressOnlyToEndpoints checks the SCP task reaches nothing but
// the VPC endpoints: HTTPS to the interface endpoints' group and to S3's
// prefix list (looked up at deploy time), no CIDR, so nothing through the
// VPN and nothing to the internet; with scp.staging also NFS to the
// staging file system's mount targets.
func TestTaskEgressOnlyToEndpoints(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		want := []string{"S3 prefix list 443", "interface endpoints 443"}
		if s.stack.Ingest.Staging != nil {
			want = append(want, "staging file system 2049")
		}
		s.checkEgress(t, "task", s.stack.Ingest.TaskSecurityGroup, want)
	})
}

// TestFunctionsEgressOnlyToEndpoints: the pipeline functions (validate,
// audit, notify) reach the AWS endpoints and nothing else: no internet, no
// site through the VPN.
func TestFunctionsEgressOnlyToEndpoints(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		s.checkEgress(t, "pipeline functions", s.stack.Pipeline.FunctionsSG,
			[]string{"DynamoDB prefix list 443", "S3 prefix list 443", "interface endpoints 443"})
	})
}

// checkEgress compares a security group's egress rules with want, one
// line a rule: "interface endpoints 443", "S3 prefix list 443", "DynamoDB
// prefix list 443", "staging file system 2049", or "CIDR PORT (DESCRIPTION)";
// each rule must open one TCP port.
func (s *synthesized) checkEgress(t *testing.T, what string, sg constructs.IConstruct, want []string) {
	t.Helper()
	endpointSG := s.stack.logicalID(s.stack.Network.EndpointSecurityGroup)
	stagingSG := ""
	if st := s.stack.Ingest.Staging; st != nil {
		stagingSG = s.stack.logicalID(st.SecurityGroup)
	}
	var got []string
	for _, r := range s.rules("Egress")[s.stack.logicalID(sg)] {
		if r["IpProtocol"] != "tcp" || r["FromPort"] != r["ToPort"] {
			t.Errorf("%s egress %s: want one TCP port", what, js(r))
		}
		port := fmt.Sprint(r["FromPort"])
		lookup := s.res[refID(r["DestinationPrefixListId"])]
		create := fmt.Sprint(props(lookup)["Create"])
		switch dest := refID(r["DestinationSecurityGroupId"]); {
		case dest != "" && dest == endpointSG:
			got = append(got, "interface endpoints "+port)
		case dest != "" && dest == stagingSG:
			got = append(got, "staging file system "+port)
		case lookup["Type"] == "Custom::AWS" && strings.Contains(create, `"Values":["com.amazonaws.`+s.cfg.Region+`.s3"]`):
			got = append(got, "S3 prefix list "+port)
		case lookup["Type"] == "Custom::AWS" && strings.Contains(create, `"Values":["com.amazonaws.`+s.cfg.Region+`.dynamodb"]`):
			got = append(got, "DynamoDB prefix list "+port)
		case r["CidrIp"] != nil:
			got = append(got, fmt.Sprintf("%s %s (%s)", r["CidrIp"], port, r["Description"]))
		default:
			t.Errorf("%s egress to %s", what, js(r))
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s egress (-want +got):\n%s", what, d)
	}
}

// dicomPorts maps the NLB's DICOM ports to the tasks' ports behind them:
// the plain port and, with dicom.tls, the TLS port.
func dicomPorts(c *config.Config) map[float64]float64 {
	out := map[float64]float64{}
	if c.PlainListenerEnabled() {
		out[float64(c.Dicom.Port)] = ScpPort
	}
	if c.Dicom.TLS != nil {
		out[float64(c.Dicom.TLS.Port)] = ScpTLSPort
	}
	return out
}

func TestTaskRoleLimitedToPrefixes(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		td := props(first(s.resources("AWS::ECS::TaskDefinition")))
		roleID := refID(td["TaskRoleArn"])
		if roleID == "" {
			t.Fatal("task definition has no task role")
		}
		bucketID := s.stack.logicalID(s.stack.Storage.Bucket)
		var s3Resources []string
		var s3Actions []string
		for pid, pol := range s.resources("AWS::IAM::Policy") {
			attached := false
			for _, r := range props(pol)["Roles"].([]any) {
				if refID(r) == roleID {
					attached = true
				}
			}
			if !attached {
				continue
			}
			for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				m := st.(map[string]any)
				if m["Effect"] != "Allow" {
					continue
				}
				for _, a := range asStrings(m["Action"]) {
					switch {
					case strings.HasPrefix(a, "s3:"):
						s3Actions = append(s3Actions, a)
					case strings.HasPrefix(a, "kms:"):
						if !strings.Contains(js(m["Condition"]), `"kms:ViaService":"s3.`+s.cfg.Region+`.amazonaws.com"`) {
							t.Errorf("policy %s: %s without a kms:ViaService S3 condition", pid, a)
						}
						if a != "kms:GenerateDataKey" && a != "kms:Decrypt" {
							t.Errorf("policy %s: task may %s", pid, a)
						}
					case a == "ecs:UpdateTaskProtection":
						// scale-in protection of its own task: checked in TestTaskScaleInProtection
					case a == "elasticfilesystem:ClientMount" || a == "elasticfilesystem:ClientWrite":
						// the staging file system through its access point: checked in TestStaging
					case strings.HasPrefix(a, "logs:"):
						// the metrics sidecar writes its own log group
						if !strings.Contains(js(m["Resource"]), "ScpMetrics") {
							t.Errorf("policy %s: %s on %s", pid, a, js(m["Resource"]))
						}
					default:
						t.Errorf("policy %s: task may %s", pid, a)
					}
				}
				if strings.Contains(js(m["Action"]), "s3:") {
					var res []any
					if r, ok := m["Resource"].([]any); ok {
						res = r
					} else {
						res = []any{m["Resource"]}
					}
					for _, r := range res {
						s3Resources = append(s3Resources, js(r))
					}
				}
			}
		}
		sort.Strings(s3Actions)
		if d := cmp.Diff([]string{"s3:AbortMultipartUpload", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:PutObject"}, s3Actions); d != "" {
			t.Errorf("task S3 actions (-want +got):\n%s", d)
		}
		// Object actions on the two prefixes only (put, then read back);
		// bucket-level listing on the bucket itself.
		audit := `{"Fn::Join":["",[{"Fn::GetAtt":["` + bucketID + `","Arn"]},"/audit/*"]]}`
		incoming := `{"Fn::Join":["",[{"Fn::GetAtt":["` + bucketID + `","Arn"]},"/incoming/*"]]}`
		requests := `{"Fn::Join":["",[{"Fn::GetAtt":["` + bucketID + `","Arn"]},"/commitment/requests/*"]]}`
		wantRes := []string{`{"Fn::GetAtt":["` + bucketID + `","Arn"]}`, audit, audit, requests, requests, incoming, incoming}
		sort.Strings(s3Resources)
		if d := cmp.Diff(wantRes, s3Resources); d != "" {
			t.Errorf("task S3 resources (-want +got):\n%s", d)
		}
	})
}

// TestTaskScaleInProtection: the task role may set scale-in protection
// (scp-task does so through the ECS agent while it holds associations), on
// the tasks of its own cluster only, and nothing else of ECS.
func TestTaskScaleInProtection(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		roleID := refID(props(first(s.resources("AWS::ECS::TaskDefinition")))["TaskRoleArn"])
		clusterID := s.stack.logicalID(s.stack.Ingest.Cluster)
		var found []string
		for _, pol := range s.resources("AWS::IAM::Policy") {
			attached := false
			for _, r := range props(pol)["Roles"].([]any) {
				attached = attached || refID(r) == roleID
			}
			for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				m := st.(map[string]any)
				for _, a := range asStrings(m["Action"]) {
					if !strings.HasPrefix(a, "ecs:") || m["Effect"] != "Allow" {
						continue
					}
					if !attached {
						continue
					}
					found = append(found, a)
					res := js(m["Resource"])
					want := `":ecs:` + s.cfg.Region + `:` + s.cfg.Account + `:task/",{"Ref":"` + clusterID + `"},"/*"]]}`
					if !strings.HasSuffix(res, want) {
						t.Errorf("%s on %s, want the tasks of cluster %s", a, res, clusterID)
					}
				}
			}
		}
		if d := cmp.Diff([]string{"ecs:UpdateTaskProtection"}, found); d != "" {
			t.Errorf("task role ECS actions (-want +got):\n%s", d)
		}
	})
}

func TestFargateService(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		c := s.cfg
		td := props(first(s.resources("AWS::ECS::TaskDefinition")))
		if js(td["RuntimePlatform"]) != `{"CpuArchitecture":"ARM64","OperatingSystemFamily":"LINUX"}` {
			t.Errorf("runtime platform %s", js(td["RuntimePlatform"]))
		}
		svc := props(first(s.resources("AWS::ECS::Service")))
		if svc["DesiredCount"].(float64) < 2 || svc["LaunchType"] != "FARGATE" {
			t.Errorf("service desired %v launch %v", svc["DesiredCount"], svc["LaunchType"])
		}
		dc := js(svc["DeploymentConfiguration"])
		if !strings.Contains(dc, `"DeploymentCircuitBreaker":{"Enable":true,"Rollback":true}`) {
			t.Errorf("no circuit breaker with rollback: %s", dc)
		}
		env := s.containerEnv(t, "scp")
		want := map[string]string{
			"SCP_LISTEN":           ":11112",
			"SCP_HEALTH_LISTEN":    ":8081",
			"SCP_AE_TITLE":         c.Dicom.AETitle,
			"SCP_CALLING_AES":      c.CallingAEs(),
			"SCP_MAX_ASSOCIATIONS": fmt.Sprint(c.Scp.MaxAssociations),
			// The drain ends the margin before the stop timeout's SIGKILL.
			"SCP_DRAIN_TIMEOUT":  fmt.Sprintf("%ds", c.Scp.StopTimeoutSeconds-config.DrainMarginSeconds),
			"SCP_S3_PUT_TIMEOUT": fmt.Sprintf("%ds", c.Scp.S3PutTimeoutSeconds),
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s = %v, want %q", k, env[k], v)
			}
		}
		// The onboarding kit states scp-task's defaults of these to the sites
		// (onboarding.SCPLimits): a deployment setting one must tell the kit.
		for _, k := range []string{"SCP_MAX_PDU_LENGTH", "SCP_IDLE_TIMEOUT", "SCP_PROGRESS_WINDOW", "SCP_MIN_PROGRESS_BYTES"} {
			if v, ok := env[k]; ok {
				t.Errorf("%s = %v: the onboarding kit states scp-task's default", k, v)
			}
		}
		if !strings.Contains(js(env["SCP_STORE"]), `"s3://"`) || !strings.Contains(js(env["SCP_S3_KMS_KEY"]), s.stack.logicalID(s.stack.Storage.Key)) {
			t.Errorf("SCP_STORE %s SCP_S3_KMS_KEY %s", js(env["SCP_STORE"]), js(env["SCP_S3_KMS_KEY"]))
		}
		for _, cd := range td["ContainerDefinitions"].([]any) {
			m := cd.(map[string]any)
			if m["Name"] == "scp" && m["StopTimeout"] != float64(c.Scp.StopTimeoutSeconds) {
				t.Errorf("stop timeout %v", m["StopTimeout"])
			}
		}
		// Scaling on CPU and on the SCP's active associations.
		var kinds []string
		for _, p := range s.resources("AWS::ApplicationAutoScaling::ScalingPolicy") {
			cfg := props(p)["TargetTrackingScalingPolicyConfiguration"].(map[string]any)
			if pm, ok := cfg["PredefinedMetricSpecification"].(map[string]any); ok {
				kinds = append(kinds, pm["PredefinedMetricType"].(string))
			}
			if cm, ok := cfg["CustomizedMetricSpecification"].(map[string]any); ok {
				kinds = append(kinds, cm["Namespace"].(string)+"/"+cm["MetricName"].(string))
			}
		}
		sort.Strings(kinds)
		if d := cmp.Diff([]string{MetricsNamespace + "/" + MetricActiveAssociations, "ECSServiceAverageCPUUtilization"}, kinds); d != "" {
			t.Errorf("scaling policies (-want +got):\n%s", d)
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalableTarget"), map[string]any{
				"MinCapacity": c.Scp.MinTasks, "MaxCapacity": c.Scp.MaxTasks,
			})
		})
	})
}

func TestNetwork(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, typ := range []string{"AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"} {
			s.check(t, func(tpl assertions.Template) { tpl.ResourceCountIs(jsii.String(typ), jsii.Number(0)) })
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.ResourceCountIs(jsii.String("AWS::EC2::Subnet"), jsii.Number(float64(len(s.cfg.AvailabilityZones))))
		})
		s.check(t, func(tpl assertions.Template) {
			tpl.ResourceCountIs(jsii.String("Custom::VpcRestrictDefaultSG"), jsii.Number(1))
		})
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::EC2::FlowLog"), map[string]any{"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"})
		})
		var services []string
		re := regexp.MustCompile(`com\.amazonaws\.(?:` + regexp.QuoteMeta(s.cfg.Region) + `|",\{"Ref":"AWS::Region"\},")\.([a-z0-9.]*[a-z0-9])`)
		for _, ep := range s.resources("AWS::EC2::VPCEndpoint") {
			name := js(props(ep)["ServiceName"])
			m := re.FindStringSubmatch(name)
			if m == nil {
				t.Errorf("unexpected endpoint service %s", name)
				continue
			}
			services = append(services, m[1])
		}
		sort.Strings(services)
		want := []string{"dynamodb", "ecr.api", "ecr.dkr", "events", "kms", "logs", "s3", "secretsmanager", "sqs", "sts"}
		if d := cmp.Diff(want, services); d != "" {
			t.Errorf("endpoints (-want +got):\n%s", d)
		}
	})
}

func TestOutputs(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, k := range []string{"NlbDnsName", "NlbAddresses", "DicomPort", "CalledAETitle", "VpcCidr", "BucketName", "AuditTableName", "IndexTableName", "EventBusName", "AlarmTopicArn", "LogNameKeyArn", "BackupVaultName", "BackupKeyArn", "BusDlqUrl", "BusDlqKeyArn"} {
			if _, ok := s.outputs[k]; !ok {
				t.Errorf("no output %s", k)
			}
		}
		if (s.outputs["DicomTlsPort"] != nil) != (s.cfg.Dicom.TLS != nil) {
			t.Errorf("DicomTlsPort output %v with dicom.tls %v", s.outputs["DicomTlsPort"], s.cfg.Dicom.TLS)
		}
		if (s.outputs["ClientVpnEndpoint"] != nil) != (s.cfg.Vpn.ClientVpn != nil) {
			t.Errorf("ClientVpnEndpoint output %v with client VPN config %v", s.outputs["ClientVpnEndpoint"], s.cfg.Vpn.ClientVpn)
		}
		// What the runbook's commands name, and what each must point at:
		// the service, its target groups and log group, each queue a
		// dead-letter alarm has the operator redrive, purge or send to.
		want := map[string]string{
			"ScpClusterName":           "AWS::ECS::Cluster",
			"ScpServiceName":           "AWS::ECS::Service",
			"ScpTargetGroupArn":        "AWS::ElasticLoadBalancingV2::TargetGroup",
			"ScpLogGroupName":          "AWS::Logs::LogGroup",
			"NotifyDlqUrl":             "AWS::SQS::Queue",
			"CommitmentScheduleDlqUrl": "AWS::SQS::Queue",
		}
		if len(s.resources("AWS::ElasticLoadBalancingV2::TargetGroup")) > 1 {
			want["ScpTlsTargetGroupArn"] = "AWS::ElasticLoadBalancingV2::TargetGroup"
		}
		for name, q := range s.stack.Pipeline.Queues {
			fn := strings.ToUpper(name[:1]) + name[1:]
			want[fn+"QueueUrl"] = "AWS::SQS::Queue"
			want[fn+"DlqUrl"] = "AWS::SQS::Queue"
			// Each names its own queue, not another function's.
			for suffix, queue := range map[string]awscdk.CfnResource{"QueueUrl": q.Queue.Node().DefaultChild().(awscdk.CfnResource), "DlqUrl": q.Dlq.Node().DefaultChild().(awscdk.CfnResource)} {
				if o, ok := s.outputs[fn+suffix].(map[string]any); ok {
					if got, want := refID(o["Value"]), *s.stack.Stack.GetLogicalId(queue); got != want {
						t.Errorf("output %s names %s, want %s", fn+suffix, got, want)
					}
				}
			}
		}
		for k, typ := range want {
			o, ok := s.outputs[k].(map[string]any)
			if !ok {
				t.Errorf("no output %s", k)
				continue
			}
			if r := s.res[refID(o["Value"])]; r == nil || r["Type"] != typ {
				t.Errorf("output %s is %s, want a %s's", k, js(o["Value"]), typ)
			}
		}
	})
}

// TestDocumentedOutputs: every stack output the operations docs name (a
// command's <Placeholder> ending in Name, Arn or Url, "output `X`") is
// one the stack has, and deploy.md's list of the outputs names every one
// the stack has (a site's by VpnConnection<site> and VpnPsk<site>).
func TestDocumentedOutputs(t *testing.T) {
	dir := filepath.Join(testenv.ModuleRoot(t), "docs")
	files, err := filepath.Glob(filepath.Join(dir, "operations", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(dir, "configuration.md"))
	// Placeholders that are no output: a field of another command's answer.
	notOutputs := map[string]bool{"SourceRecoveryPointArn": true}
	named := map[string][]string{} // output -> files naming it
	placeholder := regexp.MustCompile("<([A-Z][A-Za-z0-9]*(?:Name|Arn|Url))>")
	mention := regexp.MustCompile("outputs? `([A-Z][A-Za-z0-9]*)`")
	var deployList string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range []*regexp.Regexp{placeholder, mention} {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				if !notOutputs[m[1]] {
					named[m[1]] = append(named[m[1]], filepath.Base(f))
				}
			}
		}
		if filepath.Base(f) == "deploy.md" {
			_, after, _ := strings.Cut(string(b), "\nOutputs: ")
			deployList, _, _ = strings.Cut(after, "\n\n")
		}
	}
	if deployList == "" {
		t.Fatal("deploy.md has no paragraph starting \"Outputs: \"")
	}
	// An output some environments have (audit.syslog's, dicom.tls's) may
	// be named: the docs say when it exists.
	outputs := map[string]bool{}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for name := range s.outputs {
			outputs[name] = true
			doc := name
			for _, site := range s.cfg.Sites {
				if n, ok := strings.CutSuffix(name, strings.ReplaceAll(site.Name, "-", "")); ok && (n == "VpnConnection" || n == "VpnPsk") {
					doc = n + "<site>"
				}
			}
			if !strings.Contains(deployList, "`"+doc+"`") {
				t.Errorf("output %s is not in deploy.md's list of the outputs", doc)
			}
		}
	})
	for name, where := range named {
		if !outputs[name] {
			t.Errorf("%v name output %s, which the stack does not have", slices.Compact(where), name)
		}
	}
}

// TestDocumentedTaskEnvironment: deploy.md's list of the scp-task
// container's environment ("scp-task container environment: …") names
// every variable and secret the stack gives the container, so that an
// operator reading a task definition finds each one explained; and names
// none the stack does not set, nor a value (SCP_LISTEN=:11112) other than
// the one it sets.
func TestDocumentedTaskEnvironment(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "operations", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\nscp-task container environment: ")
	list, _, _ := strings.Cut(after, "\n\n")
	if !ok {
		t.Fatal("deploy.md has no paragraph starting \"scp-task container environment: \"")
	}
	named := func(name string) bool {
		return strings.Contains(list, "`"+name+"`") || strings.Contains(list, "`"+name+"=")
	}
	set := map[string]map[string]bool{} // the values each variable has, over the environments; "" for a secret
	check := func(t *testing.T, s *synthesized) {
		for name, v := range s.stack.Ingest.Environment {
			if !named(name) {
				t.Errorf("the scp-task container's variable %s is not in deploy.md's list of its environment", name)
			}
			if set[name] == nil {
				set[name] = map[string]bool{}
			}
			set[name][*v] = true
		}
		for name := range s.stack.Ingest.Secrets {
			if !named(name) {
				t.Errorf("the scp-task container's secret %s is not in deploy.md's list of its environment", name)
			}
			set[name] = map[string]bool{"": true}
		}
	}
	forEachEnv(t, check)
	if testing.Short() {
		return // the rest needs tlsOnly's synthesis, for what only it sets (a client CRL, the plain listener off)
	}
	t.Run("tlsonly", func(t *testing.T) { check(t, synthEnv(t, "tlsonly", tlsOnly)) })
	// And every name it lists is one the stack sets, to the value it gives
	// (where it gives one rather than a <placeholder>).
	for _, m := range regexp.MustCompile("`([A-Z][A-Z0-9]*_[A-Z0-9_]+|ENVIRONMENT)(?:=([^`]*))?`").FindAllStringSubmatch(list, -1) {
		name, value := m[1], m[2]
		switch {
		case set[name] == nil:
			t.Errorf("deploy.md lists %s in the scp-task container's environment, which the stack does not set", name)
		case value != "" && !strings.Contains(value, "<") && !set[name][value]:
			t.Errorf("deploy.md gives %s=%s; the stack sets it to %v", name, value, slices.Sorted(maps.Keys(set[name])))
		}
	}
}

// TestNag asserts that no AwsSolutions or HIPAA Security finding is left
// unsuppressed and that every rule could be evaluated.
func TestNag(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, f := range nagFindings(s) {
			t.Error(f)
		}
	})
}

// TestSynthOffline checks that synthesis asked for nothing it would have to
// look up in an AWS account (cdk synth would then need credentials).
func TestSynthOffline(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		// The cloud assembly's JSON, read directly: the jsii binding of
		// CloudAssembly.Manifest cannot deserialize every artifact type.
		outdir := *s.manifest.Directory()
		var manifest struct {
			Missing []struct{ Key string } `json:"missing"`
		}
		readJSON(t, filepath.Join(outdir, "manifest.json"), &manifest)
		for _, miss := range manifest.Missing {
			t.Errorf("synth needs context look-up %s", miss.Key)
		}
		// The image context is staged with only what the build reads.
		var assets struct {
			DockerImages map[string]struct {
				Source struct {
					Directory  string `json:"directory"`
					DockerFile string `json:"dockerFile"`
				} `json:"source"`
			} `json:"dockerImages"`
		}
		readJSON(t, filepath.Join(outdir, *s.stack.Stack.ArtifactId()+".assets.json"), &assets)
		found := false
		for _, img := range assets.DockerImages {
			if img.Source.DockerFile != "scp-task/Dockerfile" {
				continue
			}
			found = true
			dir := filepath.Join(outdir, img.Source.Directory)
			if _, err := os.Stat(filepath.Join(dir, "scp-task", "Dockerfile")); err != nil {
				t.Errorf("staged image context lacks the Dockerfile: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "unrelated")); err == nil {
				t.Errorf("staged image context holds files the build does not need")
			}
		}
		if !found {
			t.Error("no scp-task image asset")
		}
	})
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestClientIPPreservation synthesizes the dev config with PROXY protocol
// off: the target group must preserve client IPs and the tasks admit the
// site CIDRs directly.
func TestClientIPPreservation(t *testing.T) {
	if testing.Short() {
		t.Skip("one more synthesis; skipped with -short")
	}
	s := synthEnv(t, "noproxy", variant("dev", "noproxy", func(c *config.Config) {
		off := false
		c.Dicom.ProxyProtocol = &off
		c.Sites[0].Routing, c.Sites[0].BgpAsn = config.RoutingBGP, 65020
	}))
	s.check(t, func(tpl assertions.Template) {
		tpl.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::TargetGroup"), map[string]any{
			"TargetGroupAttributes": assertions.Match_ArrayWith(&[]any{
				map[string]any{"Key": "proxy_protocol_v2.enabled", "Value": "false"},
				map[string]any{"Key": "preserve_client_ip.enabled", "Value": "true"},
			}),
		})
	})
	if env := s.containerEnv(t, "scp"); env["SCP_PROXY_PROTOCOL"] != "false" {
		t.Errorf("SCP_PROXY_PROTOCOL = %v, want false", env["SCP_PROXY_PROTOCOL"])
	}
	checkIngress(t, s)
	taskSG := s.stack.logicalID(s.stack.Ingest.TaskSecurityGroup)
	var cidrs []string
	for _, r := range s.rules("Ingress")[taskSG] {
		if c, ok := r["CidrIp"].(string); ok {
			cidrs = append(cidrs, c)
		}
	}
	if d := cmp.Diff(s.cfg.SourceCidrs(), cidrs); d != "" {
		t.Errorf("task ingress CIDRs (-site CIDRs +got):\n%s", d)
	}
	s.check(t, func(tpl assertions.Template) {
		tpl.ResourceCountIs(jsii.String("AWS::EC2::VPNConnectionRoute"), jsii.Number(0))
	})
	for _, f := range nagFindings(s) {
		t.Error(f)
	}
}

// nagFindings lists every error annotation and every cdk-nag warning
// (including rules that could not be evaluated) on the stack.
func nagFindings(s *synthesized) []string {
	ann := assertions.Annotations_FromStack(s.stack.Stack)
	var out []string
	for _, e := range *ann.FindError(jsii.String("*"), assertions.Match_AnyValue()) {
		//lint:ignore SA1019 the Go binding offers no other type for synthesis messages
		out = append(out, fmt.Sprintf("error annotation on %s: %v", *e.Id, e.Entry.Data))
	}
	for _, w := range *ann.FindWarning(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("(AwsSolutions|HIPAA|CdkNag).*"))) {
		//lint:ignore SA1019 the Go binding offers no other type for synthesis messages
		out = append(out, fmt.Sprintf("nag warning on %s: %v", *w.Id, w.Entry.Data))
	}
	return out
}

func TestInvalidConfigIsRefused(t *testing.T) {
	c, err := config.Load("../config", "dev")
	if err != nil {
		t.Fatal(err)
	}
	c.Sites[0].CallingAETitle = "THIS_AE_TITLE_IS_TOO_LONG"
	app := awscdk.NewApp(&awscdk.AppProps{Context: AppContext(), Outdir: jsii.String(t.TempDir())})
	_, err = NewIngestStack(app, "Bad", &Props{Config: c})
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "AE titles have at most 16") {
		t.Fatalf("NewIngestStack = %v, want config.ErrInvalid about the AE title", err)
	}
	if _, err := NewIngestStack(app, "Nil", &Props{}); err == nil {
		t.Fatal("NewIngestStack without config succeeded")
	}
	good, err := config.Load("../config", "dev")
	if err != nil {
		t.Fatal(err)
	}
	functions, scpCtx, agentCtx, err := fakeAssets(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(functions, FnAudit, "bootstrap")); err != nil {
		t.Fatal(err)
	}
	_, err = NewIngestStack(app, "NoBuild", &Props{Config: good, FunctionsDir: functions, ScpContextDir: scpCtx, ScpDockerfile: "scp-task/Dockerfile", AgentContextDir: agentCtx})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(functions, FnAudit, "bootstrap")+": the audit function (run make build-functions) is missing") {
		t.Fatalf("NewIngestStack without the audit bootstrap = %v", err)
	}
	if strings.Contains(err.Error(), "validate") {
		t.Errorf("error names bootstraps that exist: %v", err)
	}
}

func TestNlbAddress(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"10.40.0.0/21", "10.40.7.249", ""},
		{"10.50.128.0/18", "10.50.191.249", ""},
		{"10.0.0.32/27", "10.0.0.57", ""},
		{"10.0.0.0/28", "", "not an IPv4 /27 or larger"},
		{"nonsense", "", "not an IPv4"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := nlbAddress(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("nlbAddress(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("nlbAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestAgentConfigs(t *testing.T) {
	agent, prom := agentConfigs("dev", "the-log-group", false)
	var cfg struct {
		Logs struct {
			MetricsCollected struct {
				Prometheus struct {
					LogGroupName string `json:"log_group_name"`
					ConfigPath   string `json:"prometheus_config_path"`
					EMF          struct {
						Namespace    string `json:"metric_namespace"`
						Declarations []struct {
							Dimensions [][]string `json:"dimensions"`
							Selectors  []string   `json:"metric_selectors"`
						} `json:"metric_declaration"`
					} `json:"emf_processor"`
				} `json:"prometheus"`
			} `json:"metrics_collected"`
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(agent), &cfg); err != nil {
		t.Fatalf("agent config is not JSON: %v\n%s", err, agent)
	}
	p := cfg.Logs.MetricsCollected.Prometheus
	if p.LogGroupName != "the-log-group" || p.ConfigPath != "env:PROMETHEUS_CONFIG_CONTENT" || p.EMF.Namespace != MetricsNamespace {
		t.Errorf("agent config %+v", p)
	}
	// The first publishes by Environment alone; one more per labelled
	// metric (TestLabelledMetricsPublishedByLabel), failed TLS handshakes
	// only with dicom.tls.
	if len(p.EMF.Declarations) != 1+len(metricnames.Dimensions)-1 || !slices.Contains(p.EMF.Declarations[0].Selectors, "^"+MetricActiveAssociations+"$") ||
		!cmp.Equal(p.EMF.Declarations[0].Dimensions, [][]string{{"Environment"}}) {
		t.Errorf("metric declarations %+v", p.EMF.Declarations)
	}
	for _, want := range []string{`targets: ["localhost:8081"]`, `Environment: "dev"`, "job_name: scp"} {
		if !strings.Contains(prom, want) {
			t.Errorf("prometheus config lacks %q:\n%s", want, prom)
		}
	}
}

// TestLogNameKey: one secret holds the key logs name objects with,
// encrypted with the stack's key and retained; ECS injects it into the SCP
// as a secret (never the environment), every pipeline function gets its
// ARN (each names objects or studies in its lines: validate, audit, notify
// and commitment), the audit feed, which names none, does not, and only
// the SCP's execution role and the pipeline functions' roles may read it.
func TestLogNameKey(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		secretID := s.stack.logicalID(s.stack.Storage.LogNameKey)
		sec := s.res[secretID]
		if sec == nil {
			t.Fatal("no log-name key secret")
		}
		p := props(sec)
		if refID(p["KmsKeyId"]) != s.stack.logicalID(s.stack.Storage.Key) || sec["DeletionPolicy"] != "Retain" {
			t.Errorf("log-name key: KmsKeyId %v, DeletionPolicy %v; want the stack's key, Retain", js(p["KmsKeyId"]), sec["DeletionPolicy"])
		}
		if gen := p["GenerateSecretString"].(map[string]any); gen["PasswordLength"] != float64(64) {
			t.Errorf("log-name key generated as %s, want 64 characters", js(gen))
		}

		if _, ok := s.containerEnv(t, "scp")[logname.EnvKey]; ok {
			t.Errorf("%s is in the scp container's plain environment", logname.EnvKey)
		}
		var secrets []string
		for _, td := range s.resources("AWS::ECS::TaskDefinition") {
			for _, cd := range props(td)["ContainerDefinitions"].([]any) {
				m := cd.(map[string]any)
				for _, sv := range asAnySlice(m["Secrets"]) {
					e := sv.(map[string]any)
					secrets = append(secrets, fmt.Sprintf("%s %s=%s", m["Name"], e["Name"], refID(e["ValueFrom"])))
				}
			}
		}
		wantSecrets := []string{"scp " + logname.EnvKey + "=" + secretID}
		if s.cfg.Dicom.TLS != nil {
			// The TLS certificate and key (TestDicomTLS), by ARN.
			wantSecrets = append(wantSecrets, "scp SCP_TLS_CERT=", "scp SCP_TLS_KEY=")
		}
		sort.Strings(secrets)
		if d := cmp.Diff(wantSecrets, secrets); d != "" {
			t.Errorf("container secrets (-want +got):\n%s", d)
		}

		fns := maps.Clone(s.stack.Pipeline.Functions)
		if f := s.stack.Pipeline.AuditFeed; f != nil {
			fns[FnAuditFeed] = f.Function
		}
		for name, fn := range fns {
			env := props(s.res[s.stack.logicalID(fn)])["Environment"].(map[string]any)["Variables"].(map[string]any)
			got, ok := env[logname.SecretARNEnv]
			if want := name != FnAuditFeed; ok != want || (ok && refID(got) != secretID) {
				t.Errorf("function %s: %s = %s", name, logname.SecretARNEnv, js(got))
			}
		}

		// Who may read the secret: exactly the task execution role and
		// the pipeline functions' roles.
		readers := map[string]bool{}
		for _, pol := range s.resources("AWS::IAM::Policy") {
			for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				m := st.(map[string]any)
				if m["Effect"] != "Allow" || !strings.Contains(js(m["Action"]), "secretsmanager:GetSecretValue") {
					continue
				}
				if !strings.Contains(js(m["Resource"]), `"Ref":"`+secretID+`"`) {
					continue
				}
				// CDK merges the execution role's grants on the secrets it
				// injects: besides the key only the TLS secret may be named.
				others := []any{}
				for _, r := range asAnySlice(m["Resource"]) {
					if refID(r) != secretID && (s.cfg.Dicom.TLS == nil || r != s.cfg.Dicom.TLS.ServerCertificateSecretArn) {
						others = append(others, r)
					}
				}
				if _, one := m["Resource"].(map[string]any); !one && len(others) > 0 {
					t.Errorf("a statement reads the log-name key among other resources: %s", js(others))
				}
				for _, r := range props(pol)["Roles"].([]any) {
					readers[refID(r)] = true
				}
			}
		}
		want := map[string]bool{s.stack.logicalID(s.stack.Ingest.TaskDefinition.ExecutionRole()): true}
		for _, name := range FunctionNames {
			want[s.stack.logicalID(s.stack.Pipeline.Functions[name].Role())] = true
		}
		if d := cmp.Diff(want, readers); d != "" {
			t.Errorf("roles that may read the log-name key (-want +got):\n%s", d)
		}
		if readers[s.stack.logicalID(s.stack.Ingest.TaskRole)] {
			t.Error("the SCP's task role may read the log-name key")
		}
		// Each reader may also decrypt it: the secret is under the stack's
		// key, which Secrets Manager uses with the reader's credentials.
		// Without it ECS cannot start a task, nor a function a cold start.
		keyID := s.stack.logicalID(s.stack.Storage.Key)
		for role := range want {
			ok := false
			for _, st := range s.roleStatements(role) {
				if slices.Contains(asStrings(st["Action"]), "kms:Decrypt") && refID(st["Resource"]) == keyID &&
					regionalService.ReplaceAllString(js(st["Condition"]), `"$1"`) == `{"StringEquals":{"kms:ViaService":"secretsmanager"}}` {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s may read the log-name key but not decrypt it through Secrets Manager", role)
			}
		}
	})
}

// TestStaging: with scp.staging the tasks mount an EFS file system that is
// encrypted with the stack's key, has a mount target in every zone,
// admits NFS from the tasks' security group only, is reached through one
// access point over TLS with IAM authorization, and is backed up when the
// config says so; the task role may mount it through that access point
// only; the backlog-age alarm exists. Without scp.staging none of it is
// there and the tasks answer once S3 holds an object.
func TestStaging(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		st := s.stack.Ingest.Staging
		if st == nil {
			t.Fatal("the example configs stage objects on EFS")
		}
		fsID, keyID := s.stack.logicalID(st.FileSystem), s.stack.logicalID(s.stack.Storage.Key)
		fs := props(s.res[fsID])
		if fs["Encrypted"] != true || refID(fs["KmsKeyId"]) != keyID {
			t.Errorf("file system encryption %v with %v, want the stack's key %s", fs["Encrypted"], js(fs["KmsKeyId"]), keyID)
		}
		if fs["PerformanceMode"] != "generalPurpose" || fs["ThroughputMode"] != "elastic" {
			t.Errorf("performance %v, throughput %v", fs["PerformanceMode"], fs["ThroughputMode"])
		}
		if s.res[fsID]["DeletionPolicy"] != "Retain" {
			t.Errorf("file system deletion policy %v, want Retain", s.res[fsID]["DeletionPolicy"])
		}
		if !strings.Contains(js(fs["FileSystemPolicy"]), `"aws:SecureTransport":"false"`) {
			t.Errorf("file system policy does not refuse plain NFS: %s", js(fs["FileSystemPolicy"]))
		}
		targets := s.resources("AWS::EFS::MountTarget")
		if len(targets) != len(s.cfg.AvailabilityZones) {
			t.Errorf("%d mount targets for %d zones", len(targets), len(s.cfg.AvailabilityZones))
		}
		sgID := s.stack.logicalID(st.SecurityGroup)
		taskSG := s.stack.logicalID(s.stack.Ingest.TaskSecurityGroup)
		for _, mt := range targets {
			if sgs := props(mt)["SecurityGroups"].([]any); len(sgs) != 1 || refID(sgs[0]) != sgID {
				t.Errorf("mount target security groups %s", js(sgs))
			}
		}
		rules := s.rules("Ingress")[sgID]
		if len(rules) != 1 || refID(rules[0]["SourceSecurityGroupId"]) != taskSG || rules[0]["FromPort"] != float64(2049) || rules[0]["ToPort"] != float64(2049) {
			t.Errorf("staging ingress %s, want NFS (2049) from the task security group %s only", js(rules), taskSG)
		}
		aps := s.resources("AWS::EFS::AccessPoint")
		if len(aps) != 1 {
			t.Fatalf("%d access points", len(aps))
		}
		ap := props(first(aps))
		if !strings.Contains(js(ap["PosixUser"]), `"Uid":"65532"`) || !strings.Contains(js(ap["RootDirectory"]), `"/scp-staging"`) {
			t.Errorf("access point %s", js(ap))
		}
		td := props(first(s.resources("AWS::ECS::TaskDefinition")))
		vol := js(td["Volumes"])
		for _, want := range []string{`"TransitEncryption":"ENABLED"`, `"IAM":"ENABLED"`, `"FilesystemId":{"Ref":"` + fsID + `"}`} {
			if !strings.Contains(vol, want) {
				t.Errorf("task volume %s lacks %s", vol, want)
			}
		}
		if !strings.Contains(js(td["ContainerDefinitions"]), `"ContainerPath":"`+StagingMountPath+`"`) {
			t.Error("the scp container does not mount the staging volume")
		}
		env := s.containerEnv(t, "scp")
		if env["SCP_STAGING_DIR"] != StagingMountPath || env["SCP_STAGING_MAX_BACKLOG"] != strconv.Itoa(s.cfg.Scp.Staging.MaxBacklogGiB<<30) {
			t.Errorf("staging environment %v %v", env["SCP_STAGING_DIR"], env["SCP_STAGING_MAX_BACKLOG"])
		}
		// The task role: mount and write through the access point, on this
		// file system only.
		roleID := refID(td["TaskRoleArn"])
		var efsStatements []string
		for _, pol := range s.resources("AWS::IAM::Policy") {
			for _, stmt := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				m := stmt.(map[string]any)
				if strings.Contains(js(m["Action"]), "elasticfilesystem:") && strings.Contains(js(props(pol)["Roles"]), roleID) {
					efsStatements = append(efsStatements, js(m))
				}
			}
		}
		if len(efsStatements) != 1 || !strings.Contains(efsStatements[0], `"elasticfilesystem:AccessPointArn"`) ||
			!strings.Contains(efsStatements[0], `"Resource":{"Fn::GetAtt":["`+fsID+`","Arn"]}`) || strings.Contains(efsStatements[0], "ClientRootAccess") {
			t.Errorf("task role EFS statements %v, want mount and write through the access point on %s only", efsStatements, fsID)
		}
		backedUp := strings.Contains(js(s.resources("AWS::Backup::BackupSelection")), fsID)
		if backedUp != s.cfg.Scp.Staging.Backups {
			t.Errorf("file system in the backup plan: %v, scp.staging.backups %v", backedUp, s.cfg.Scp.Staging.Backups)
		}
		alarms := js(s.resources("AWS::CloudWatch::Alarm"))
		if !strings.Contains(alarms, `"MetricName":"`+MetricStagingBacklogAge+`"`) {
			t.Error("no alarm on the staging backlog's age")
		}
	})
}

func asAnySlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func TestWithoutStaging(t *testing.T) {
	if testing.Short() {
		t.Skip("one more synthesis; skipped with -short")
	}
	s := synthEnv(t, "direct", variant("dev", "direct", func(c *config.Config) { c.Scp.Staging = nil }))
	if n := len(s.resources("AWS::EFS::FileSystem")); n != 0 || s.stack.Ingest.Staging != nil {
		t.Errorf("%d file systems without scp.staging", n)
	}
	if env := s.containerEnv(t, "scp"); env["SCP_STAGING_DIR"] != nil {
		t.Errorf("SCP_STAGING_DIR = %v without scp.staging", env["SCP_STAGING_DIR"])
	}
	// The run markers live in the bucket: the task may put, read and
	// delete those, under their prefix only, and their replaced versions
	// expire.
	roleID := s.stack.logicalID(s.stack.Ingest.TaskRole)
	var markers []string
	for _, st := range s.roleStatements(roleID) {
		if st["Sid"] == "RunMarkers" {
			markers = append(markers, js(st["Action"]), js(st["Resource"]))
		}
	}
	bucketID := s.stack.logicalID(s.stack.Storage.Bucket)
	want := []string{`["s3:DeleteObject","s3:GetObject","s3:PutObject"]`, `{"Fn::Join":["",[{"Fn::GetAtt":["` + bucketID + `","Arn"]},"/audit-runs/*"]]}`}
	if d := cmp.Diff(want, markers); d != "" {
		t.Errorf("task role's run marker statement (-want +got):\n%s", d)
	}
	if lc := js(props(s.res[bucketID])["LifecycleConfiguration"]); !strings.Contains(lc, `"NoncurrentVersionExpiration":{"NoncurrentDays":1},"Prefix":"audit-runs/"`) {
		t.Errorf("no rule expiring replaced run markers: %s", lc)
	}
	// The markers in the bucket find unclean stops without staging too,
	// and the same alarms watch what the next start says of them.
	alarmed := s.alarmedMetrics()
	for _, name := range []string{MetricAuditUncleanStops, MetricAuditUncleanStopLogLines} {
		if !alarmed[name] {
			t.Errorf("no alarm on %s without scp.staging", name)
		}
	}
	for _, f := range nagFindings(s) {
		t.Error(f)
	}
}

// TestStorageCommitment: the commitment function reports to each site's PACS through the VPN and nowhere
// else; scp-task opens no connection to a site at all; requests flow from the task's prefix to the function,
// whose undeliverable reports raise an alarm.
func TestStorageCommitment(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		c := s.cfg
		fnSG := s.stack.logicalID(s.stack.Pipeline.CommitmentSG)
		want := []string{"DynamoDB prefix list 443", "S3 prefix list 443", "interface endpoints 443"}
		for _, site := range c.Sites {
			if site.Pacs != nil {
				want = append(want, fmt.Sprintf("%s/32 %d (Storage Commitment reports to the PACS of site %s)", site.Pacs.Host, site.Pacs.Port, site.Name))
			}
		}
		s.checkEgress(t, "commitment function", s.stack.Pipeline.CommitmentSG, want)
		// scp-task opens no connection to a site: its egress is
		// TestTaskEgressOnlyToEndpoints's (endpoints only, no CIDR).

		fn := props(s.res[s.stack.logicalID(s.stack.Pipeline.Functions[FnCommitment])])
		env := fn["Environment"].(map[string]any)["Variables"].(map[string]any)
		if env["AE_TITLE"] != c.Dicom.AETitle || env["COMMITMENT_PEERS"] != c.CommitmentPeers() ||
			env["COMMITMENT_WAIT_SECONDS"] != fmt.Sprint(c.Commitment.WaitSeconds) || env["COMMITMENT_REPORT_MINUTES"] != fmt.Sprint(c.Commitment.ReportMinutes) {
			t.Errorf("commitment function environment %s", js(env))
		}
		if js(fn["VpcConfig"].(map[string]any)["SecurityGroupIds"]) != `[{"Fn::GetAtt":["`+fnSG+`","GroupId"]}]` {
			t.Errorf("commitment function security groups %s", js(fn["VpcConfig"]))
		}
		td := props(first(s.resources("AWS::ECS::TaskDefinition")))
		if !strings.Contains(js(td["ContainerDefinitions"]), `{"Name":"SCP_COMMITMENT_PEERS","Value":"`+c.CommitmentPeers()+`"}`) {
			t.Error("scp-task has no SCP_COMMITMENT_PEERS")
		}

		// The function's S3 rights: read requests, incoming objects and results; put results; nothing else.
		roleID := refID(fn["Role"])
		var s3 []string
		for _, pol := range s.resources("AWS::IAM::Policy") {
			if !strings.Contains(js(props(pol)["Roles"]), roleID) {
				continue
			}
			for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				m := st.(map[string]any)
				for _, a := range asStrings(m["Action"]) {
					if strings.HasPrefix(a, "s3:") {
						for _, r := range asStrings(m["Resource"]) {
							s3 = append(s3, a+" "+r)
						}
						if rs, ok := m["Resource"].([]any); ok {
							for _, r := range rs {
								if j, ok := r.(map[string]any); ok {
									s3 = append(s3, a+" "+js(j))
								}
							}
						}
					}
				}
			}
		}
		for _, a := range s3 {
			switch {
			case strings.Contains(a, "Delete"):
				t.Errorf("commitment function may %s", a)
			case strings.HasPrefix(a, "s3:PutObject") && !strings.Contains(a, "/commitment/results/*"):
				t.Errorf("commitment function may %s", a)
			case strings.Contains(a, "/metadata/") || strings.Contains(a, "/audit/") || strings.Contains(a, "/quarantine/"):
				t.Errorf("commitment function may %s", a)
			}
		}

		var bySop bool
		for _, tb := range s.resources("AWS::DynamoDB::Table") {
			if strings.Contains(js(props(tb)["GlobalSecondaryIndexes"]), `"IndexName":"bySop"`) {
				bySop = true
			}
		}
		if !bySop {
			t.Error("no bySop index on the audit table")
		}
		s.check(t, func(tpl assertions.Template) {
			tpl.HasResourceProperties(jsii.String("AWS::Logs::MetricFilter"), map[string]any{
				"FilterPattern": `{ $.msg = "` + pipeline.UndeliverableLog + `" }`,
				"MetricTransformations": []any{map[string]any{
					"MetricName": MetricCommitmentUndeliverable, "MetricNamespace": MetricsNamespace, "MetricValue": "1",
					"Dimensions": []any{map[string]any{"Key": "Environment", "Value": "$.environment"}},
				}},
			})
			tpl.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
				"MetricName": MetricCommitmentUndeliverable, "Namespace": MetricsNamespace, "Threshold": 0,
				"Dimensions": []any{map[string]any{"Name": "Environment", "Value": c.Name}},
			})
		})
	})
}

// TestAlarmsMayPublish: the alarm topic's policy (which EnforceSSL writes,
// replacing SNS's default one) lets CloudWatch publish this account's
// alarms; with the deny alone, no alarm reached anyone.
func TestAlarmsMayPublish(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		found := false
		for id, p := range s.resources("AWS::SNS::TopicPolicy") {
			doc := props(p)["PolicyDocument"].(map[string]any)
			for _, st := range doc["Statement"].([]any) {
				st := st.(map[string]any)
				principal, _ := st["Principal"].(map[string]any)
				if st["Effect"] != "Allow" || principal["Service"] != "cloudwatch.amazonaws.com" || st["Action"] != "sns:Publish" {
					continue
				}
				cond, _ := st["Condition"].(map[string]any)
				if cond["StringEquals"] == nil || cond["ArnLike"] == nil {
					t.Errorf("%s: CloudWatch may publish without the account's conditions: %v", id, cond)
				}
				found = true
			}
		}
		if !found {
			t.Error("no topic policy lets CloudWatch publish the alarms")
		}
	})
}

// TestEventsUnderTheKey: the bus and its archive hold events (UIDs, patient
// data as configured) under the stack's key like every other store of
// patient data, and the bus may dead-letter into its queue; without a key
// the bus's dead-letter queue could never receive anything.
func TestEventsUnderTheKey(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, typ := range []string{"AWS::Events::EventBus", "AWS::Events::Archive"} {
			for id, r := range s.resources(typ) {
				if props(r)["KmsKeyIdentifier"] == nil || props(r)["KmsKeyIdentifier"] == "" {
					t.Errorf("%s %s is not encrypted with the stack's key", typ, id)
				}
			}
		}
		allowed := false
		for _, p := range s.resources("AWS::SQS::QueuePolicy") {
			for _, st := range props(p)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				st := st.(map[string]any)
				principal, _ := st["Principal"].(map[string]any)
				if st["Effect"] == "Allow" && principal["Service"] == "events.amazonaws.com" && st["Action"] == "sqs:SendMessage" {
					allowed = true
				}
			}
		}
		if !allowed {
			t.Error("no queue policy lets the bus dead-letter its events")
		}
	})
}

// TestQueuePoliciesLetServicesSendOnly: the queue policies let S3 and
// EventBridge send messages and nothing else. S3's documented queue policy
// ("Granting permissions to publish event notification messages to a
// destination", Amazon S3 User Guide) names sqs:SendMessage alone; the S3
// notifications' statement also held GetQueueAttributes and GetQueueUrl,
// after CDK's SqsDestination.
func TestQueuePoliciesLetServicesSendOnly(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for id, p := range s.resources("AWS::SQS::QueuePolicy") {
			for _, st := range props(p)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				st := st.(map[string]any)
				principal, _ := st["Principal"].(map[string]any)
				if st["Effect"] != "Allow" || principal["Service"] == nil {
					continue
				}
				if got := asStrings(st["Action"]); !slices.Equal(got, []string{"sqs:SendMessage"}) {
					t.Errorf("queue policy %s lets %v %v, want sqs:SendMessage alone", id, principal["Service"], got)
				}
			}
		}
	})
}

// TestEveryFunctionLogsUnderRetentionAndKey: every Lambda function of the
// template, CDK's custom-resource providers included, logs to a log group of
// the stack kept logRetentionDays and encrypted with the stack's key. The
// providers' functions logged to /aws/lambda/<name>, which Lambda creates on
// first use, never expiring and under no key of ours.
func TestEveryFunctionLogsUnderRetentionAndKey(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		keyID := s.stack.logicalID(s.stack.Storage.Key)
		fns := s.resources("AWS::Lambda::Function")
		if len(fns) <= len(FunctionNames) {
			t.Fatalf("%d functions: the providers' are missing from the template", len(fns))
		}
		for id, fn := range fns {
			lc, _ := props(fn)["LoggingConfig"].(map[string]any)
			groupID := refID(lc["LogGroup"])
			group, ok := s.res[groupID]
			if !ok || group["Type"] != "AWS::Logs::LogGroup" {
				t.Errorf("function %s logs to %v, not a log group of the stack", id, js(lc))
				continue
			}
			g := props(group)
			if g["RetentionInDays"] != float64(s.cfg.LogRetentionDays) || refID(g["KmsKeyId"]) != keyID {
				t.Errorf("function %s: log group %s keeps %v days under %v; want %d days under the stack's key %s",
					id, groupID, g["RetentionInDays"], js(g["KmsKeyId"]), s.cfg.LogRetentionDays, keyID)
			}
		}
	})
}
