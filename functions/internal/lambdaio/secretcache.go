package lambdaio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// secretCache is the one rule of what a function makes of its secrets (the commitment function's client
// certificates, the audit feed's TLS client configuration), kept for its execution environment by key: made on first
// use and kept for maxAge, then made again; at once after forget (a failed handshake: the secret may have been
// rotated). A read that fails (Secrets Manager out of reach, a wrong ARN, a grant missing) or finds nothing usable
// (not the form, bad PEM, a key not the certificate's, a certificate not valid now) starts a backoff window
// (ClientSecretRetryFirst after the first failure, doubling to ClientSecretRetryMax, each drawn within
// clientSecretRetryJitter and never longer than ClientSecretRetryMax): within it the failure, and what was made all
// the same (a certificate refused for its dates alone), is returned at once, no call made; the first read that
// succeeds ends the backoff. A read that failed because its caller's context ended says nothing of the secret and
// starts no window. The lock guards the maps alone, never a read: one read in flight per key, which the callers that
// come meanwhile wait on, each until its own context ends.
type secretCache[T any] struct {
	now    func() time.Time
	maxAge func() time.Duration

	mu      sync.Mutex
	made    map[string]madeSecret[T]
	unread  map[string]*unreadSecret[T] // a read that failed, in its backoff window
	reading map[string]*secretRead[T]   // the one read in flight
	gen     map[string]uint64           // bumped by forget; a read begun before records nothing
}

type madeSecret[T any] struct {
	v  T
	at time.Time
}

// unreadSecret is a key whose read failed: the failure (and what was made all the same), returned until the window
// ends, and the backoff that draws the next window.
type unreadSecret[T any] struct {
	v       T
	err     error
	until   time.Time
	backoff *backoff.ExponentialBackOff
}

// error is the read's failure as every caller of the window gets it, in the same words.
func (u *unreadSecret[T]) error() error {
	return fmt.Errorf("%w (not read again before %s)", u.err, u.until.UTC().Format(time.RFC3339))
}

// secretRead is a read in flight, and its outcome once done is closed, shared by the callers that waited on it;
// ctxEnded: it failed because the context of the caller that read ended; gen: the key's generation when the read
// began (forgotten since: what it finds is its waiters' alone, not recorded).
type secretRead[T any] struct {
	done     chan struct{}
	gen      uint64
	v        T
	err      error
	ctxEnded bool
}

// secretReader reads a key's secrets and makes its value: readErr when a secret could not be read, useErr when what
// was read is not usable (v returned all the same when it is usable in part: a certificate refused for its dates).
type secretReader[T any] func(ctx context.Context) (v T, readErr, useErr error)

func newSecretCache[T any](now func() time.Time, maxAge func() time.Duration) *secretCache[T] {
	return &secretCache[T]{now: now, maxAge: maxAge, made: map[string]madeSecret[T]{}, unread: map[string]*unreadSecret[T]{},
		reading: map[string]*secretRead[T]{}, gen: map[string]uint64{}}
}

// get returns key's value: the one made before while it lasts, the failure of its backoff window while that lasts, or
// else read now (within ctx). windowStarted, called once per window (under the lock), logs it.
func (c *secretCache[T]) get(ctx context.Context, key string, read secretReader[T], windowStarted func(wait time.Duration, readErr, useErr error)) (T, error) {
	for {
		c.mu.Lock()
		if v, err, ok := c.known(key); ok {
			c.mu.Unlock()
			return v, err
		}
		f := c.reading[key]
		if f == nil {
			// This caller reads it, in its own goroutine and within its own context: no read outlives the caller
			// that made it (a goroutine left reading would be frozen with the execution environment).
			f = &secretRead[T]{done: make(chan struct{}), gen: c.gen[key]}
			c.reading[key] = f
			c.mu.Unlock()
			c.read(ctx, key, f, read, windowStarted)
			return f.v, f.err
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("secret %s not read before the caller's end: %w", key, ctx.Err())
		case <-f.done:
			if f.ctxEnded && ctx.Err() == nil {
				// The read was another caller's, whose context ended: it said nothing of the secret; read it
				// again for this one.
				continue
			}
			return f.v, f.err
		}
	}
}

// known is the value made before and within maxAge, or the failure of the key's backoff window; ok false: neither,
// the secret is to be read. c.mu is held.
func (c *secretCache[T]) known(key string) (T, error, bool) {
	if m, ok := c.made[key]; ok && c.now().Sub(m.at) < c.maxAge() {
		return m.v, nil, true
	}
	if u := c.unread[key]; u != nil && c.now().Before(u.until) {
		return u.v, u.error(), true
	}
	var zero T
	return zero, nil, false
}

// read reads the secret and records what it found (the value, or the failure and its backoff window) and in f,
// whose waiters it then lets go, in one step under c.mu: a caller coming after finds the outcome, never a read ended
// and none recorded. A read that panics lets its waiters go with an error and is no longer in flight: the next
// caller reads again. A read begun before a forget records nothing (it may have found the secret before a
// rotation): its waiters alone get what it found.
func (c *secretCache[T]) read(ctx context.Context, key string, f *secretRead[T], read secretReader[T], windowStarted func(time.Duration, error, error)) {
	ended := false
	defer func() {
		if !ended { // panicking: the panic goes on once the read is released
			c.mu.Lock()
			defer c.mu.Unlock()
			f.err = fmt.Errorf("secret %s: the read panicked", key)
			c.release(key, f)
		}
	}()
	v, readErr, useErr := read(ctx)
	ended = true
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.release(key, f)
	switch {
	case readErr != nil && ctx.Err() != nil:
		// The caller's own context ended (the invocation's deadline): the read said nothing of the secret, so
		// the next caller reads it again rather than wait out a window.
		f.err, f.ctxEnded = readErr, true
	case c.gen[key] != f.gen:
		// Forgotten while in flight: its waiters get what it found, the next caller reads the secret again.
		f.v, f.err = v, errors.Join(readErr, useErr)
	case readErr != nil || useErr != nil:
		u := c.unread[key]
		if u == nil {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.Multiplier, b.RandomizationFactor = ClientSecretRetryFirst, ClientSecretRetryMax, 2, clientSecretRetryJitter
			u = &unreadSecret[T]{backoff: b}
			c.unread[key] = u
		}
		// The backoff caps the interval its jitter is drawn around, not the window drawn: cap that too, so that a
		// secret fixed is read within ClientSecretRetryMax, as the docs say.
		wait := min(u.backoff.NextBackOff(), ClientSecretRetryMax)
		u.v, u.err, u.until = v, errors.Join(readErr, useErr), c.now().Add(wait)
		if readErr != nil {
			var zero T
			u.v = zero
		}
		delete(c.made, key)
		if windowStarted != nil {
			windowStarted(wait, readErr, useErr)
		}
		f.v, f.err = u.v, u.error()
	default:
		delete(c.unread, key)
		c.made[key] = madeSecret[T]{v: v, at: c.now()}
		f.v = v
	}
}

// release ends f's read: no longer in flight, its waiters let go. c.mu is held.
func (c *secretCache[T]) release(key string, f *secretRead[T]) {
	if c.reading[key] == f {
		delete(c.reading, key)
	}
	close(f.done)
}

// forget drops the value made for key (a failed handshake: the secret may have been rotated), so that it is read
// again on its next use. A backoff window stays: a secret that failed is not read again before it ends. A read begun
// before is not joined, and records nothing when it ends: the next use reads anew.
func (c *secretCache[T]) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.made, key)
	delete(c.reading, key)
	c.gen[key]++
}

// KeptSecret is what a function makes of its secrets (the audit feed's TLS client configuration) kept by the rule
// of every secret a function keeps (secretCache, the commitment function's client certificates' too): made by Read
// on first use, kept for MaxAge (default ClientCredentialMaxAge), made again after it or after Forget (a failed
// handshake: a secret may have been rotated); a read that fails, or makes nothing usable, is not made again before
// its backoff window ends, WindowStarted told once per window. Safe for concurrent use; set the fields before the
// first Get.
type KeptSecret[T any] struct {
	// Read reads the secrets, each within ctx and KeyReadTimeout (ReadSecrets), and makes the value: readErr when
	// a secret could not be read, useErr when what was read is not usable (the value with it when it is usable all
	// the same: a client certificate refused for its dates alone).
	Read func(ctx context.Context) (v T, readErr, useErr error)
	// WindowStarted, when set, is told of each backoff window: its length and the failure.
	WindowStarted func(wait time.Duration, readErr, useErr error)
	MaxAge        time.Duration
	Now           func() time.Time

	once  sync.Once
	cache *secretCache[T]
}

const keptSecretKey = "kept"

func (k *KeptSecret[T]) init() {
	k.once.Do(func() {
		k.cache = newSecretCache[T](func() time.Time {
			if k.Now != nil {
				return k.Now()
			}
			return time.Now()
		}, func() time.Duration {
			if k.MaxAge <= 0 {
				return ClientCredentialMaxAge
			}
			return k.MaxAge
		})
	})
}

// Get is the value: kept, the failure of its backoff window, or made now within ctx.
func (k *KeptSecret[T]) Get(ctx context.Context) (T, error) {
	k.init()
	return k.cache.get(ctx, keptSecretKey, k.Read, k.WindowStarted)
}

// Forget has the value made again at its next Get, unless within a backoff window.
func (k *KeptSecret[T]) Forget() {
	k.init()
	k.cache.forget(keptSecretKey)
}
