// Package taskprotection keeps an ECS task protected from scale-in while it
// holds associations, through the ECS agent's task scale-in protection
// endpoint ($ECS_AGENT_URI/task-protection/v1/state), so that autoscaling
// does not stop a task in the middle of a study. Protection is renewed
// while the task is busy and released once it has been idle for a while,
// so a PACS sending study after study does not make it flap. Failures are
// logged and counted; they never hold up an association.
package taskprotection

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// StatePath is the endpoint's path below $ECS_AGENT_URI.
const StatePath = "/task-protection/v1/state"

// Defaults for the zero Options fields.
const (
	// DefaultExpires is the protection asked for with each renewal: long
	// enough to outlast a few missed renewals, short enough that a task
	// that hangs does not block scale-in and deployments for long.
	DefaultExpires = 15 * time.Minute
	// DefaultReleaseAfter is how long the task must hold no association
	// before protection is released: a PACS pauses between studies.
	DefaultReleaseAfter = 2 * time.Minute
	// maxExpires is the endpoint's upper bound (48 hours).
	maxExpires = 2880 * time.Minute
	// maxBackoff spaces retries (and their log lines) of a failing endpoint.
	maxBackoff = time.Minute
)

// Options configure a Protector.
type Options struct {
	// AgentURI is $ECS_AGENT_URI, injected by ECS into every container.
	AgentURI string
	// Expires is the protection requested by each PUT, in whole minutes
	// from 1 to 2,880; default DefaultExpires.
	Expires time.Duration
	// Renew is how often protection is renewed while busy; default a third
	// of Expires.
	Renew time.Duration
	// ReleaseAfter is how long without associations before protection is
	// released; default DefaultReleaseAfter.
	ReleaseAfter time.Duration
	Client       *http.Client // default: 10 s timeout
	Logger       *slog.Logger
	// Metrics, when set, receives dicom_ingest_task_protected,
	// dicom_ingest_task_protection_updates_total{state} and
	// dicom_ingest_task_protection_failures_total.
	Metrics prometheus.Registerer
}

// Protector is a dicomnet.Observer that counts established associations
// and, from its own goroutine (Run), keeps the task protected while there
// are any.
type Protector struct {
	url          string
	expires      time.Duration
	renew        time.Duration
	releaseAfter time.Duration
	client       *http.Client
	log          *slog.Logger

	active atomic.Int64
	wake   chan struct{}

	protected prometheus.Gauge
	updates   *prometheus.CounterVec
	failures  prometheus.Counter
}

var _ dicomnet.Observer = (*Protector)(nil)

// New checks opts and returns a Protector; call Run to start it.
func New(opts Options) (*Protector, error) {
	if opts.AgentURI == "" {
		return nil, errors.New("taskprotection: no ECS agent URI")
	}
	if opts.Expires == 0 {
		opts.Expires = DefaultExpires
	}
	if opts.Expires < time.Minute || opts.Expires > maxExpires || opts.Expires%time.Minute != 0 {
		return nil, fmt.Errorf("taskprotection: expiry %v is not a whole number of minutes from 1 to 2880", opts.Expires)
	}
	if opts.Renew <= 0 {
		opts.Renew = opts.Expires / 3
	}
	if opts.Renew >= opts.Expires {
		return nil, fmt.Errorf("taskprotection: renewal every %v does not come before the %v expiry", opts.Renew, opts.Expires)
	}
	if opts.ReleaseAfter <= 0 {
		opts.ReleaseAfter = DefaultReleaseAfter
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Protector{
		url: strings.TrimSuffix(opts.AgentURI, "/") + StatePath, expires: opts.Expires, renew: opts.Renew,
		releaseAfter: opts.ReleaseAfter, client: opts.Client, log: opts.Logger.With("component", "task-protection"),
		wake: make(chan struct{}, 1),
		protected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricnames.TaskProtected, Help: "1 while the task holds ECS scale-in protection (as last set by the SCP).",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicom_ingest_task_protection_updates_total", Help: "Scale-in protection set (enabled, renewals included) or released (disabled).",
		}, []string{"state"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricnames.TaskProtectionFailures, Help: "Failed calls to the ECS agent's task protection endpoint (each is retried).",
		}),
	}
	for _, state := range []string{stateEnabled, stateDisabled} {
		p.updates.WithLabelValues(state) // at 0 from the start: the first one is an increase
	}
	if opts.Metrics != nil {
		for _, c := range []prometheus.Collector{p.protected, p.updates, p.failures} {
			if err := opts.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("taskprotection: register metrics: %w", err)
			}
		}
	}
	return p, nil
}

// ObserveAssociation implements dicomnet.Observer: it counts associations
// and wakes Run; it never waits.
func (p *Protector) ObserveAssociation(ev dicomnet.Event) {
	switch ev.Type {
	case dicomnet.EventAccepted:
		p.active.Add(1)
	case dicomnet.EventReleased, dicomnet.EventAborted:
		p.active.Add(-1)
	default:
		return
	}
	select {
	case p.wake <- struct{}{}:
	default: // Run is already due to look
	}
}

// Run keeps protection in step with the associations until ctx ends.
func (p *Protector) Run(ctx context.Context) {
	var (
		protected          bool
		renewAt, idleSince time.Time
		retryAt            time.Time
		backoff            time.Duration
		failing            bool
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var act, want bool
		var next time.Time // when to look again without a wake-up; zero = only on wake-up
		if p.active.Load() > 0 {
			idleSince = time.Time{}
			if !protected || !now.Before(renewAt) {
				act, want = true, true
			} else {
				next = renewAt
			}
		} else {
			if idleSince.IsZero() {
				idleSince = now
			}
			if protected {
				if releaseAt := idleSince.Add(p.releaseAfter); !now.Before(releaseAt) {
					act, want = true, false
				} else {
					next = releaseAt
				}
			}
		}
		if act && now.Before(retryAt) {
			act, next = false, retryAt
		}
		if act {
			err := p.put(ctx, want)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.failures.Inc()
				backoff = min(max(2*backoff, time.Second), maxBackoff)
				retryAt = time.Now().Add(backoff)
				if !failing {
					p.log.Warn("scale-in protection not updated; retrying", "protect", want, "err", err)
				} else {
					p.log.Debug("scale-in protection retry failed", "protect", want, "err", err, "next_in", backoff)
				}
				failing = true
				continue
			}
			if failing {
				p.log.Info("scale-in protection updated again")
			}
			failing, backoff, retryAt = false, 0, time.Time{}
			if want {
				if !protected {
					p.log.Info("scale-in protection enabled", "expires_in", p.expires.String())
				}
				renewAt = time.Now().Add(p.renew)
				p.updates.WithLabelValues(stateEnabled).Inc()
				p.protected.Set(1)
			} else {
				p.log.Info("scale-in protection released", "idle_for", time.Since(idleSince).Round(time.Second).String())
				p.updates.WithLabelValues(stateDisabled).Inc()
				p.protected.Set(0)
			}
			protected = want
			continue
		}
		var tc <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-tc:
		}
		timer.Stop()
	}
}

// stateRequest is the endpoint's PUT body.
type stateRequest struct {
	ProtectionEnabled bool
	ExpiresInMinutes  *int `json:",omitempty"`
}

// agentAnswer is what the endpoint says when it refuses: an error (the
// agent or the ECS API failed) or a failure (ECS refused for this task).
type agentAnswer struct {
	Error *struct {
		Code, Message string
	} `json:"error"`
	Failure *struct {
		Reason, Detail string
	} `json:"failure"`
}

// put sets protection on or off.
func (p *Protector) put(ctx context.Context, enabled bool) error {
	body := stateRequest{ProtectionEnabled: enabled}
	if enabled {
		m := int(p.expires / time.Minute)
		body.ExpiresInMinutes = &m
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("taskprotection: encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("taskprotection: request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("taskprotection: put: %w", err)
	}
	defer resp.Body.Close()
	answer, readErr := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	why := strings.TrimSpace(string(answer))
	var a agentAnswer
	if readErr == nil && json.Unmarshal(answer, &a) == nil {
		switch {
		case a.Error != nil:
			why = a.Error.Code + ": " + a.Error.Message
		case a.Failure != nil:
			why = a.Failure.Reason + ": " + a.Failure.Detail
		}
	}
	return fmt.Errorf("taskprotection: put: %s: %s", resp.Status, why)
}

// The states of dicom_ingest_task_protection_updates_total.
const (
	stateEnabled  = "enabled"
	stateDisabled = "disabled"
)
