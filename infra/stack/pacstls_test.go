package stack

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// TestPacsTLS: a site with pacs.tls has the commitment function report over DICOM TLS: its environment names the
// peer tls:// and gives that site's CA and its client secret's ARN (COMMITMENT_TLS), no secret value anywhere in
// the template; its role reads exactly those secrets and decrypts with their key through Secrets Manager only; it
// reaches Secrets Manager through the stack's interface endpoint; failed handshakes are counted by reason; the SCP
// takes the site's requests (its tls:// entry needs no client settings there: it does not report).
func TestPacsTLS(t *testing.T) {
	caA, caB := testpki.NewCA(t, "St Mary PACS CA"), testpki.NewCA(t, "North PACS CA")
	clientA := caA.Client(t, testpki.Options{CommonName: "dicom-ingest"})
	const (
		arnA = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:dicom-ingest/prod/pacs-a-client-Ab12Cd"
		arnB = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:dicom-ingest/prod/pacs-b-client-Ef34Gh"
		kms  = "arn:aws:kms:eu-west-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	)
	var sites []config.Site
	var conf *config.Config
	s := synthEnv(t, "pacstls", variant("prod", "pacstls", func(c *config.Config) {
		c.Sites[0].Pacs.TLS = &config.PacsTLS{CaFile: "a.pem", CaPEM: string(caA.PEM), ClientSecretArn: arnA, SecretKmsKeyArn: kms}
		c.Sites[1].Pacs = &config.Pacs{Host: strings.TrimSuffix(c.Sites[1].Cidrs[0], ".0/24") + ".30", Port: 2762,
			TLS: &config.PacsTLS{CaFile: "b.pem", CaPEM: string(caB.PEM), ClientSecretArn: arnB}}
		sites, conf = c.Sites, c
	}))
	fnID := s.stack.logicalID(s.stack.Pipeline.Functions[FnCommitment])
	fn := props(s.res[fnID])
	env := fn["Environment"].(map[string]any)["Variables"].(map[string]any)
	// Its own variables are the config's one map, the one whose size Load checks against Lambda's 4 KB.
	for k, v := range conf.CommitmentEnvironment() {
		if env[k] != v {
			t.Errorf("%s = %v, want the config's CommitmentEnvironment %q", k, env[k], v)
		}
	}
	peers, err := commitreport.ParsePeers(env["COMMITMENT_PEERS"].(string))
	if err != nil || !peers[sites[0].CallingAETitle].TLS || !peers[sites[1].CallingAETitle].TLS {
		t.Errorf("COMMITMENT_PEERS %v (%v), want both sites tls://", env["COMMITMENT_PEERS"], err)
	}
	var tlsPeers commitreport.TLSPeers
	if err := json.Unmarshal([]byte(env["COMMITMENT_TLS"].(string)), &tlsPeers); err != nil {
		t.Fatal(err)
	}
	if a, b := tlsPeers[sites[0].CallingAETitle], tlsPeers[sites[1].CallingAETitle]; len(tlsPeers) != 2 ||
		a.CA != string(caA.PEM) || a.ClientSecretARN != arnA || b.CA != string(caB.PEM) || b.ClientSecretARN != arnB {
		t.Errorf("COMMITMENT_TLS %+v: want each site's own CA and secret", tlsPeers)
	}
	if scp := s.containerEnv(t, "scp")["SCP_COMMITMENT_PEERS"]; scp != env["COMMITMENT_PEERS"] {
		t.Errorf("SCP_COMMITMENT_PEERS %v, want the function's %v", scp, env["COMMITMENT_PEERS"])
	}

	// The grant: GetSecretValue on exactly the two client secrets (beside the log-name key's), kms:Decrypt on their
	// key through Secrets Manager only.
	roleID := refID(fn["Role"])
	var secretReads, keyUses []string
	for _, st := range s.roleStatements(roleID) {
		switch js(st["Action"]) {
		case `"secretsmanager:GetSecretValue"`:
			switch r := st["Resource"].(type) {
			case string:
				secretReads = append(secretReads, r)
			case []any:
				for _, x := range r {
					if sr, ok := x.(string); ok {
						secretReads = append(secretReads, sr)
					}
				}
			}
		case `"kms:Decrypt"`:
			if st["Resource"] == kms {
				keyUses = append(keyUses, js(st["Condition"]))
			}
		}
	}
	if js(secretReads) != js([]string{arnA, arnB}) {
		t.Errorf("the function may read the secrets %v, want exactly %v (the log-name key's is a reference)", secretReads, []string{arnA, arnB})
	}
	if len(keyUses) != 1 || keyUses[0] != `{"StringEquals":{"kms:ViaService":"secretsmanager.eu-west-1.amazonaws.com"}}` {
		t.Errorf("kms:Decrypt on the secrets' key: %v, want once, via Secrets Manager", keyUses)
	}

	// Secrets Manager through the stack's interface endpoint, which the function's security group reaches.
	var endpoint bool
	for _, e := range s.resources("AWS::EC2::VPCEndpoint") {
		if strings.Contains(js(props(e)["ServiceName"]), "secretsmanager") && props(e)["VpcEndpointType"] == "Interface" {
			endpoint = true
		}
	}
	sg := js(props(s.res[s.stack.logicalID(s.stack.Pipeline.CommitmentSG)])["SecurityGroupEgress"])
	if !endpoint || !strings.Contains(sg, s.stack.logicalID(s.stack.Network.EndpointSecurityGroup)) ||
		!strings.Contains(sg, sites[1].Pacs.Host+"/32") {
		t.Errorf("Secrets Manager endpoint %v; commitment egress %s", endpoint, sg)
	}

	// Failed handshakes counted by reason.
	s.check(t, func(tpl assertions.Template) {
		tpl.HasResourceProperties(jsii.String("AWS::Logs::MetricFilter"), map[string]any{
			"FilterPattern": jsonlog.MessageFilter(commitreport.HandshakeFailedLog),
			"MetricTransformations": []any{map[string]any{"MetricName": MetricCommitmentTLSHandshakeFailures, "MetricNamespace": MetricsNamespace,
				"Dimensions": assertions.Match_ArrayWith(&[]any{map[string]any{"Key": "Reason", "Value": "$.reason"}})}},
		})
	})

	// No secret value anywhere: our client key is only in its secret.
	raw := js(s.res) + js(s.outputs)
	body := strings.Join(strings.Split(string(clientA.KeyPEM), "\n")[1:2], "")
	if strings.Contains(raw, "PRIVATE KEY") || body == "" || strings.Contains(raw, body) {
		t.Error("a private key in the template")
	}
}

// TestPacsTLSNotInDev: without pacs.tls the function has no COMMITMENT_TLS, no handshake metric, and reads no
// secret but the log-name key.
func TestPacsTLSNotInDev(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		fn := props(s.res[s.stack.logicalID(s.stack.Pipeline.Functions[FnCommitment])])
		if _, ok := fn["Environment"].(map[string]any)["Variables"].(map[string]any)["COMMITMENT_TLS"]; ok {
			t.Error("COMMITMENT_TLS without pacs.tls")
		}
		if strings.Contains(js(s.resources("AWS::Logs::MetricFilter")), MetricCommitmentTLSHandshakeFailures) {
			t.Error("handshake metric without pacs.tls")
		}
	})
}
