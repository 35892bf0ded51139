package commands

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/safetext"
	"github.com/krbops/krbops/rotate"
)

// Defaults of the batch flags. Three failures stop a cluster: one could be
// a single broken keytab, three in one fault domain is the domain; and at
// most three of its rotations run at once, so no more can fail.
const (
	defaultBatchConcurrency = 4
	defaultMaxFailures      = 3
)

// batchFlags adds rotate's --targets flags: --targets and --concurrency
// to rotate and rotate finish, the rest to rotate only.
func (o *RotateOptions) batchFlags(persistent, local *pflag.FlagSet) {
	persistent.StringVar(&o.Targets, "targets", "", "rotate every principal of FILE: CSV with a header principal,keytab,role,cluster[,secret][,backend] or JSON lines; owned by you or root, not group/world writable")
	persistent.IntVar(&o.Concurrency, "concurrency", defaultBatchConcurrency, "--targets: rotations at once")
	local.BoolVar(&o.Wait, "wait", false, "--targets: a target whose (cluster, role) window is full waits until it opens (otherwise it is reported deferred until then)")
	local.IntVar(&o.MaxFailuresPerCluster, "max-failures-per-cluster", defaultMaxFailures, "--targets: after N failed targets in a cluster no further rotation starts there (at most N of its rotations run at once)")
}

// batchOnly names the single-rotation flags --targets replaces.
var batchConflicts = []string{"principal", "keytab", "role", "cluster", "secret", "resume", "dry-run"}

// validateBatch reads and checks every target before anything starts:
// each target's options are the flags with its line's values, its policy
// resolved as for a single rotation. Any problem is exit 2 naming the
// file and line.
func (o *RotateOptions) validateBatch(fl *pflag.FlagSet) error {
	for _, name := range batchConflicts {
		if fl.Changed(name) {
			return usageError(fmt.Errorf("--%s and --targets exclude each other", name), "the targets file gives principal, keytab, role, cluster and secret per line; a batch resumes by running it again")
		}
	}
	if err := o.checkBatchFlags(fl); err != nil {
		return err
	}
	pol, err := o.loadPolicy()
	if err != nil {
		return err
	}
	o.policy = pol
	if o.SecretStore == "" && pol != nil && pol.SecretStore.Set {
		o.SecretStore = pol.SecretStore.V
	}
	if o.SecretStore == "" {
		return usageError(errors.New("--secret-store is required"), "for example --secret-store file:///var/lib/krbops/keytabs")
	}
	for _, p := range o.Deny {
		if err := rotate.ValidDenyPattern(p); err != nil {
			return usageError(fmt.Errorf("--deny %q: %w", p, err), "a path.Match pattern such as 'svc-pay*' or '*@OTHER.REALM'")
		}
	}
	if pol != nil {
		for _, p := range pol.Deny {
			o.Deny = append(o.Deny, p.Text)
		}
	}
	ts, err := ReadRotateTargets(o.Targets, o.targetsRealm())
	if err != nil {
		return err
	}
	o.batch = nil
	for _, t := range ts {
		to := o.forTarget(t)
		if p, denied := rotate.Denied(to.Principal, to.Deny); denied {
			return usageError(fmt.Errorf("--targets %s:%d: field principal: refusing to rotate %s: it matches the deny pattern %s", o.Targets, t.Line, safetext.Line(t.Principal), p),
				"remove the line; nothing was changed")
		}
		if err := to.checkNew(fl); err != nil {
			return fault.New(fault.ClassOf(err), fmt.Errorf("--targets %s:%d (%s): %w", o.Targets, t.Line, safetext.Line(t.Principal), err), fault.HintOf(err))
		}
		if len(o.batch) > 0 && to.LedgerPath != o.batchLedger() {
			return usageError(fmt.Errorf("--targets %s:%d: %s resolves to ledger %s, the batch uses %s", o.Targets, t.Line, safetext.Line(t.Principal), to.LedgerPath, o.batchLedger()),
				"one batch writes one ledger: pass --ledger")
		}
		o.batch = append(o.batch, to)
	}
	o.batchID = batchID(ts)
	return o.confirmUnlessDry(fmt.Sprintf("rotate the %d principals of %s", len(ts), o.Targets))
}

// batchLedger is the ledger of the first target: every target must use it.
func (o *RotateOptions) batchLedger() string {
	if len(o.batch) > 0 {
		return o.batch[0].LedgerPath
	}
	return ""
}

func (o *RotateOptions) checkBatchFlags(fl *pflag.FlagSet) error {
	switch {
	case o.Concurrency < 1:
		return usageError(fmt.Errorf("--concurrency must be at least 1, not %d", o.Concurrency), "")
	case o.MaxFailuresPerCluster < 1:
		return usageError(fmt.Errorf("--max-failures-per-cluster must be at least 1, not %d", o.MaxFailuresPerCluster), "")
	}
	return nil
}

// targetsRealm is the realm a target's principal without one gets: --realm,
// else default_realm; "" when neither is known (the target's own checks
// then report it).
func (o *RotateOptions) targetsRealm() string {
	if o.Realm != "" {
		return o.Realm
	}
	cfg, err := o.krb5Config()
	if err != nil {
		return ""
	}
	realm, _ := cfg.DefaultRealm("")
	return realm
}

// forTarget is a copy of the options with target t's values in place of
// the single-rotation flags.
func (o *RotateOptions) forTarget(t RotateTarget) *RotateOptions {
	to := *o
	to.batch = nil
	to.Principal, to.Keytab, to.Role, to.Cluster, to.Secret = t.Principal, t.Keytab, t.Role, t.Cluster, t.Secret
	to.targetBackend = t.Backend
	if t.Backend != "" {
		to.Backend = t.Backend
	}
	to.Deny = slices.Clone(o.Deny)
	to.KDCLogs = slices.Clone(o.KDCLogs)
	return &to
}

// batchID names a batch by its targets: the same file run again is the
// same batch, so its finished targets are skipped.
func batchID(ts []RotateTarget) string {
	data, _ := json.Marshal(ts)
	sum := sha256.Sum256(data)
	return "batch-" + hex.EncodeToString(sum[:8])
}

// batch builds the domain batch over the resolved targets and one shared
// ledger.
func (o *RotateOptions) newBatch(ctx context.Context) (*rotate.Batch, func(), error) {
	first := *o.batch[0]
	led, err := first.openLedger(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	b := &rotate.Batch{ID: o.batchID, Concurrency: o.Concurrency, MaxFailures: o.MaxFailuresPerCluster, Wait: o.Wait,
		Ledger: led, JournalDir: o.JournalDir}
	for _, to := range o.batch {
		b.Targets = append(b.Targets, rotate.BatchTarget{Principal: to.Principal, Cluster: to.Cluster})
	}
	logins := loginIndexes(time.Now())
	b.Rotation = func(ctx context.Context, i int) (*rotate.Rotation, func(), error) {
		to := *o.batch[i]
		to.sharedLedger = led
		r, closeFn, err := to.rotation(ctx)
		if err != nil {
			return nil, nil, err
		}
		if r.Role.LogsIn() {
			r.Logins = logins(to.KDCLogs)
		}
		// The ledger records carry the batch's id: what a run again
		// recognises as done.
		r.CorrelationID, r.AdmissionDecides = o.batchID, true
		return r, closeFn, nil
	}
	b.OnTarget, o.endProgress = o.batchProgress()
	return b, func() { led.Close() }, nil
}

func rotateBatchRun(ctx context.Context, o *RotateOptions) error {
	b, closeFn, err := o.newBatch(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	ropts := o.runOptions()
	ropts.OnStep = nil // a batch's progress is the counter line
	rep := b.Run(ctx, ropts)
	o.endProgress()
	return o.renderReport(rep)
}

func rotateFinishBatchRun(ctx context.Context, o *RotateOptions) error {
	b, closeFn, err := o.newBatch(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	ropts := o.runOptions()
	ropts.OnStep = nil
	rep := b.Finish(ctx, ropts, o.Force)
	o.endProgress()
	return o.renderReport(rep)
}

// validateFinishBatch reads the targets of rotate finish --targets: the
// same file as the batch; only its servers have a phase 2.
func (o *RotateOptions) validateFinishBatch(fl *pflag.FlagSet) error {
	if fl.Changed("principal") || fl.Changed("keytab") {
		return usageError(errors.New("--principal/--keytab and --targets exclude each other"), "")
	}
	if o.SecretStore == "" {
		return usageError(errors.New("rotate finish --targets needs --secret-store"), "use the values of phase 1")
	}
	if o.Concurrency < 1 {
		return usageError(fmt.Errorf("--concurrency must be at least 1, not %d", o.Concurrency), "")
	}
	ts, err := ReadRotateTargets(o.Targets, o.targetsRealm())
	if err != nil {
		return err
	}
	o.MaxFailuresPerCluster = len(ts) // phase 2 of one server does not endanger another
	for _, t := range ts {
		o.batch = append(o.batch, o.forTarget(t))
	}
	o.batchID = batchID(ts)
	if o.Yes || o.DryRun {
		return nil
	}
	return confirm(o, fmt.Sprintf("publish only the new kvno of the servers in %s", o.Targets))
}

// progressEvery throttles the batch's progress line: a thousand targets
// must not mean a thousand redraws.
const progressEvery = 500 * time.Millisecond

// batchProgress is the progress line on a terminal's stderr: done,
// deferred, failed per cluster, rate and ETA; nil when stderr is not a
// terminal, with --quiet, or with machine-readable output. end ends a
// line an interrupted batch left open.
func (o *RotateOptions) batchProgress() (update func(rotate.BatchProgress), end func()) {
	if !o.IO.ErrTTY || o.Quiet || o.machineReadable() {
		return nil, func() {}
	}
	var mu sync.Mutex
	var last time.Time
	open := false
	update = func(p rotate.BatchProgress) {
		mu.Lock()
		defer mu.Unlock()
		done := p.Done()
		now := time.Now()
		if done < p.Total && now.Sub(last) < progressEvery {
			return
		}
		last = now
		writeBatchProgress(o.IO.ErrOut, p, now)
		open = done < p.Total
	}
	end = func() {
		mu.Lock()
		defer mu.Unlock()
		if open {
			fmt.Fprintln(o.IO.ErrOut)
		}
	}
	return update, end
}

func writeBatchProgress(w io.Writer, p rotate.BatchProgress, now time.Time) {
	done := p.Done()
	var b strings.Builder
	fmt.Fprintf(&b, "\rrotate: %d/%d", done, p.Total)
	clusters := make([]string, 0, len(p.Clusters))
	for c := range p.Clusters {
		clusters = append(clusters, c)
	}
	slices.Sort(clusters)
	for _, c := range clusters {
		n := p.Clusters[c]
		fmt.Fprintf(&b, " | %s: %d done, %d deferred, %d failed", safetext.Line(c),
			n[rotate.OutcomeRotated]+n[rotate.OutcomeDone], n[rotate.OutcomeDeferred], n[rotate.OutcomeFailed]+n[rotate.OutcomeSkipped])
	}
	if el := now.Sub(p.Started).Seconds(); el > 0 && done > 0 {
		rate := float64(done) / el
		eta := time.Duration(float64(p.Total-done) / rate * float64(time.Second)).Round(time.Second)
		fmt.Fprintf(&b, " | %.1f/s, ETA %s", rate, eta)
	}
	if done == p.Total {
		b.WriteString("\n")
	}
	io.WriteString(w, b.String())
}

// loginIndexes reads each set of KDC logs once, as of the batch's start,
// for every target that uses it; nil (each rotation reads the logs and
// reports the problem itself) when they cannot be read.
func loginIndexes(start time.Time) func([]string) *rotate.Logins {
	var mu sync.Mutex
	idx := map[string]*rotate.Logins{}
	return func(paths []string) *rotate.Logins {
		key := strings.Join(paths, "\x00")
		mu.Lock()
		defer mu.Unlock()
		if l, ok := idx[key]; ok {
			return l
		}
		l, err := rotate.IndexLogins(paths, start)
		if err != nil {
			l = nil
		}
		idx[key] = l
		return l
	}
}
