package rotate

import (
	"context"
	"sync"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// ClockSampleMaxAge is how long a batch reuses one KDC's clock sample for
// its targets' preflight.clock. A KDC's offset from this host moves by
// clock drift (parts per million), far below clockskew in minutes; a
// batch running longer probes again.
const ClockSampleMaxAge = 5 * time.Minute

// clockCache shares one clock sample per KDC among a batch's targets, so
// a batch of N principals probes each KDC once per ClockSampleMaxAge
// instead of N times. Targets that start together wait for the one probe
// in flight; a failed probe is not kept, so the next target probes again.
type clockCache struct {
	now func() time.Time
	mu  sync.Mutex
	kdc map[string]*cachedClock
}

type cachedClock struct {
	mu     sync.Mutex // held while this KDC is probed
	sample *kdcops.ClockSample
	at     time.Time
}

func newClockCache(now func() time.Time) *clockCache {
	return &clockCache{now: now, kdc: map[string]*cachedClock{}}
}

// probe returns a KDC clock prober for realm backed by the cache; fetch
// takes a sample when the cache has none fresh.
func (c *clockCache) probe(realm string, fetch func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error)) func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
	return func(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
		key := realm + "\x00" + k.Entry
		c.mu.Lock()
		e := c.kdc[key]
		if e == nil {
			e = &cachedClock{}
			c.kdc[key] = e
		}
		c.mu.Unlock()
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.sample == nil || c.now().Sub(e.at) >= ClockSampleMaxAge {
			s, err := fetch(ctx, k)
			if err != nil {
				return nil, err
			}
			e.sample, e.at = s, c.now()
		}
		s := *e.sample
		return &s, nil
	}
}

// quickClockProbe is the probe a single rotation's preflight.clock sends
// (one AS-REQ, no refinement).
func (r *Rotation) quickClockProbe(ctx context.Context, k kdcops.KDC) (*kdcops.ClockSample, error) {
	return kdcops.ProbeClock(ctx, r.Config, k, r.Realm, r.Principal, kdcops.ProbeOptions{
		Timeout: r.Timeout, Log: r.Log, Target: kdcops.DefaultTarget,
	})
}
