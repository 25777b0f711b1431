package config

import (
	"io"
	"strings"
	"testing"
)

// TestCommitmentPeersServerName: a tls:// entry of --commitment-peers takes ?serverName=NAME, the DNS name the
// PACS's certificate names when it names no address; a name that is no DNS name is refused, naming the setting.
func TestCommitmentPeersServerName(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"SCP_COMMITMENT_PEERS": "PACS=tls://10.1.2.3:2762?serverName=pacs.st-mary.example"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.CommitmentPeers["PACS"]; p.Addr != "10.1.2.3:2762" || !p.TLS || p.ServerName != "pacs.st-mary.example" {
		t.Errorf("peer %+v", p)
	}
	_, err = Load([]string{"--commitment-peers", "PACS=tls://10.1.2.3:2762?serverName=pacs_1.example"}, env(nil), io.Discard)
	if want := `--commitment-peers: commitreport: entry 1 "PACS=tls://10.1.2.3:2762?serverName=pacs_1.example": serverName: "pacs_1.example" is not a DNS name`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Load = %v, want %q", err, want)
	}
}
