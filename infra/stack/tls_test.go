package stack

import (
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// containerDef returns a container definition of the task as template values.
func (s *synthesized) containerDef(t *testing.T, name string) map[string]any {
	t.Helper()
	for _, td := range s.resources("AWS::ECS::TaskDefinition") {
		for _, cd := range props(td)["ContainerDefinitions"].([]any) {
			if m := cd.(map[string]any); m["Name"] == name {
				return m
			}
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// TestDicomTLS: with dicom.tls (the prod example) the NLB forwards the TLS port as TCP to the tasks' TLS port, the
// task gets the certificate and key as ECS secrets (read by the execution role, from exactly that secret), the
// client CA bundle as a variable, and the sites bound to certificate names carry #NAME in the allowlist.
func TestDicomTLS(t *testing.T) {
	s := synthEnv(t, "prod", example("prod"))
	c := s.cfg
	tlsCfg := c.Dicom.TLS
	if tlsCfg == nil {
		t.Fatal("the prod example has no dicom.tls")
	}
	if s.stack.Ingest.TLSListener == nil || s.stack.Ingest.TLSTargetGroup == nil {
		t.Fatal("no TLS listener")
	}
	l := props(s.res[s.stack.logicalID(s.stack.Ingest.TLSListener)])
	tg := props(s.res[s.stack.logicalID(s.stack.Ingest.TLSTargetGroup)])
	if l["Port"] != float64(tlsCfg.Port) || l["Protocol"] != "TCP" || tg["Port"] != float64(ScpTLSPort) || tg["Protocol"] != "TCP" {
		t.Errorf("TLS listener %v/%v to targets %v/%v, want TCP %d to TCP %d", l["Protocol"], l["Port"], tg["Protocol"], tg["Port"], tlsCfg.Port, ScpTLSPort)
	}

	scp := s.containerDef(t, "scp")
	env := s.containerEnv(t, "scp")
	if env["SCP_TLS_LISTEN"] != ":2762" || env["SCP_TLS_CLIENT_CA"] != tlsCfg.ClientCaPEM || !strings.Contains(tlsCfg.ClientCaPEM, "BEGIN CERTIFICATE") {
		t.Errorf("SCP_TLS_LISTEN %v, SCP_TLS_CLIENT_CA %.40v", env["SCP_TLS_LISTEN"], env["SCP_TLS_CLIENT_CA"])
	}
	if _, ok := env["SCP_TLS_KEY"]; ok {
		t.Error("the TLS key is a plain environment variable")
	}
	if env["SCP_LISTEN"] != ":11112" {
		t.Errorf("SCP_LISTEN = %v with the plain listener on", env["SCP_LISTEN"])
	}
	if aes := env["SCP_CALLING_AES"].(string); !strings.Contains(aes, "STMARY_PACS@10.10.0.0/24|10.10.8.0/24#pacs.st-mary.example") || !strings.Contains(aes, "NORTH_PACS@172.20.4.0/24,") {
		t.Errorf("SCP_CALLING_AES = %s", aes)
	}
	secrets := map[string]string{}
	for _, x := range scp["Secrets"].([]any) {
		m := x.(map[string]any)
		secrets[m["Name"].(string)] = js(m["ValueFrom"])
	}
	for name, key := range map[string]string{"SCP_TLS_CERT": TLSSecretCertificateKey, "SCP_TLS_KEY": TLSSecretPrivateKeyKey} {
		if !strings.Contains(secrets[name], tlsCfg.ServerCertificateSecretArn+":"+key+"::") {
			t.Errorf("secret %s from %s, want the %q key of %s", name, secrets[name], key, tlsCfg.ServerCertificateSecretArn)
		}
	}
	var mapped []float64
	for _, pm := range scp["PortMappings"].([]any) {
		mapped = append(mapped, pm.(map[string]any)["ContainerPort"].(float64))
	}
	if !strings.Contains(js(mapped), "2762") {
		t.Errorf("port mappings %v lack %d", mapped, ScpTLSPort)
	}

	// Least privilege: the execution role (which ECS uses to resolve secrets) reads exactly this secret; the task
	// role, which the SCP's code runs as, cannot read any secret.
	execRole := s.stack.logicalID(s.stack.Ingest.TaskDefinition.ExecutionRole())
	found := false
	for _, st := range s.roleStatements(execRole) {
		if !strings.Contains(js(st["Action"]), "secretsmanager:") {
			continue
		}
		// The one statement CDK makes for the secrets it injects: this one and the log-name key (TestLogNameKey).
		resources := asAnySlice(st["Resource"])
		if resources == nil {
			resources = []any{st["Resource"]}
		}
		for _, r := range resources {
			if r == tlsCfg.ServerCertificateSecretArn {
				found = true
			} else if refID(r) != s.stack.logicalID(s.stack.Storage.LogNameKey) {
				t.Errorf("execution role reads secret %s, want only %s and the log-name key", js(r), tlsCfg.ServerCertificateSecretArn)
			}
		}
		if a := js(st["Action"]); strings.Contains(a, "*") || strings.Contains(a, "Put") || strings.Contains(a, "Update") {
			t.Errorf("execution role secret actions %s", a)
		}
	}
	if !found {
		t.Error("the execution role cannot read the TLS secret")
	}
	for _, st := range s.roleStatements(s.stack.logicalID(s.stack.Ingest.TaskRole)) {
		if strings.Contains(js(st["Action"]), "secretsmanager:") {
			t.Errorf("task role has secret access: %s", js(st))
		}
	}
	checkIngress(t, s)
}

// tlsOnlySecretKey is the key tlsOnly's server certificate secret is under.
const tlsOnlySecretKey = "arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab"

// tlsOnly is prod with DICOM TLS alone (no plain listener, no PROXY
// protocol), its secret under a key of its own and a client CRL.
func tlsOnly() (*config.Config, error) {
	c, err := config.Load("../config", "prod")
	if err != nil {
		return nil, err
	}
	off := false
	c.Name = "tlsonly"
	c.Dicom.TLS.PlainListener = &off
	c.Dicom.TLS.SecretKmsKeyArn = tlsOnlySecretKey
	c.Dicom.TLS.ClientCrlPEM = "-----BEGIN X509 CRL-----\n(as Load reads it)\n-----END X509 CRL-----\n"
	c.Dicom.ProxyProtocol = &off
	return c, c.Validate()
}

// TestDicomTLSOnly: with dicom.tls.plainListener false the NLB has the TLS port only, the SCP's plain listener is off
// and no security group rule opens the plain port; cdk-nag stays clean. A customer-managed key of the secret is
// granted to the execution role through Secrets Manager only; a client CRL reaches the SCP.
func TestDicomTLSOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("one more synthesis; skipped with -short")
	}
	s := synthEnv(t, "tlsonly", tlsOnly)
	if env := s.containerEnv(t, "scp"); env["SCP_TLS_CLIENT_CRL"] != s.cfg.Dicom.TLS.ClientCrlPEM {
		t.Errorf("SCP_TLS_CLIENT_CRL = %v", env["SCP_TLS_CLIENT_CRL"])
	}
	if !hasAlarmOn(s, MetricTLSClientCRLNextUpdateIn) {
		t.Error("no alarm on the client CRL's next update")
	}
	s.check(t, func(tpl assertions.Template) {
		tpl.ResourceCountIs(jsii.String("AWS::ElasticLoadBalancingV2::Listener"), jsii.Number(1))
		tpl.ResourceCountIs(jsii.String("AWS::ElasticLoadBalancingV2::TargetGroup"), jsii.Number(1))
	})
	if env := s.containerEnv(t, "scp"); env["SCP_LISTEN"] != "off" || env["SCP_TLS_LISTEN"] != ":2762" {
		t.Errorf("SCP_LISTEN %v, SCP_TLS_LISTEN %v", env["SCP_LISTEN"], env["SCP_TLS_LISTEN"])
	}
	for sg, rules := range s.rules("Ingress") {
		for _, r := range rules {
			if r["FromPort"] == float64(s.cfg.Dicom.Port) || r["FromPort"] == float64(ScpPort) {
				t.Errorf("%s opens the plain DICOM port: %s", sg, js(r))
			}
		}
	}
	checkIngress(t, s)
	checkUnhealthyTargetsAlarms(t, s)
	execRole := s.stack.logicalID(s.stack.Ingest.TaskDefinition.ExecutionRole())
	decrypt := false
	for _, st := range s.roleStatements(execRole) {
		if strings.Contains(js(st["Action"]), "kms:Decrypt") {
			decrypt = st["Resource"] == tlsOnlySecretKey && strings.Contains(js(st["Condition"]), "secretsmanager.eu-west-1.amazonaws.com")
		}
	}
	if !decrypt {
		t.Error("the execution role cannot decrypt the secret's key through Secrets Manager")
	}
	for _, f := range nagFindings(s) {
		t.Error(f)
	}
}

// TestDicomTLSAlarms: with dicom.tls the agent publishes the TLS metrics and alarms watch failed handshakes, the
// server certificate's expiry and the sites' certificates' (which had no warning at all before they expired); without
// it, none.
func TestDicomTLSAlarms(t *testing.T) {
	agent, _ := agentConfigs("prod", "g", true)
	plain, _ := agentConfigs("dev", "g", false)
	for _, m := range []string{MetricTLSHandshakeFailures, MetricTLSCertificateExpireIn, MetricTLSClientCRLNextUpdateIn, MetricTLSClientCertificateExpiresIn} {
		if !strings.Contains(agent, m) || strings.Contains(plain, m) {
			t.Errorf("agent selector for %s: with TLS %v, without %v", m, strings.Contains(agent, m), strings.Contains(plain, m))
		}
	}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		want := map[string]bool{MetricTLSHandshakeFailures: false, MetricTLSCertificateExpireIn: false, MetricTLSClientCertificateExpiresIn: false}
		for _, a := range s.resources("AWS::CloudWatch::Alarm") {
			if m, ok := props(a)["MetricName"].(string); ok {
				if _, tls := want[m]; tls {
					want[m] = true
				}
			}
		}
		for m, found := range want {
			if found != (s.cfg.Dicom.TLS != nil) {
				t.Errorf("alarm on %s: %v with dicom.tls %v", m, found, s.cfg.Dicom.TLS != nil)
			}
		}
		// The examples publish no client CRL (TestDicomTLSOnly does).
		withCRL := s.cfg.Dicom.TLS != nil && s.cfg.Dicom.TLS.ClientCrlPEM != ""
		if found := hasAlarmOn(s, MetricTLSClientCRLNextUpdateIn); found != withCRL {
			t.Errorf("alarm on %s: %v with a client CRL %v", MetricTLSClientCRLNextUpdateIn, found, withCRL)
		}
	})
}

// hasAlarmOn says whether an alarm watches the metric.
func hasAlarmOn(s *synthesized, metric string) bool {
	for _, a := range s.resources("AWS::CloudWatch::Alarm") {
		if props(a)["MetricName"] == metric {
			return true
		}
	}
	return false
}

// TestUnhealthyTargetsAlarms: every target group of the NLB, the DICOM TLS port's too, has an alarm on its
// unhealthy targets. UnhealthyTargets watched the plain port's alone, though the TLS port's runs the same /readyz
// check and is the only way in for the sites bound to a certificate (found by the operator drill).
func TestUnhealthyTargetsAlarms(t *testing.T) {
	forEachEnv(t, checkUnhealthyTargetsAlarms)
}

// checkUnhealthyTargetsAlarms checks that each target group of s has one alarm on its UnHealthyHostCount.
func checkUnhealthyTargetsAlarms(t *testing.T, s *synthesized) {
	t.Helper()
	watched := map[string]int{} // target group logical id -> alarms
	for _, a := range s.resources("AWS::CloudWatch::Alarm") {
		p := props(a)
		if p["MetricName"] != "UnHealthyHostCount" {
			continue
		}
		dims, _ := p["Dimensions"].([]any)
		for _, d := range dims {
			d, _ := d.(map[string]any)
			if d["Name"] != "TargetGroup" {
				continue
			}
			if ref, ok := d["Value"].(map[string]any)["Fn::GetAtt"].([]any); ok && len(ref) == 2 {
				watched[ref[0].(string)]++
			}
		}
	}
	groups := s.resources("AWS::ElasticLoadBalancingV2::TargetGroup")
	for id := range groups {
		if watched[id] != 1 {
			t.Errorf("target group %s: %d alarms on its unhealthy targets, want 1", id, watched[id])
		}
	}
	if len(watched) != len(groups) {
		t.Errorf("alarms on unhealthy targets of %d target groups, the NLB has %d", len(watched), len(groups))
	}
	if s.stack.Ingest.TLSTargetGroup != nil && watched[s.stack.logicalID(s.stack.Ingest.TLSTargetGroup)] != 1 {
		t.Error("no alarm on the DICOM TLS port's unhealthy targets")
	}
}
