// Package keytabpull holds the host side of a rotation: [Pull] installs
// the secret store's keytab on a host once the KDC has proved it works,
// and [Prune] removes kvnos a keytab no longer needs without ever removing
// the one the KDC issues tickets under. Both are runbooks with stable step
// ids; neither prints.
package keytabpull

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/internal/shquote"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/rotate"
	"github.com/krbops/krbops/runbook"
	"github.com/krbops/krbops/secretstore"
)

// Step ids of the pull runbook, in order.
const (
	StepPullKeytab  = "pull.keytab"
	StepPullFetch   = "pull.fetch"
	StepPullAS      = "pull.as"
	StepPullAP      = "pull.ap"
	StepPullInstall = "pull.install"
)

// MaxKeytabSize bounds a keytab file krbops reads to rewrite: far above
// any real keytab, far below what could hurt.
const MaxKeytabSize = 16 << 20

// KDC is what the runbooks ask the KDC; *kdcops.OnlineClient is one.
type KDC interface {
	LoginPerKVNO(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.Session, []kdcops.LoginAttempt, error)
	ServiceTicket(ctx context.Context, s *kdcops.Session, sname types.PrincipalName) (messages.Ticket, error)
}

// Pull installs one secret's keytab at a path on this host.
type Pull struct {
	Store  secretstore.Store
	Secret string
	// Stage is the version to install: current, or pending for the
	// phase 1 of a server rotation (old and new kvno, new not yet at
	// the KDC).
	Stage  secretstore.Stage
	Keytab string
	// Principal, when set, limits the install to that principal's keys
	// (name@REALM, or a name matching any realm); else every principal
	// of the version.
	Principal string
	// UID and GID set the file's owner and group (-1: keep the existing
	// file's, or this process's for a new file); Mode its permission bits
	// (0: keep, or 0600 for a new file).
	UID, GID int
	Mode     os.FileMode
	// NewKDC returns a fresh client per run (gokrb5 state is not safe to
	// share; a fresh client also sees a key that just changed).
	NewKDC func() KDC
	Log    *slog.Logger
	// LockWait bounds the wait for another krbops rewriting the keytab
	// (0: [durable.DefaultLockWait]).
	LockWait time.Duration

	// What the steps learn, in order.
	guard    guard
	exists   bool
	oldAttrs durable.Attrs
	oldData  []byte
	oldKeys  []kdcops.KeytabEntry // every entry of the existing file, with keys
	version  secretstore.Version
	newKeys  []kdcops.KeytabEntry // the version's entries being installed
	keysSame bool                 // the file already holds exactly newKeys
	attrsOK  bool                 // and the owner, group and mode asked for
	sessions []*kdcops.Session    // one TGT per principal of the version
	asOK     bool                 // the KDC accepted every principal of the version
	proved   bool                 // and their tickets decrypt
	written  bool
	kdc      KDC
}

// Runbook returns the pull checklist.
func (p *Pull) Runbook() runbook.Runbook {
	return runbook.Runbook{Command: "keytab pull", Steps: []runbook.Step{
		{ID: StepPullKeytab, Title: "the keytab's directory is trusted; the existing file is readable", Run: p.stepKeytab},
		{ID: StepPullFetch, Title: "the store's version is a keytab; compared with the file", Needs: []string{StepPullKeytab}, Run: p.stepFetch},
		{ID: StepPullAS, Title: "the KDC accepts the version's kvno (AS exchange)", Needs: []string{StepPullFetch}, Run: p.stepAS},
		// ap and install need fetch only: with the keys already current
		// (as and ap skipped) install may still have to set --owner or
		// --mode. Each checks itself that what it builds on was proved.
		{ID: StepPullAP, Title: "a service ticket to the principal decrypts with the version", Needs: []string{StepPullFetch}, Run: p.stepAP},
		{ID: StepPullInstall, Title: "installed atomically, owner, group and mode kept, old file backed up", Needs: []string{StepPullFetch}, Run: p.stepInstall},
	}}
}

// Changed reports whether the run replaced (or created) the file.
func (p *Pull) Changed() bool { return p.written }

// Run runs the pull checklist and releases the keytab's lock, however
// the run ends.
func (p *Pull) Run(ctx context.Context, opts runbook.Options) *runbook.Report {
	defer p.guard.release()
	return runbook.Run(ctx, p.Runbook(), opts)
}

func (p *Pull) stepKeytab(ctx context.Context, _ *runbook.State) runbook.Result {
	f, res, ok := openKeytab(ctx, p.Keytab, "pull", true, true, p.LockWait)
	if !ok {
		return res
	}
	p.guard = f.guard
	if !f.exists {
		p.oldAttrs = durable.Attrs{Mode: 0o600, UID: -1, GID: -1}
		return runbook.Passf("%s does not exist yet: it will be created", p.Keytab).With(res.Evidence)
	}
	p.exists, p.oldAttrs, p.oldData, p.oldKeys = true, f.attrs, f.data, f.entries
	a := f.attrs
	return runbook.Passf("%s: kvno %v, mode %04o, uid %d, gid %d", p.Keytab, kdcops.KVNOs(f.entries), a.Mode, a.UID, a.GID).With(res.Evidence)
}

// keytabFile is a keytab krbops is about to rewrite, as it was read.
type keytabFile struct {
	guard
	exists  bool
	attrs   durable.Attrs
	data    []byte
	entries []kdcops.KeytabEntry // with keys
}

// guard is what keeps a rewrite from losing another writer's change: the
// keytab's lock, held from the read to the rename, and the file as it
// was read, compared again before the rename (a writer that does not
// take the lock: ktutil, an older krbops, an operator).
type guard struct {
	path   string
	unlock func()
	read   os.FileInfo // nil: the file did not exist
}

func (g *guard) release() {
	if g.unlock != nil {
		g.unlock()
		g.unlock = nil
	}
}

// unchanged reports an error when the file is not the one read: replaced,
// rewritten, created or removed since.
func (g *guard) unchanged() error {
	now, err := os.Lstat(g.path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && g.read == nil:
		return nil
	case err != nil && g.read == nil:
		return err
	case err != nil:
		return fmt.Errorf("it was removed since krbops read it")
	case g.read == nil:
		return fmt.Errorf("it was created since krbops found none")
	case !os.SameFile(g.read, now) || g.read.Size() != now.Size() || !g.read.ModTime().Equal(now.ModTime()):
		return fmt.Errorf("it changed since krbops read it (another writer)")
	}
	return nil
}

// changedResult is the result of a rewrite that found the file changed
// since the read: nothing is written, so the other change is kept.
func changedResult(path string, err error, ev runbook.Evidence) runbook.Result {
	return runbook.Errorf("--keytab %s: %s; nothing was written", path, describe(err)).With(ev).
		WithHint("something rewrote the keytab without krbops' lock (%s): run the command again, it reads the new file", durable.LockPath(path))
}

// openKeytab reads the keytab a command (pull, prune) rewrites, with the
// checks every rewrite needs: its directory is trusted (whoever can write
// it could swap the file between the read and the rename), the file is a
// regular file and not a link, and, when replace, krbops can give a new
// file its owner and group and holds the keytab's lock (released by
// f.release) so another krbops cannot rewrite it between this read and
// the rename. missingOK lets a file that does not exist yet pass. ok
// false: res is the step's failure.
func openKeytab(ctx context.Context, path, verb string, missingOK, replace bool, wait time.Duration) (f keytabFile, res runbook.Result, ok bool) {
	ev := runbook.Evidence{"keytab": path}
	f.path = path
	fail := func(err error, hint string) (keytabFile, runbook.Result, bool) {
		f.release()
		return f, runbook.Usagef("--keytab %s: %s", path, describe(err)).With(ev).WithHint("%s", hint), false
	}
	if err := durable.TrustDir(filepath.Dir(path)); err != nil {
		return fail(err, "keep keytabs in a directory owned by the user running krbops and writable by no one else (e.g. /etc/security/keytabs, 0755 root)")
	}
	if replace {
		if wait <= 0 {
			wait = durable.DefaultLockWait
		}
		unlock, err := durable.Lock(ctx, durable.LockPath(path), "krbops keytab "+verb, wait)
		switch {
		case err == nil:
			f.unlock = unlock
		case ctx.Err() != nil:
			return f, runbook.Errorf("interrupted").With(ev), false
		case errors.Is(err, durable.ErrLocked):
			return f, runbook.Errorf("--keytab %s: %s", path, err).With(ev).
				WithHint("another krbops is rewriting the keytab: let it finish and run again; if it is gone, its lock went with it"), false
		case err != nil:
			return fail(err, "the keytab's lock file must be a regular file owned by the user running krbops")
		}
	}
	a, err := durable.ReadAttrs(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && missingOK:
		return f, runbook.Result{Evidence: ev}, true
	case err != nil:
		return fail(err, "point --keytab at a regular keytab file (not a link)")
	}
	if f.read, err = os.Lstat(path); err != nil {
		return fail(err, "point --keytab at a regular keytab file (not a link)")
	}
	if err := durable.CanReplace(path, a); err != nil && replace {
		return fail(err, "run krbops keytab "+verb+" as root (or as the keytab's owner) so the file keeps its owner and group")
	}
	data, err := readcap.ReadFile(path, MaxKeytabSize)
	if err != nil {
		return fail(err, "point --keytab at a keytab file")
	}
	kt, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		hint := "a damaged keytab is not rewritten"
		if c := shquote.Command("krbops", "klist-lint", "--keytab", path); c != "" {
			hint += ": " + c + " explains the damage"
		}
		return fail(err, hint)
	}
	ev["mode"], ev["uid"], ev["gid"], ev["kvnos"] = fmt.Sprintf("%04o", a.Mode), a.UID, a.GID, kdcops.KVNOs(kt.Entries)
	f.exists, f.attrs, f.data, f.entries = true, a, data, kt.Entries
	return f, runbook.Result{Evidence: ev}, true
}

func (p *Pull) stepFetch(ctx context.Context, _ *runbook.State) runbook.Result {
	ev := runbook.Evidence{"secret": p.Secret, "stage": string(p.Stage)}
	v, err := p.Store.Get(ctx, p.Secret, p.Stage)
	if err != nil {
		hint := secretstore.HintOf(err)
		if hint == "" {
			hint = "check --secret-store and --secret, and that this host may read the secret"
		}
		if errors.Is(err, secretstore.ErrNotFound) && p.Stage == secretstore.StagePending {
			return runbook.Failf("%s has no pending version: no rotation is in phase 1", p.Secret).With(ev).
				WithHint("drop --pending to install the current version")
		}
		// The store's own class decides: a missing secret or bad
		// credentials is configuration (exit 2), a store that does not
		// answer could not complete (exit 3).
		r := runbook.Errorf("%s", err)
		if c := fault.ClassOf(err); c == fault.Usage || c == fault.Unreachable || c == fault.CheckFailed {
			r.Class = c
		}
		return r.With(ev).WithHint("%s", hint)
	}
	p.version = v
	ev["version"] = v.ID
	kt, err := kdcops.ParseKeytab(v.Data, kdcops.KeytabOptions{KeepKeys: true})
	if err != nil {
		return runbook.Failf("secret %s version %s is not a keytab (%s)", p.Secret, v.ID, describeFormat(err)).With(ev).
			WithHint("the store holds something else under this name: check --secret; nothing was installed")
	}
	p.newKeys = selectPrincipal(kt.Entries, p.Principal)
	if len(p.newKeys) == 0 {
		return runbook.Failf("secret %s version %s holds no key for %s (it holds %s)", p.Secret, v.ID, p.Principal, strings.Join(kt.Principals(), ", ")).With(ev).
			WithHint("check --principal against the secret's principals")
	}
	principals := principalsOf(p.newKeys)
	installed := entriesOfPrincipals(p.oldKeys, principals)
	fp := kdcops.KeysFingerprint(p.newKeys)
	ev["fingerprint"], ev["kvnos"], ev["principals"] = fp, kdcops.KVNOs(p.newKeys), principals
	p.keysSame = p.exists && len(installed) > 0 && kdcops.KeysFingerprint(installed) == fp
	want := p.wantAttrs()
	p.attrsOK = !p.exists || want.Mode == p.oldAttrs.Mode && want.UID == p.oldAttrs.UID && want.GID == p.oldAttrs.GID
	if p.keysSame {
		if p.attrsOK {
			return runbook.Passf("already current: %s holds version %s (kvno %v, fingerprint %s)", p.Keytab, v.ID, kdcops.KVNOs(p.newKeys), fp).With(ev)
		}
		return runbook.Passf("keys already current (version %s); owner, group or mode differ from the ones asked for", v.ID).With(ev)
	}
	return runbook.Passf("version %s (kvno %v, fingerprint %s) differs from %s", v.ID, kdcops.KVNOs(p.newKeys), fp, p.Keytab).With(ev)
}

// wantAttrs are the attributes the installed file gets: the existing
// file's (or a new file's 0600, this process's owner), with --owner and
// --mode applied.
func (p *Pull) wantAttrs() durable.Attrs {
	a := p.oldAttrs
	if p.UID >= 0 {
		a.UID = p.UID
	}
	if p.GID >= 0 {
		a.GID = p.GID
	}
	if p.Mode != 0 {
		a.Mode = p.Mode
	}
	return a
}

func (p *Pull) stepAS(ctx context.Context, _ *runbook.State) runbook.Result {
	if p.keysSame {
		return runbook.Result{Status: runbook.Skip, Message: "already current: the installed keys are not proved again"}
	}
	p.kdc = p.NewKDC()
	var accepted []string
	for _, principal := range principalsOf(p.newKeys) {
		keys := entriesOfPrincipals(p.newKeys, []string{principal})
		kvnos := kdcops.KVNOs(keys)
		newest := kvnos[len(kvnos)-1]
		ev := runbook.Evidence{"principal": principal, "kvnos": kvnos}
		sess, attempts, err := p.kdc.LoginPerKVNO(ctx, keys)
		if err != nil {
			return kdcResult(ctx, err, principal).With(ev)
		}
		ev["attempts"] = kdcops.DescribeAttempts(attempts)
		if sess == nil {
			return runbook.Failf("the KDC accepts none of kvno %v of %s in version %s: not installed", kvnos, principal, p.version.ID).With(ev).
				WithHint("the store's keytab does not match the KDC (a rotation that failed after the store was written?): run krbops verify --secret-store against the principal, or krbops rotate --resume")
		}
		ev["accepted_kvno"] = sess.KVNO
		if sess.KVNO != newest && p.Stage == secretstore.StageCurrent {
			return runbook.Failf("the KDC accepts kvno %d of %s, not version %s's newest kvno %d: not installed", sess.KVNO, principal, p.version.ID, newest).With(ev).
				WithHint("the store's current version is ahead of the KDC: a rotation that has not reached this KDC (replica lag, or a failed change); wait and pull again, or krbops rotate --resume")
		}
		p.sessions = append(p.sessions, sess)
		accepted = append(accepted, fmt.Sprintf("%s kvno %d", principal, sess.KVNO))
	}
	p.asOK = true
	msg := "the KDC accepts " + strings.Join(accepted, ", ")
	if p.Stage == secretstore.StagePending {
		msg += " (pending version: newer kvnos are for the coming key change)"
	}
	return runbook.Passf("%s", msg)
}

// stepAP proves what a server does with the keytab: a ticket the KDC
// issues for the principal now decrypts with the version's keys. A
// principal that is no service (the KDC does not issue tickets to it) is
// a client keytab: the AS exchange was its proof.
func (p *Pull) stepAP(ctx context.Context, _ *runbook.State) runbook.Result {
	if p.keysSame {
		return runbook.Result{Status: runbook.Skip, Message: "already current: the installed keys are not proved again"}
	}
	// A principal the KDC refused stops the AS step after the ones it
	// accepted: proving those would let install write the refused keys.
	if !p.asOK {
		return runbook.Result{Status: runbook.Skip, Message: "skipped: needs " + StepPullAS}
	}
	var proved, clients []string
	for _, s := range p.sessions {
		spn := principalString(s)
		ev := runbook.Evidence{"service": spn}
		sname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: s.Client.NameString}
		tkt, err := p.kdc.ServiceTicket(ctx, s, sname)
		if kdcops.IsNoService(err) || kdcops.IsKDCCode(err, kdcops.ErrPolicy) {
			clients = append(clients, spn)
			continue
		}
		if err != nil {
			return kdcResult(ctx, err, spn).With(ev)
		}
		r := kdcops.DecryptTicket(tkt, entriesOfPrincipals(p.newKeys, []string{spn}))
		ev["ticket_kvno"], ev["decrypted"] = r.TicketKVNO, r.Decrypted
		if !r.Decrypted {
			return runbook.Failf("a ticket for %s issued under kvno %d does not decrypt with version %s (it holds kvno %v): not installed", spn, r.TicketKVNO, p.version.ID, r.ServerKVNOs).With(ev).
				WithHint("the service would reject every new ticket: the store's keytab does not match the KDC; run krbops verify --secret-store")
		}
		proved = append(proved, fmt.Sprintf("a ticket for %s under kvno %d", spn, r.TicketKVNO))
	}
	p.proved = true
	if len(proved) == 0 {
		return runbook.Result{Status: runbook.Skip, Message: "the KDC issues no service tickets to " + strings.Join(clients, ", ") + ": a client keytab, proved by the AS exchange"}
	}
	msg := strings.Join(proved, ", ") + " decrypts with version " + p.version.ID
	if len(clients) > 0 {
		msg += "; no service tickets for " + strings.Join(clients, ", ") + " (clients, proved by the AS exchange)"
	}
	return runbook.Passf("%s", msg)
}

func (p *Pull) stepInstall(context.Context, *runbook.State) runbook.Result {
	want := p.wantAttrs()
	ev := runbook.Evidence{"keytab": p.Keytab, "mode": fmt.Sprintf("%04o", want.Mode), "uid": want.UID, "gid": want.GID, "version": p.version.ID}
	switch {
	case p.keysSame && p.attrsOK:
		return runbook.Result{Status: runbook.Skip, Message: "already current: nothing written"}.With(ev)
	case !p.keysSame && !(p.asOK && p.proved):
		return runbook.Result{Status: runbook.Skip, Message: "skipped: not proved by " + StepPullAS + " and " + StepPullAP + "; nothing written"}.With(ev)
	}
	if err := durable.CanReproduce(want); err != nil {
		return runbook.Usagef("--keytab %s: %s", p.Keytab, describe(err)).With(ev).
			WithHint("--owner needs root: run krbops keytab pull as root")
	}
	if err := p.guard.unchanged(); err != nil {
		return changedResult(p.Keytab, err, ev)
	}
	// Other principals' keys in the file stay as they were.
	var keep []kdcops.KeytabEntry
	principals := principalsOf(p.newKeys)
	for _, e := range p.oldKeys {
		if !containsFold(principals, e.Principal) {
			keep = append(keep, e)
		}
	}
	data, err := kdcops.MarshalKeytab(append(keep, p.newKeys...))
	if err != nil {
		return runbook.Errorf("%s", err)
	}
	if p.exists && !p.keysSame {
		backup, err := durable.CreateExclusive(rotate.BackupPath(p.Keytab, newestKVNO(entriesOfPrincipals(p.oldKeys, principals))), p.oldData, p.oldAttrs)
		if err != nil {
			return runbook.Usagef("backup of %s: %s", p.Keytab, describe(err)).With(ev).
				WithHint("free space or remove old backups next to the keytab; nothing was installed")
		}
		ev["backup"] = backup
	}
	if err := durable.WriteFileAs(p.Keytab, data, want, nil); err != nil {
		return runbook.Usagef("write %s: %s", p.Keytab, describe(err)).With(ev).
			WithHint("fix the directory (space, permissions); the old file is unchanged")
	}
	p.written = true
	p.guard.release()
	msg := fmt.Sprintf("%s holds version %s (kvno %v), mode %04o", p.Keytab, p.version.ID, kdcops.KVNOs(p.newKeys), want.Mode)
	if b, ok := ev["backup"]; ok {
		msg += fmt.Sprintf("; the old file is %s", b)
	}
	if p.Log != nil {
		p.Log.Info("keytab installed", "keytab", p.Keytab, "secret", p.Secret, "version", p.version.ID, "kvnos", kdcops.KVNOs(p.newKeys), "fingerprint", kdcops.KeysFingerprint(p.newKeys))
	}
	return runbook.Passf("%s", msg).With(ev)
}

// Metrics are the samples for node_exporter's textfile collector after a
// run: whether the run changed the file and the kvno each principal now
// has in it.
func (p *Pull) Metrics() []runbook.Metric {
	changed := 0.0
	if p.written {
		changed = 1
	}
	ms := []runbook.Metric{{Name: "krbops_keytab_pull_changed", Help: "1 when the last keytab pull replaced the file, else 0.",
		Labels: map[string]string{"keytab": p.Keytab, "secret": p.Secret}, Value: changed}}
	// The kvno in the file now, of the secret's principals (all of the
	// file's when the secret could not be read).
	keys := p.oldKeys
	switch {
	case p.written || p.keysSame:
		keys = p.newKeys
	case len(p.newKeys) > 0:
		keys = entriesOfPrincipals(p.oldKeys, principalsOf(p.newKeys))
	}
	for _, pr := range principalsOf(keys) {
		ms = append(ms, runbook.Metric{Name: "krbops_keytab_newest_kvno", Help: "Newest kvno of a principal in the keytab after the last keytab pull.",
			Labels: map[string]string{"keytab": p.Keytab, "principal": pr}, Value: float64(newestKVNO(entriesOfPrincipals(keys, []string{pr})))})
	}
	return ms
}

func selectPrincipal(entries []kdcops.KeytabEntry, principal string) []kdcops.KeytabEntry {
	if principal == "" {
		return entries
	}
	var out []kdcops.KeytabEntry
	for _, e := range entries {
		if kdcops.MatchPrincipal(e, principal) {
			out = append(out, e)
		}
	}
	return out
}

func principalsOf(entries []kdcops.KeytabEntry) []string {
	kt := kdcops.Keytab{Entries: entries}
	return kt.Principals()
}

func entriesOfPrincipals(entries []kdcops.KeytabEntry, principals []string) []kdcops.KeytabEntry {
	var out []kdcops.KeytabEntry
	for _, e := range entries {
		if containsFold(principals, e.Principal) {
			out = append(out, e)
		}
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func newestKVNO(entries []kdcops.KeytabEntry) uint32 {
	kvnos := kdcops.KVNOs(entries)
	if len(kvnos) == 0 {
		return 0
	}
	return kvnos[len(kvnos)-1]
}

func principalString(s *kdcops.Session) string {
	return strings.Join(s.Client.NameString, "/") + "@" + s.Realm
}

// kdcResult turns an error that ended an exchange into a result: an
// unreachable KDC is "could not complete" (exit 3), a refusal a failure.
func kdcResult(ctx context.Context, err error, principal string) runbook.Result {
	var ke *kdcops.KDCError
	var unreachable *kdcops.UnreachableError
	switch {
	case ctx.Err() != nil:
		return runbook.Errorf("interrupted")
	case errors.As(err, &unreachable):
		return runbook.Errorf("%s", err).WithHint("no KDC answered: check the KDCs in krb5.conf and port 88; nothing was changed")
	case errors.As(err, &ke):
		return runbook.Failf("the KDC refused %s: %s", principal, ke.Error()).
			WithHint("%s", withCommand("check the principal at the KDC", shquote.Kadmin("getprinc", principal), ": "))
	}
	return runbook.Errorf("%s", err).WithHint("re-run with --log-file to see the exchange")
}

func withCommand(hint, cmd, sep string) string {
	if cmd == "" {
		return hint
	}
	return hint + sep + cmd
}

func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && !errors.Is(err, durable.ErrUntrusted) && !errors.Is(err, durable.ErrNotPrivate) {
		return pe.Err.Error()
	}
	return err.Error()
}

// describeFormat words a keytab parse error without the bytes it read.
func describeFormat(err error) string {
	var fe *kdcops.FormatError
	if errors.As(err, &fe) {
		return fe.Error()
	}
	return "unreadable"
}
