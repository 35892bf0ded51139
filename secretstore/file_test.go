//go:build unix

package secretstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/krbops/krbops/internal/durable"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const principal = "HTTP/web01.example.com@EXAMPLE.COM"

func newFileStore(t *testing.T, root string) *fileStore {
	t.Helper()
	s, err := openFile(root, Options{LockTimeout: 2 * time.Second, Holder: "test " + t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func stagesOfVersions(vs []Version) map[string][]Stage {
	m := map[string][]Stage{}
	for _, v := range vs {
		m[v.ID] = v.Stages
	}
	return m
}

func mustGet(t *testing.T, s Store, name string, stage Stage, want []byte) Version {
	t.Helper()
	v, err := s.Get(context.Background(), name, stage)
	if err != nil {
		t.Fatalf("Get(%s): %v", stage, err)
	}
	if !bytes.Equal(v.Data, want) {
		t.Fatalf("Get(%s) = version %s with other data", stage, v.ID)
	}
	if !v.Has(stage) {
		t.Fatalf("Get(%s) = %v, which lacks the stage", stage, v)
	}
	return v
}

func TestFileLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t, filepath.Join(t.TempDir(), "store"))
	k1, k2, k3 := keytab("one"), keytab("two"), keytab("three")

	if _, err := s.Get(ctx, principal, StageCurrent); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on an empty store = %v, want ErrNotFound", err)
	}
	v1, err := s.Seed(ctx, principal, k1, NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v1.Stages, []Stage{StageCurrent}) || v1.Created.IsZero() {
		t.Fatalf("Seed = %v created %v, want current with a time", v1, v1.Created)
	}
	mustGet(t, s, principal, StageCurrent, k1)
	if _, err := s.Get(ctx, principal, StagePending); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(pending) before any rotation = %v, want ErrNotFound", err)
	}

	v2, err := s.PutPending(ctx, principal, k2, NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if v2.ID == v1.ID || !slices.Equal(v2.Stages, []Stage{StagePending}) {
		t.Fatalf("PutPending = %v", v2)
	}
	// Pending must not move current: services keep reading the old key
	// until the KDC has the new one.
	mustGet(t, s, principal, StageCurrent, k1)
	mustGet(t, s, principal, StagePending, k2)

	if err := s.Promote(ctx, principal, v2.ID); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, principal, StageCurrent, k2)
	mustGet(t, s, principal, StagePrevious, k1)
	if _, err := s.Get(ctx, principal, StagePending); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(pending) after promote = %v, want ErrNotFound", err)
	}

	v3, err := s.PutPending(ctx, principal, k3, NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, principal, v3.ID); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions(ctx, principal)
	if err != nil {
		t.Fatal(err)
	}
	got := stagesOfVersions(vs)
	want := map[string][]Stage{v1.ID: {}, v2.ID: {StagePrevious}, v3.ID: {StageCurrent}}
	if len(got) != 3 || len(got[v1.ID]) != 0 || !slices.Equal(got[v2.ID], want[v2.ID]) || !slices.Equal(got[v3.ID], want[v3.ID]) {
		t.Fatalf("Versions stages = %v, want %v", got, want)
	}
	if !slices.IsSortedFunc(vs, func(a, b Version) int { return strings.Compare(a.ID, b.ID) }) {
		t.Errorf("Versions not oldest first: %v", vs)
	}
	for _, v := range vs {
		if v.Data != nil {
			t.Errorf("Versions returned data for %s", v.ID)
		}
	}
	// A version without a stage keeps its data for audit and resume.
	old, err := s.GetVersion(ctx, principal, v1.ID)
	if err != nil || !bytes.Equal(old.Data, k1) || len(old.Stages) != 0 {
		t.Fatalf("GetVersion(%s) = %v, %v", v1.ID, old, err)
	}
	if _, err := s.GetVersion(ctx, principal, "99999999"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVersion(unknown) = %v, want ErrNotFound", err)
	}

	// The secret's directory name escapes the principal's "/".
	if _, err := os.Stat(filepath.Join(s.root, url.PathEscape(principal), manifestFile)); err != nil {
		t.Errorf("manifest not where docs/secret-store.md says: %v", err)
	}
}

func TestFileIdempotentTokens(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t, storeDir(t))
	seedTok := NewToken()
	v1, err := s.Seed(ctx, principal, keytab("one"), seedTok)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Seed(ctx, principal, keytab("one"), seedTok)
	if err != nil || again.ID != v1.ID {
		t.Fatalf("repeated Seed = %v, %v; want version %s again", again, err, v1.ID)
	}
	if _, err := s.Seed(ctx, principal, keytab("other"), NewToken()); !errors.Is(err, ErrConflict) {
		t.Fatalf("Seed over a current version = %v, want ErrConflict", err)
	}

	tok := NewToken()
	p1, err := s.PutPending(ctx, principal, keytab("two"), tok)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.PutPending(ctx, principal, keytab("two"), tok)
	if err != nil || p2.ID != p1.ID || !bytes.Equal(p2.Data, keytab("two")) {
		t.Fatalf("repeated PutPending = %v, %v; want version %s again", p2, err, p1.ID)
	}
	_, err = s.PutPending(ctx, principal, keytab("three"), tok)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("same token, other data = %v, want ErrConflict", err)
	}
	if strings.Contains(err.Error(), "KEYMATERIAL") {
		t.Fatalf("error carries key material: %v", err)
	}
	if err := s.Promote(ctx, principal, p1.ID); err != nil {
		t.Fatal(err)
	}
	// A resume that repeats PutPending after the promote must get the
	// promoted version back, not store a second copy.
	p3, err := s.PutPending(ctx, principal, keytab("two"), tok)
	if err != nil || p3.ID != p1.ID || !p3.Has(StageCurrent) {
		t.Fatalf("PutPending after promote = %v, %v; want version %s, current", p3, err, p1.ID)
	}
	vs, _ := s.Versions(ctx, principal)
	if len(vs) != 2 {
		t.Fatalf("versions = %v, want 2 (repeats stored nothing)", vs)
	}

	if _, err := s.PutPending(ctx, "nobody@EXAMPLE.COM", keytab("x"), NewToken()); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutPending for a secret never seeded = %v, want ErrNotFound", err)
	}
	// A secret directory without a manifest (a crash right after mkdir)
	// has no current version.
	if err := os.Mkdir(s.dir("half@EXAMPLE.COM"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPending(ctx, "half@EXAMPLE.COM", keytab("x"), NewToken()); !errors.Is(err, ErrConflict) || HintOf(err) == "" {
		t.Errorf("PutPending without current = %v (hint %q), want ErrConflict with a hint", err, HintOf(err))
	}
	for _, bad := range []struct {
		data  []byte
		token string
	}{{nil, NewToken()}, {make([]byte, MaxDataSize+1), NewToken()}, {keytab("x"), "short"}} {
		if _, err := s.PutPending(ctx, principal, bad.data, bad.token); err == nil {
			t.Errorf("PutPending(%d bytes, token %q) accepted", len(bad.data), bad.token)
		}
	}
}

func TestFilePromoteRules(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t, storeDir(t))
	v1, _ := s.Seed(ctx, principal, keytab("one"), NewToken())
	stale, err := s.PutPending(ctx, principal, keytab("two"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := s.PutPending(ctx, principal, keytab("three"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	// The newer pending version displaced the older one.
	if err := s.Promote(ctx, principal, stale.ID); !errors.Is(err, ErrConflict) {
		t.Fatalf("Promote(displaced pending) = %v, want ErrConflict", err)
	}
	if err := s.Promote(ctx, principal, "00000404"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Promote(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.Promote(ctx, principal, fresh.ID); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(s.dir(principal), manifestFile))
	if err := s.Promote(ctx, principal, fresh.ID); err != nil {
		t.Fatalf("repeated Promote = %v, want nil", err)
	}
	after, _ := os.ReadFile(filepath.Join(s.dir(principal), manifestFile))
	if !bytes.Equal(before, after) {
		t.Errorf("repeated Promote rewrote the manifest")
	}
	mustGet(t, s, principal, StageCurrent, keytab("three"))
	mustGet(t, s, principal, StagePrevious, keytab("one"))
	if v, _ := s.GetVersion(ctx, principal, v1.ID); !v.Has(StagePrevious) {
		t.Errorf("old current %s is %v, want previous", v1.ID, v.Stages)
	}

	// A crash can only leave "current and pending" on one version if a
	// manifest said so; Promote then just drops pending.
	m, _ := readManifest(s.dir(principal))
	m.byID(fresh.ID).add(StagePending)
	if err := s.writeManifest(s.dir(principal), m); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, principal, fresh.ID); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get(ctx, principal, StageCurrent); !slices.Equal(v.Stages, []Stage{StageCurrent}) {
		t.Errorf("after finishing a half promote: %v", v)
	}
}

// assertTidy checks what every state the file store leaves must satisfy:
// 0700 directories, 0600 files, no temp files, a manifest that parses and
// names only files that exist and match.
func assertTidy(t *testing.T, s *fileStore, name string) *manifest {
	t.Helper()
	for _, d := range []string{s.root, s.dir(name)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %04o, want 0700", d, fi.Mode().Perm())
		}
	}
	entries, err := os.ReadDir(s.dir(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, _ := e.Info()
		if durable.IsTemp(e.Name()) {
			t.Errorf("temp file %s left behind", e.Name())
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %04o, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	m, err := readManifest(s.dir(name))
	if err != nil {
		t.Fatalf("manifest torn or unreadable: %v", err)
	}
	if m != nil {
		for i := range m.Versions {
			if _, err := readVersion(s.dir(name), &m.Versions[i]); err != nil {
				t.Errorf("manifest names a bad version: %v", err)
			}
		}
	}
	return m
}

func TestFileModesIgnoreUmask(t *testing.T) {
	old := syscall.Umask(0) // the store must not rely on the caller's umask
	defer syscall.Umask(old)
	ctx := context.Background()
	s := newFileStore(t, filepath.Join(t.TempDir(), "a", "store"))
	v, err := s.Seed(ctx, principal, keytab("one"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.PutPending(ctx, principal, keytab("two"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, principal, p.ID); err != nil {
		t.Fatal(err)
	}
	m := assertTidy(t, s, principal)
	if len(m.Versions) != 2 || m.byID(v.ID) == nil {
		t.Errorf("manifest = %+v", m)
	}
	if fi, err := os.Stat(filepath.Dir(s.root)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("parent created for the store: %v %v, want 0700", fi.Mode().Perm(), err)
	}
}

// faultPoints are the steps of the store's atomic writes, in order.
var faultPoints = []string{"create", "write", "sync", "close", "rename", "sync-dir", "done"}

// TestFileInjectedFailures fails each step of PutPending's and Promote's
// writes in turn. Whatever failed, the manifest is the old one or the new
// one, whole; no temp file stays; and repeating the call with the same
// token or version finishes the job without a duplicate.
func TestFileInjectedFailures(t *testing.T) {
	ctx := context.Background()
	for _, op := range []string{"put-pending", "promote"} {
		files := []string{"version", "manifest"}
		if op == "promote" {
			files = []string{"manifest"}
		}
		for _, file := range files {
			for _, step := range faultPoints {
				point := file + ":" + step
				t.Run(op+"/"+point, func(t *testing.T) {
					s := newFileStore(t, storeDir(t))
					if _, err := s.Seed(ctx, principal, keytab("one"), NewToken()); err != nil {
						t.Fatal(err)
					}
					tok := NewToken()
					var pending Version
					if op == "promote" {
						var err error
						if pending, err = s.PutPending(ctx, principal, keytab("two"), tok); err != nil {
							t.Fatal(err)
						}
					}
					before, _ := os.ReadFile(filepath.Join(s.dir(principal), manifestFile))
					injected := errors.New("injected failure at " + point)
					hit := false
					s.fault = func(p string) error {
						if p == point {
							hit = true
							return injected
						}
						return nil
					}
					var err error
					if op == "promote" {
						err = s.Promote(ctx, principal, pending.ID)
					} else {
						_, err = s.PutPending(ctx, principal, keytab("two"), tok)
					}
					if !hit || !errors.Is(err, injected) {
						t.Fatalf("hit=%v err=%v, want the injected failure", hit, err)
					}
					after, _ := os.ReadFile(filepath.Join(s.dir(principal), manifestFile))
					renamed := file == "manifest" && (step == "sync-dir" || step == "done")
					if !renamed && !bytes.Equal(before, after) {
						t.Errorf("manifest changed although its rename never happened")
					}
					if renamed && bytes.Equal(before, after) {
						t.Errorf("manifest unchanged although it was renamed into place")
					}
					assertTidy(t, s, principal)

					s.fault = nil
					if op == "promote" {
						if err := s.Promote(ctx, principal, pending.ID); err != nil {
							t.Fatalf("repeat: %v", err)
						}
						mustGet(t, s, principal, StageCurrent, keytab("two"))
						mustGet(t, s, principal, StagePrevious, keytab("one"))
					} else {
						v, err := s.PutPending(ctx, principal, keytab("two"), tok)
						if err != nil {
							t.Fatalf("repeat: %v", err)
						}
						if got := mustGet(t, s, principal, StagePending, keytab("two")); got.ID != v.ID {
							t.Errorf("pending is %s, repeat returned %s", got.ID, v.ID)
						}
						mustGet(t, s, principal, StageCurrent, keytab("one"))
					}
					m := assertTidy(t, s, principal)
					if len(m.Versions) != 2 {
						t.Errorf("%d versions after the repeat, want 2", len(m.Versions))
					}
					entries, _ := os.ReadDir(s.dir(principal))
					if len(entries) != 4 { // manifest, lock, two version files
						t.Errorf("directory holds %d entries, want 4 (no orphans)", len(entries))
					}
				})
			}
		}
	}
}

// TestFileKilledMidWrite kills a helper process (SIGKILL, no deferred
// cleanup) at each step of PutPending's and Promote's writes, then checks
// the directory it left and that the same call, repeated, completes.
func TestFileKilledMidWrite(t *testing.T) {
	if point := os.Getenv("KRBOPS_SECRETSTORE_KILL_AT"); point != "" {
		killedHelper(point)
		return
	}
	ctx := context.Background()
	var tried atomic.Int32
	t.Cleanup(func() { t.Logf("killed at %d crash points", tried.Load()) })
	for _, op := range []string{"put-pending", "promote"} {
		for _, file := range []string{"version", "manifest"} {
			if op == "promote" && file == "version" {
				continue
			}
			for _, step := range faultPoints {
				point := file + ":" + step
				t.Run(op+"/"+point, func(t *testing.T) {
					t.Parallel() // each point has its own store; helper start-up dominates
					root := storeDir(t)
					s := newFileStore(t, root)
					if _, err := s.Seed(ctx, principal, keytab("one"), NewToken()); err != nil {
						t.Fatal(err)
					}
					tok := NewToken()
					var pending Version
					if op == "promote" {
						var err error
						if pending, err = s.PutPending(ctx, principal, keytab("two"), tok); err != nil {
							t.Fatal(err)
						}
					}
					before, _ := os.ReadFile(filepath.Join(s.dir(principal), manifestFile))
					cmd := helperCmd(t, "KRBOPS_SECRETSTORE_KILL_AT="+point, "KRBOPS_SECRETSTORE_ROOT="+root,
						"KRBOPS_SECRETSTORE_OP="+op, "KRBOPS_SECRETSTORE_TOKEN="+tok, "KRBOPS_SECRETSTORE_VERSION="+pending.ID)
					out, err := cmd.CombinedOutput()
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
						t.Fatalf("helper was not killed: %v\n%s", err, out)
					}
					tried.Add(1)

					after, _ := os.ReadFile(filepath.Join(s.dir(principal), manifestFile))
					var m manifest
					if err := json.Unmarshal(after, &m); err != nil {
						t.Fatalf("torn manifest after SIGKILL: %v", err)
					}
					renamed := file == "manifest" && (step == "sync-dir" || step == "done")
					if renamed == bytes.Equal(before, after) {
						t.Errorf("manifest is %s, want %s", state(bytes.Equal(before, after)), state(!renamed))
					}

					if op == "promote" {
						if err := s.Promote(ctx, principal, pending.ID); err != nil {
							t.Fatalf("repeat: %v", err)
						}
						mustGet(t, s, principal, StageCurrent, keytab("two"))
					} else {
						v, err := s.PutPending(ctx, principal, keytab("two"), tok)
						if err != nil {
							t.Fatalf("repeat: %v", err)
						}
						if got := mustGet(t, s, principal, StagePending, keytab("two")); got.ID != v.ID {
							t.Errorf("pending is %s, repeat returned %s", got.ID, v.ID)
						}
					}
					// The repeat took the lock and swept what the killed
					// process left (temp files, an unnamed version file).
					fm := assertTidy(t, s, principal)
					if len(fm.Versions) != 2 {
						t.Errorf("%d versions, want 2", len(fm.Versions))
					}
					if entries, _ := os.ReadDir(s.dir(principal)); len(entries) != 4 {
						t.Errorf("directory holds %d entries, want 4 (manifest, lock, two versions)", len(entries))
					}
				})
			}
		}
	}
}

func state(old bool) string {
	if old {
		return "the old one"
	}
	return "the new one"
}

// helperCmd re-runs this test binary as TestFileKilledMidWrite's helper.
func helperCmd(t *testing.T, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFileKilledMidWrite$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// killedHelper runs in the helper process: it performs one operation and
// SIGKILLs itself at the named step.
func killedHelper(point string) {
	s, err := openFile(os.Getenv("KRBOPS_SECRETSTORE_ROOT"), Options{})
	if err != nil {
		fmt.Println("helper:", err)
		os.Exit(3)
	}
	s.fault = func(p string) error {
		if p == point {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return nil
	}
	ctx := context.Background()
	if os.Getenv("KRBOPS_SECRETSTORE_OP") == "promote" {
		err = s.Promote(ctx, principal, os.Getenv("KRBOPS_SECRETSTORE_VERSION"))
	} else {
		_, err = s.PutPending(ctx, principal, keytab("two"), os.Getenv("KRBOPS_SECRETSTORE_TOKEN"))
	}
	fmt.Println("helper: survived", point, err)
	os.Exit(4)
}

func TestFileConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	root := storeDir(t)
	seed := newFileStore(t, root)
	if _, err := seed.Seed(ctx, principal, keytab("seed"), NewToken()); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	ids := make([]string, writers)
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One store per goroutine: separate lock descriptors, as two
			// krbops processes would have.
			s := newFileStore(t, root)
			v, err := s.PutPending(ctx, principal, keytab(fmt.Sprint(i)), NewToken())
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = v.ID
			if err := s.Promote(ctx, principal, v.ID); err != nil && !errors.Is(err, ErrConflict) {
				errs[i] = err // ErrConflict: another writer's pending displaced ours
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != writers {
		t.Fatalf("version ids not unique: %v", ids)
	}
	m := assertTidy(t, seed, principal)
	if len(m.Versions) != writers+1 || m.Next != writers+2 {
		t.Fatalf("manifest has %d versions, next %d; want %d, %d (a lost update)", len(m.Versions), m.Next, writers+1, writers+2)
	}
	counts := map[Stage]int{}
	for _, v := range m.Versions {
		for _, st := range v.Stages {
			counts[st]++
		}
	}
	if counts[StageCurrent] != 1 || counts[StagePending] > 1 || counts[StagePrevious] > 1 {
		t.Fatalf("stage counts %v: each stage must be on at most one version, current on exactly one", counts)
	}
}

func TestFileLockHeld(t *testing.T) {
	ctx := context.Background()
	root := storeDir(t)
	a := newFileStore(t, root)
	if _, err := a.Seed(ctx, principal, keytab("one"), NewToken()); err != nil {
		t.Fatal(err)
	}
	unlock, err := a.lock(ctx, a.dir(principal))
	if err != nil {
		t.Fatal(err)
	}
	b, err := openFile(root, Options{LockTimeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.PutPending(ctx, principal, keytab("two"), NewToken())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "test TestFileLockHeld") || HintOf(err) == "" {
		t.Fatalf("PutPending under another's lock = %v (hint %q), want ErrLocked naming the holder", err, HintOf(err))
	}
	// It waited its 150ms (nothing ends the wait sooner), not the default
	// lock timeout; load can only make it later.
	if d := time.Since(start); d < 150*time.Millisecond || d >= DefaultLockTimeout {
		t.Errorf("gave up after %s, want the 150ms lock timeout (not the default %s)", d, DefaultLockTimeout)
	}
	if err := b.Check(ctx, principal); !errors.Is(err, ErrLocked) {
		t.Errorf("Check under another's lock = %v, want ErrLocked", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	b.lockTimeout = time.Minute
	if err := b.Promote(cctx, principal, "00000001"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Promote with an expiring context = %v, want the context's error", err)
	}
	// Reads never wait for the lock.
	mustGet(t, b, principal, StageCurrent, keytab("one"))

	unlock()
	if _, err := b.PutPending(ctx, principal, keytab("two"), NewToken()); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}

func TestFileCorruptionIsReported(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t, storeDir(t))
	v, err := s.Seed(ctx, principal, keytab("one"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	vf := filepath.Join(s.dir(principal), versionFile(v.ID))
	if err := os.WriteFile(vf, keytab("tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, principal, StageCurrent)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), vf) || strings.Contains(err.Error(), "KEYMATERIAL") {
		t.Fatalf("Get of a tampered version = %v, want ErrCorrupt naming the file, without its bytes", err)
	}
	os.Remove(vf)
	if _, err := s.Get(ctx, principal, StageCurrent); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a missing version file = %v, want ErrCorrupt", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir(principal), manifestFile), []byte(`{"format":1,"versions":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Versions(ctx, principal); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Versions with a broken manifest = %v, want ErrCorrupt", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir(principal), manifestFile), []byte(`{"format":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Versions(ctx, principal); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("Versions with a newer manifest format = %v, want ErrCorrupt naming the format", err)
	}
}

func TestFileCheck(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	s := newFileStore(t, root)
	if err := s.Check(ctx, principal); !errors.Is(err, ErrNotFound) || !strings.Contains(HintOf(err), "mkdir -m 700") {
		t.Fatalf("Check without the store directory = %v (hint %q)", err, HintOf(err))
	}
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, principal); err != nil {
		t.Fatalf("Check of a secret Seed can create: %v", err)
	}
	if _, err := s.Seed(ctx, principal, keytab("one"), NewToken()); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, principal); err != nil {
		t.Fatalf("Check of a healthy secret: %v", err)
	}
	assertTidy(t, s, principal) // Check's probe file is gone

	for _, c := range []struct {
		path string
		mode os.FileMode
		ok   os.FileMode
	}{
		{root, 0o777, 0o700},
		{s.dir(principal), 0o750, 0o700},
		{filepath.Join(s.dir(principal), versionFile("00000001")), 0o644, 0o600},
	} {
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(ctx, principal); !errors.Is(err, ErrInsecure) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("Check with %s at %04o = %v, want ErrInsecure naming it", c.path, c.mode, err)
		}
		if err := os.Chmod(c.path, c.ok); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() != 0 { // root writes through any mode
		if err := os.Chmod(s.dir(principal), 0o500); err != nil {
			t.Fatal(err)
		}
		if err := s.Check(ctx, principal); !errors.Is(err, ErrPermission) {
			t.Errorf("Check of a read-only secret directory = %v, want ErrPermission", err)
		}
		os.Chmod(s.dir(principal), 0o700)
	}
}

// storeDir is a store directory the store creates itself (so its mode is
// the store's doing, not t.TempDir's 0755).
func storeDir(t *testing.T) string { return filepath.Join(t.TempDir(), "store") }

// rotate abort: Discard takes the pending stage off a version and leaves
// current alone; a repeat is a no-op; a current version is not discarded.
func TestFileDiscard(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t, filepath.Join(t.TempDir(), "store"))
	cur, err := s.Seed(ctx, principal, []byte("old keytab"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	pend, err := s.PutPending(ctx, principal, []byte("new keytab"), NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Discard(ctx, principal, pend.ID); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if _, err := s.Get(ctx, principal, StagePending); !errors.Is(err, ErrNotFound) {
		t.Errorf("pending after Discard: %v, want ErrNotFound", err)
	}
	mustGet(t, s, principal, StageCurrent, []byte("old keytab"))
	if err := s.Discard(ctx, principal, pend.ID); err != nil {
		t.Errorf("repeated Discard: %v", err)
	}
	if err := s.Discard(ctx, principal, cur.ID); !errors.Is(err, ErrConflict) {
		t.Errorf("Discard of current: %v, want ErrConflict", err)
	}
	if err := s.Discard(ctx, principal, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Discard of a missing version: %v, want ErrNotFound", err)
	}
}
