// Package keeper keeps a TGT fresh in a private credential cache for a
// child process (krbops exec, k5start -K, Hadoop's perpetual login): it
// logs in from the keytab (read again at every login, see keylogin),
// writes the TGT into a FILE: ccache only the caller can read, renews
// the ticket where renewal suffices and logs in again before the margin,
// and retries a failed refresh with backoff while the ticket held is
// still valid. It never prints: every event goes to the forensic log.
// Start with [New], [Keeper.Start] and [Keeper.Run].
package keeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/kdcops/keylogin"
)

// Options configure New.
type Options struct {
	Login *keylogin.Login
	// Dir is where the private cache directory is made (mode 0700, a
	// fresh name: nothing there is followed or reused).
	Dir string
	// Margin: refresh when the ticket has less than this left. A ticket
	// no longer than Margin is refreshed at half its lifetime instead.
	Margin time.Duration
	// RetryMin and RetryMax bound the backoff between failed refreshes
	// (defaults 1s and 1m); a retry is never later than the ticket's end.
	RetryMin, RetryMax time.Duration
	Log                *slog.Logger
}

// Keeper holds one TGT in one private cache.
type Keeper struct {
	o    Options
	dir  string
	path string

	mu sync.Mutex
	t  *keylogin.Ticket
}

// New prepares a keeper; Start makes its directory and logs in.
func New(o Options) *Keeper {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Minute
	}
	return &Keeper{o: o}
}

// Path is the cache file (for KRB5CCNAME=FILE:<Path>), once Start returned.
func (k *Keeper) Path() string { return k.path }

// Ticket is the TGT in the cache now.
func (k *Keeper) Ticket() *keylogin.Ticket {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.t
}

// Start makes the private directory, logs in and writes the cache. Its
// error is the login's (*keylogin.Error) or the directory's.
func (k *Keeper) Start(ctx context.Context) error {
	parent := k.o.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	// Another error (a missing directory) is MkdirTemp's to report.
	if err := durable.TrustTempParent(parent); errors.Is(err, durable.ErrUntrusted) {
		return fmt.Errorf("ccache directory %w", err) // err names parent
	}
	dir, err := os.MkdirTemp(parent, "krbops-exec-")
	if err != nil {
		return fmt.Errorf("ccache directory in %s: %w", k.o.Dir, err)
	}
	// MkdirTemp makes it 0700; a umask cannot widen that, but say it.
	if err := os.Chmod(dir, 0o700); err != nil {
		os.Remove(dir)
		return err
	}
	k.dir, k.path = dir, filepath.Join(dir, "krb5cc")
	t, err := k.o.Login.Login(ctx, "initial")
	if err != nil {
		return err
	}
	return k.install(ctx, t)
}

func (k *Keeper) install(ctx context.Context, t *keylogin.Ticket) error {
	b, err := kdcops.MarshalCCache(t.CName, t.Realm, []kdcops.CCacheCred{{
		Client: t.CName, ClientRealm: t.Realm, Server: t.Part.SName, ServerRealm: t.Part.SRealm,
		Key: t.Part.Key, AuthTime: t.Part.AuthTime, StartTime: t.Part.StartTime, EndTime: t.Part.EndTime,
		RenewTill: t.Part.RenewTill, Flags: kdcops.TicketFlagsWord(t.Part.Flags.Bytes), Addresses: t.Part.CAddr,
		Ticket: mustMarshal(t),
	}})
	if err != nil {
		return err
	}
	// Replaced in one rename: the child never reads a half-written
	// cache, and a kvno the child wrote into the old one is dropped with
	// it (it gets that service ticket again from the new TGT).
	if err := durable.WriteFile(k.path, b, 0o600, nil); err != nil {
		k.o.Log.LogAttrs(ctx, slog.LevelError, "ccache write error", slog.String("ccache", k.path), slog.String("error", err.Error()))
		return fmt.Errorf("ccache %s: %w", k.path, err)
	}
	k.mu.Lock()
	k.t = t
	k.mu.Unlock()
	k.o.Log.LogAttrs(ctx, slog.LevelInfo, "ccache written", slog.String("ccache", k.path), slog.String("principal", t.Principal),
		slog.Time("end_time", t.Part.EndTime), slog.Bool("fallback", t.Fallback))
	return nil
}

func mustMarshal(t *keylogin.Ticket) []byte {
	b, err := t.Ticket.Marshal()
	if err != nil {
		// A ticket the KDC sent and gokrb5 decoded always re-encodes.
		panic("keeper: ticket does not marshal: " + err.Error())
	}
	return b
}

// threshold is the remaining lifetime below which the ticket is
// refreshed.
func (k *Keeper) threshold(t *keylogin.Ticket) time.Duration {
	if life := t.Lifetime(); life > 0 && life <= k.o.Margin {
		return life / 2
	}
	return k.o.Margin
}

// Run keeps the ticket fresh until ctx is done. When a refresh fails and
// the ticket held has really expired, expired is called (once per
// ticket); Run goes on trying, so a KDC that comes back restores the
// cache.
func (k *Keeper) Run(ctx context.Context, expired func()) {
	attempt := 0
	var expiredFor *keylogin.Ticket
	for {
		t := k.Ticket()
		now := time.Now()
		wait := t.Part.EndTime.Add(-k.threshold(t)).Sub(now)
		if attempt > 0 {
			wait = min(k.o.RetryMin<<min(attempt-1, 16), k.o.RetryMax)
			if left := t.Part.EndTime.Sub(now); left > 0 && left < wait {
				// Wake at the end of the ticket to say it expired.
				wait = left
			}
		}
		if !sleep(ctx, wait) {
			return
		}
		err := k.refresh(ctx, t)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			attempt = 0
			continue
		}
		attempt++
		left := time.Until(t.Part.EndTime)
		k.o.Log.LogAttrs(ctx, slog.LevelWarn, "ticket refresh failed", slog.String("principal", t.Principal), slog.Int("attempt", attempt),
			slog.String("error", err.Error()), slog.Float64("remaining_seconds", max(left, 0).Seconds()))
		if left <= 0 && expiredFor != t {
			expiredFor = t
			k.o.Log.LogAttrs(ctx, slog.LevelError, "ticket expired", slog.String("principal", t.Principal), slog.Time("end_time", t.Part.EndTime))
			if expired != nil {
				expired()
			}
		}
	}
}

// refresh renews t when a renewal reaches past the margin (no keytab, no
// pre-authentication), else logs in again from the keytab.
func (k *Keeper) refresh(ctx context.Context, t *keylogin.Ticket) error {
	now := time.Now()
	if t.Renewable(now) && t.Part.RenewTill.Sub(now) > 2*k.threshold(t) {
		n, err := k.o.Login.Renew(ctx, t)
		if err == nil {
			return k.install(ctx, n)
		}
		var e *keylogin.Error
		if errors.As(err, &e) && e.Unreachable {
			return err
		}
		// The KDC refused the renewal (a ticket past its renew-till, a
		// policy): a fresh login may still work.
	}
	reason := "margin"
	if !now.Before(t.Part.EndTime) {
		reason = "expiry"
	}
	n, err := k.o.Login.Login(ctx, reason)
	if err != nil {
		return err
	}
	return k.install(ctx, n)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close removes the cache and its private directory.
func (k *Keeper) Close() error {
	if k.dir == "" {
		return nil
	}
	err := os.RemoveAll(k.dir)
	k.dir = ""
	return err
}
