// Package lambdaiotest holds the functions' shared test doubles.
package lambdaiotest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// LambdaInitLimit is how long Lambda lets a function's init run before it
// times it out (and tries it again inside the first invocation).
const LambdaInitLimit = 10 * time.Second

// UnansweredSecrets is a Secrets Manager that answers the secrets of
// Values at once and never answers any other (an endpoint that accepts and
// stalls, a security group that drops the packets): such a call ends only
// with its context, which it reports ended as a stalled call's would, or,
// with no deadline, would have waited for ever. It records each call's
// deadline, answered or not. It is safe for concurrent use.
type UnansweredSecrets struct {
	// Values are the secrets answered, by ARN.
	Values map[string]string

	mu        sync.Mutex
	deadlines []time.Time
}

// GetSecretValue answers the secret of Values, or else ends as a call
// never answered does at its context's deadline (an error wrapping
// context.DeadlineExceeded, as the SDK's), at once rather than after the
// wait.
func (s *UnansweredSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	dl, bounded := ctx.Deadline()
	s.mu.Lock()
	s.deadlines = append(s.deadlines, dl)
	s.mu.Unlock()
	if in.SecretId != nil {
		if v, ok := s.Values[*in.SecretId]; ok {
			return &secretsmanager.GetSecretValueOutput{SecretString: &v}, nil
		}
	}
	if !bounded {
		return nil, errors.New("called without a deadline: it would wait past Lambda's init")
	}
	return nil, fmt.Errorf("operation error Secrets Manager: GetSecretValue: %w", context.DeadlineExceeded)
}

// Deadlines are the calls' deadlines, in order (the zero Time for a call
// given none).
func (s *UnansweredSecrets) Deadlines() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.deadlines...)
}
