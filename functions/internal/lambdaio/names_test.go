package lambdaio

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio/lambdaiotest"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

type secretsFake struct {
	value *string
	err   error
	asked []string
}

func (f *secretsFake) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	f.asked = append(f.asked, aws.ToString(in.SecretId))
	return &secretsmanager.GetSecretValueOutput{SecretString: f.value}, f.err
}

// TestLoadNames: the key comes from the environment or from the secret
// the environment names; without either, names hold for one cold start
// and the log says so.
func TestLoadNames(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef0123456789abcdef"
	const arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:LogNameKey-AbCdEf"
	want, err := logname.New([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	const objectKey = "incoming/2026/03/04/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
	cases := []struct {
		name    string
		cfg     Config
		sm      *secretsFake
		wantErr string
		named   bool // names as under key
		warned  bool
	}{
		{"from the environment", Config{LogKey: key, LogKeySecretARN: arn}, &secretsFake{}, "", true, false},
		{"from Secrets Manager", Config{LogKeySecretARN: arn}, &secretsFake{value: aws.String(key)}, "", true, false},
		{"Secrets Manager fails", Config{LogKeySecretARN: arn}, &secretsFake{err: errors.New("AccessDenied")}, logname.SecretARNEnv + ": AccessDenied", false, false},
		{"a binary secret", Config{LogKeySecretARN: arn}, &secretsFake{}, "holds no string", false, false},
		{"a short secret", Config{LogKeySecretARN: arn}, &secretsFake{value: aws.String("short")}, "shorter than", false, false},
		{"no key at all", Config{}, &secretsFake{}, "", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			n, err := loadNames(context.Background(), c.sm, c.cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Name(objectKey) == want.Name(objectKey); got != c.named {
				t.Errorf("names under the key: %v, want %v", got, c.named)
			}
			if c.cfg.LogKey != "" && len(c.sm.asked) > 0 {
				t.Errorf("Secrets Manager asked for %v with the key in the environment", c.sm.asked)
			}
			if got := strings.Contains(logs.String(), "no log-name key"); got != c.warned {
				t.Errorf("warning logged: %v, want %v\n%s", got, c.warned, logs.String())
			}
		})
	}
}

func TestConfigFromEnvLogKey(t *testing.T) {
	env := map[string]string{"BUCKET": "b", logname.EnvKey: "k", logname.SecretARNEnv: "arn"}
	c, err := ConfigFromEnv(func(k string) string { return env[k] }, "BUCKET")
	if err != nil || c.LogKey != "k" || c.LogKeySecretARN != "arn" {
		t.Errorf("ConfigFromEnv = %+v, %v", c, err)
	}
}

// TestLoadNamesGivesUpBeforeLambdasInit: the key's read at cold start is
// bounded well inside Lambda's 10 s init, so a Secrets Manager that does
// not answer fails the start with the wiring line naming the secret's
// variable, rather than an init timed out with no line (and, retried in
// the invocation, its whole timeout spent waiting).
func TestLoadNamesGivesUpBeforeLambdasInit(t *testing.T) {
	sm := &lambdaiotest.UnansweredSecrets{}
	_, err := loadNames(context.Background(), sm, Config{LogKeySecretARN: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:LogNameKey-AbCdEf"},
		slog.New(slog.DiscardHandler))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), logname.SecretARNEnv) {
		t.Fatalf("err = %v, want the secret's variable and the deadline", err)
	}
	if KeyReadTimeout > lambdaiotest.LambdaInitLimit/2 {
		t.Errorf("KeyReadTimeout %v, want at most half of Lambda's %v init", KeyReadTimeout, lambdaiotest.LambdaInitLimit)
	}
	if dls := sm.Deadlines(); len(dls) != 1 || dls[0].IsZero() || dls[0].After(time.Now().Add(KeyReadTimeout)) {
		t.Errorf("reads given until %v, want one within KeyReadTimeout (%v)", dls, KeyReadTimeout)
	}
}
