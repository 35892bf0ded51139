package secretstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/internal/shquote"
)

// File layout under the store directory (see docs/secret-store.md):
//
//	DIR/                         0700
//	  <escaped name>/            0700, one per secret ("/" becomes %2F)
//	    manifest.json            0600, stages and tokens, replaced atomically
//	    v00000001.keytab         0600, one per version, never rewritten
//	    lock                     0600, flock'd by writers; never removed
const (
	manifestFile   = "manifest.json"
	lockFile       = "lock"
	versionPrefix  = "v"
	versionSuffix  = ".keytab"
	manifestFormat = 1
	dirMode        = 0o700
)

type fileStore struct {
	root        string
	url         string
	holder      string
	lockTimeout time.Duration
	now         func() time.Time
	// fault, when set (tests only), is called before each step of an
	// atomic write ("manifest:sync", "version:rename", ...) and fails the
	// write with its error; a test can also kill the process there.
	fault func(point string) error
}

// manifest is a secret's stage manifest. Only whole manifests are ever
// visible: each write goes to a temp file that is renamed over the old one.
type manifest struct {
	Format   int           `json:"format"`
	Name     string        `json:"name"`
	Next     uint64        `json:"next"` // sequence number of the next version
	Versions []fileVersion `json:"versions"`
}

type fileVersion struct {
	ID      string    `json:"id"`
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
	Stages  []Stage   `json:"stages,omitempty"`
	Size    int       `json:"size"`
	// SHA256 of the version file, checked on every read: the manifest is
	// only written after the version file is synced, so a mismatch means
	// the file was changed behind krbops' back.
	SHA256 string `json:"sha256"`
}

func openFile(path string, opts Options) (*fileStore, error) {
	if path == "" {
		return nil, errors.New("secretstore: file store URL names no directory (want file:///path)")
	}
	// Resolved now so a later chdir cannot move the store.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("secretstore: store directory %s: %w", path, err)
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("secretstore: store path %s is not a directory", abs)
	}
	s := &fileStore{
		root:        abs,
		url:         (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String(),
		holder:      opts.Holder,
		lockTimeout: opts.LockTimeout,
		now:         opts.Now,
	}
	if s.holder == "" {
		s.holder = defaultHolder()
	}
	if s.lockTimeout <= 0 {
		s.lockTimeout = DefaultLockTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

func defaultHolder() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s pid %d", name, host, os.Getpid())
}

func (s *fileStore) dir(name string) string {
	return filepath.Join(s.root, url.PathEscape(name))
}

// wrap turns a helper's error into the *Error the Store method returns.
func (s *fileStore) wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Store: s.url, Secret: name, Err: err}
	var ke *kindError
	switch {
	case errors.As(err, &ke):
		e.Kind, e.HintText = ke.kind, ke.hint
	case errors.Is(err, fs.ErrPermission):
		e.Kind, e.HintText = ErrPermission, "run krbops as the store's owner, or fix the ownership of "+s.root
	}
	if e.Kind == ErrPermission {
		// File modes on this host, not a service's refusal.
		e.class = fault.Usage
	}
	return e
}

func (s *fileStore) Get(ctx context.Context, name string, stage Stage) (Version, error) {
	v, err := s.get(ctx, name, func(m *manifest) (*fileVersion, error) {
		if fv := m.withStage(stage); fv != nil {
			return fv, nil
		}
		return nil, failf(ErrNotFound, "no %s version", stage)
	})
	return v, s.wrap("get", name, err)
}

func (s *fileStore) GetVersion(ctx context.Context, name, versionID string) (Version, error) {
	v, err := s.get(ctx, name, func(m *manifest) (*fileVersion, error) {
		if fv := m.byID(versionID); fv != nil {
			return fv, nil
		}
		return nil, failf(ErrNotFound, "no version %q", versionID)
	})
	return v, s.wrap("get-version", name, err)
}

// get reads without the lock: a manifest is replaced by rename, so a reader
// sees the old or the new one, and version files never change once named.
func (s *fileStore) get(ctx context.Context, name string, pick func(*manifest) (*fileVersion, error)) (Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return Version{}, err
	}
	dir := s.dir(name)
	m, err := readManifest(dir)
	if err != nil {
		return Version{}, err
	}
	if m == nil {
		return Version{}, failf(ErrNotFound, "secret does not exist")
	}
	fv, err := pick(m)
	if err != nil {
		return Version{}, err
	}
	data, err := readVersion(dir, fv)
	if err != nil {
		return Version{}, err
	}
	v := fv.version()
	v.Data = data
	return v, nil
}

func (s *fileStore) Versions(ctx context.Context, name string) ([]Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return nil, s.wrap("versions", name, err)
	}
	m, err := readManifest(s.dir(name))
	if err != nil {
		return nil, s.wrap("versions", name, err)
	}
	if m == nil {
		return nil, s.wrap("versions", name, failf(ErrNotFound, "secret does not exist"))
	}
	out := make([]Version, 0, len(m.Versions))
	for i := range m.Versions {
		out = append(out, m.Versions[i].version())
	}
	return out, nil
}

func (s *fileStore) Seed(ctx context.Context, name string, data []byte, token string) (Version, error) {
	v, err := s.put(ctx, name, data, token, StageCurrent)
	return v, s.wrap("seed", name, err)
}

func (s *fileStore) PutPending(ctx context.Context, name string, data []byte, token string) (Version, error) {
	v, err := s.put(ctx, name, data, token, StagePending)
	return v, s.wrap("put-pending", name, err)
}

// put stores a new version with stage (current for Seed, pending for
// PutPending). Order matters for crash safety: the version file is synced
// under its final name before the manifest that names it is written, so a
// manifest never points at a missing or partial file.
func (s *fileStore) put(ctx context.Context, name string, data []byte, token string, stage Stage) (Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return Version{}, err
	}
	if err := ValidToken(token); err != nil {
		return Version{}, err
	}
	if err := checkData(data); err != nil {
		return Version{}, err
	}
	dir := s.dir(name)
	if stage == StageCurrent {
		if err := s.mkdirs(dir); err != nil {
			return Version{}, err
		}
	} else if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return Version{}, failf(ErrNotFound, "secret does not exist").withHint("store its current keytab first (seed)")
	}
	unlock, err := s.lock(ctx, dir)
	if err != nil {
		return Version{}, err
	}
	defer unlock()

	m, err := readManifest(dir)
	if err != nil {
		return Version{}, err
	}
	if m == nil {
		m = &manifest{Format: manifestFormat, Name: name, Next: 1}
	}
	if err := cleanDir(dir, m); err != nil {
		return Version{}, err
	}
	if fv := m.byToken(token); fv != nil {
		old, err := readVersion(dir, fv)
		if err != nil {
			return Version{}, err
		}
		if !bytes.Equal(old, data) {
			return Version{}, failf(ErrConflict, "token %s already stored other data as version %s", token, fv.ID).
				withHint("a new keytab needs a new token")
		}
		v := fv.version()
		v.Data = old
		return v, nil
	}
	cur := m.withStage(StageCurrent)
	switch {
	case stage == StagePending && cur == nil:
		return Version{}, failf(ErrConflict, "secret has no current version").withHint("store its current keytab first (seed)")
	case stage == StageCurrent && cur != nil:
		return Version{}, failf(ErrConflict, "secret already has current version %s", cur.ID).
			withHint("store a new keytab as pending and promote it")
	}

	sum := sha256.Sum256(data)
	fv := fileVersion{
		ID:      fmt.Sprintf("%08d", m.Next),
		Token:   token,
		Created: s.now().UTC().Truncate(time.Millisecond),
		Stages:  []Stage{stage},
		Size:    len(data),
		SHA256:  hex.EncodeToString(sum[:]),
	}
	if err := s.writeAtomic(dir, versionFile(fv.ID), "version", data); err != nil {
		return Version{}, err
	}
	m.Next++
	for i := range m.Versions {
		m.Versions[i].drop(stage)
	}
	m.Versions = append(m.Versions, fv)
	if err := s.writeManifest(dir, m); err != nil {
		return Version{}, err
	}
	v := fv.version()
	v.Data = bytes.Clone(data)
	return v, nil
}

func (s *fileStore) Promote(ctx context.Context, name, versionID string) error {
	return s.wrap("promote", name, s.promote(ctx, name, versionID))
}

// restage runs fn on the manifest of an existing secret under its lock;
// fn changes stages and writes the manifest back when it needs to.
func (s *fileStore) restage(ctx context.Context, name string, fn func(dir string, m *manifest) error) error {
	if err := s.begin(ctx, name); err != nil {
		return err
	}
	dir := s.dir(name)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return failf(ErrNotFound, "secret does not exist")
	}
	unlock, err := s.lock(ctx, dir)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := readManifest(dir)
	if err != nil {
		return err
	}
	if m == nil {
		return failf(ErrNotFound, "secret does not exist")
	}
	return fn(dir, m)
}

// promote rewrites the manifest once: every stage moves in one rename.
func (s *fileStore) promote(ctx context.Context, name, versionID string) error {
	return s.restage(ctx, name, func(dir string, m *manifest) error { return s.promoteIn(dir, m, versionID) })
}

func (s *fileStore) promoteIn(dir string, m *manifest, versionID string) error {
	if err := cleanDir(dir, m); err != nil {
		return err
	}
	target := m.byID(versionID)
	if target == nil {
		return failf(ErrNotFound, "no version %q", versionID)
	}
	if target.has(StageCurrent) {
		if !target.has(StagePending) {
			return nil
		}
		target.drop(StagePending)
		return s.writeManifest(dir, m)
	}
	if !target.has(StagePending) {
		return failf(ErrConflict, "version %s is not pending (stages %v)", versionID, target.Stages).
			withHint("another keytab was stored as pending since; promote that version or store this one again")
	}
	for i := range m.Versions {
		fv := &m.Versions[i]
		if fv == target {
			continue
		}
		fv.drop(StagePrevious)
		if fv.has(StageCurrent) {
			fv.drop(StageCurrent)
			fv.add(StagePrevious)
		}
	}
	target.drop(StagePending)
	target.add(StageCurrent)
	return s.writeManifest(dir, m)
}

func (s *fileStore) Discard(ctx context.Context, name, versionID string) error {
	return s.wrap("discard", name, s.discard(ctx, name, versionID))
}

func (s *fileStore) discard(ctx context.Context, name, versionID string) error {
	return s.restage(ctx, name, func(dir string, m *manifest) error {
		target := m.byID(versionID)
		switch {
		case target == nil:
			return failf(ErrNotFound, "no version %q", versionID)
		case target.has(StageCurrent):
			return failf(ErrConflict, "version %s is current, not a pending version to discard", versionID)
		case !target.has(StagePending):
			return nil
		}
		target.drop(StagePending)
		return s.writeManifest(dir, m)
	})
}

func (s *fileStore) Check(ctx context.Context, name string) error {
	return s.wrap("check", name, s.check(ctx, name))
}

func (s *fileStore) check(ctx context.Context, name string) error {
	if err := s.begin(ctx, name); err != nil {
		return err
	}
	fi, err := os.Stat(s.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return failf(ErrNotFound, "store directory %s does not exist", s.root).
			withHint(cmdHint("create it: ", "create it with mode 0700", "mkdir", "-m", "700", s.root))
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("store path %s is not a directory", s.root)
	case checkModes && fi.Mode().Perm()&0o022 != 0:
		return failf(ErrInsecure, "store directory %s is writable by group or others (mode %04o)", s.root, fi.Mode().Perm()).
			withHint(cmdHint("", "remove the group and other write bits (chmod go-w)", "chmod", "go-w", s.root))
	case checkModes && !ownedByMe(fi):
		// Another user's directory could hold a version planted to be
		// promoted: the store must be the rotating user's own.
		return failf(ErrInsecure, "store directory %s belongs to another user (uid %d), not to this one (uid %d)", s.root, ownerUID(fi), os.Geteuid()).
			withHint(cmdHint("", "give it to the user who rotates (chown)", "chown", strconv.Itoa(os.Geteuid()), s.root))
	}
	dir := s.dir(name)
	fi, err = os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// Seed will create the secret: the root must take a new entry.
		return probeWrite(s.root)
	}
	if err != nil {
		return err
	}
	if checkModes && fi.Mode().Perm()&0o077 != 0 {
		return failf(ErrInsecure, "secret directory %s is open to group or others (mode %04o)", dir, fi.Mode().Perm()).
			withHint(cmdHint("", "make it mode 0700", "chmod", "700", dir))
	}
	m, err := readManifest(dir)
	if err != nil {
		return err
	}
	if m != nil {
		for i := range m.Versions {
			p := filepath.Join(dir, versionFile(m.Versions[i].ID))
			vfi, err := os.Stat(p)
			if err != nil {
				return failf(ErrCorrupt, "version file %s listed in the manifest: %v", p, err)
			}
			if checkModes && vfi.Mode().Perm()&0o077 != 0 {
				return failf(ErrInsecure, "version file %s is open to group or others (mode %04o)", p, vfi.Mode().Perm()).
					withHint(cmdHint("", "make it mode 0600", "chmod", "600", p))
			}
		}
	}
	if err := probeWrite(dir); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	busy, err := durable.TryLock(f)
	if err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	if busy {
		return s.lockedError(f.Name())
	}
	return nil // closing f releases the lock
}

// probeWrite proves dir takes a new, synced file, then removes it.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, durable.TempPrefix+"check-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write([]byte("krbops check\n")); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// begin validates what every operation validates first.
func (s *fileStore) begin(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return ValidName(name)
}

// mkdirs creates the store and secret directories (0700) and syncs their
// parents, so a secret directory survives a crash with its first files.
func (s *fileStore) mkdirs(dir string) error {
	if err := os.MkdirAll(s.root, dirMode); err != nil {
		return err
	}
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return durable.SyncDir(s.root)
}

// lock takes the secret's write lock, waiting up to lockTimeout. The lock
// file is never removed: unlinking it while another process waits on the
// old inode would let two writers in.
func (s *fileStore) lock(ctx context.Context, dir string) (unlock func(), err error) {
	p := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(s.lockTimeout)
	for {
		busy, err := durable.TryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, s.lockedError(p)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	// Who holds the lock is advice for the refused operator, not part of
	// the locking, so a failed write here does not fail the operation.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(s.holder+" since "+s.now().UTC().Format(time.RFC3339)+"\n"), 0)
	}
	return func() { f.Close() }, nil
}

func (s *fileStore) lockedError(path string) error {
	holder := "an unknown process"
	// The holder line is advice: read a little, never wait on a FIFO.
	if b, err := readcap.ReadFile(path, 4<<10); err == nil {
		if line, _, _ := strings.Cut(string(b), "\n"); line != "" {
			if len(line) > 200 {
				line = line[:200]
			}
			holder = strconv.Quote(line)
		}
	}
	return failf(ErrLocked, "lock %s is held by %s", path, holder).
		withHint("another krbops is writing this secret; wait for it to finish (the lock goes when its process exits)")
}

// writeManifest replaces dir's manifest atomically.
func (s *fileStore) writeManifest(dir string, m *manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return s.writeAtomic(dir, manifestFile, "manifest", append(b, '\n'))
}

// writeAtomic writes dir/name crash-safely (durable.WriteFile); label
// names the file in injected faults ("manifest:rename").
func (s *fileStore) writeAtomic(dir, name, label string, data []byte) error {
	var fault durable.Fault
	if s.fault != nil {
		fault = func(step string) error { return s.fault(label + ":" + step) }
	}
	return durable.WriteFile(filepath.Join(dir, name), data, 0o600, fault)
}

// cleanDir removes what a crashed writer left behind: temp files, and
// version files no manifest names (written, but the manifest naming them
// never was). Called with the lock held, so no live writer owns them.
func cleanDir(dir string, m *manifest) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		orphan := strings.HasPrefix(n, versionPrefix) && strings.HasSuffix(n, versionSuffix) &&
			!slices.ContainsFunc(m.Versions, func(fv fileVersion) bool { return versionFile(fv.ID) == n })
		if durable.IsTemp(n) || orphan {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// maxManifest bounds a manifest file: a version's entry is a few hundred
// bytes, so this is over ten thousand rotations of one secret.
const maxManifest = 4 << 20

// readManifest returns dir's manifest, or nil when the secret has none yet.
func readManifest(dir string) (*manifest, error) {
	p := filepath.Join(dir, manifestFile)
	b, err := readcap.ReadFile(p, maxManifest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, readcap.ErrNotRegular) || errors.Is(err, readcap.ErrTooLarge) {
		return nil, failf(ErrCorrupt, "manifest %s: %s", p, describePathErr(err))
	}
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, failf(ErrCorrupt, "manifest %s does not parse: %v", filepath.Join(dir, manifestFile), err)
	}
	if m.Format != manifestFormat {
		return nil, failf(ErrCorrupt, "manifest %s has format %d, this krbops reads %d", filepath.Join(dir, manifestFile), m.Format, manifestFormat).
			withHint("use the krbops release that wrote it")
	}
	return &m, nil
}

// readVersion reads a version file and checks it against its manifest entry.
func readVersion(dir string, fv *fileVersion) ([]byte, error) {
	p := filepath.Join(dir, versionFile(fv.ID))
	// Put never stores more than MaxDataSize: a larger version file was
	// changed behind krbops' back, like a checksum mismatch.
	data, err := readcap.ReadFile(p, MaxDataSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, failf(ErrCorrupt, "version file %s listed in the manifest is missing", p)
	}
	if errors.Is(err, readcap.ErrNotRegular) || errors.Is(err, readcap.ErrTooLarge) {
		return nil, failf(ErrCorrupt, "version file %s: %s", p, describePathErr(err))
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if len(data) != fv.Size || hex.EncodeToString(sum[:]) != fv.SHA256 {
		return nil, failf(ErrCorrupt, "version file %s does not match its manifest entry (%d bytes, want %d, or SHA-256 differs)", p, len(data), fv.Size)
	}
	return data, nil
}

// cmdHint is a hint showing a command: prefix and the shell-quoted words
// (a store path may hold any character), or prose when a word would not
// show on a terminal as it is (see shquote.Command).
func cmdHint(prefix, prose string, words ...string) string {
	if c := shquote.Command(words...); c != "" {
		return prefix + c
	}
	return prose
}

// describePathErr is an *fs.PathError's cause without the path, which the
// caller's message already names.
func describePathErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func versionFile(id string) string { return versionPrefix + id + versionSuffix }

func (m *manifest) withStage(s Stage) *fileVersion {
	for i := range m.Versions {
		if m.Versions[i].has(s) {
			return &m.Versions[i]
		}
	}
	return nil
}

func (m *manifest) byID(id string) *fileVersion {
	for i := range m.Versions {
		if m.Versions[i].ID == id {
			return &m.Versions[i]
		}
	}
	return nil
}

func (m *manifest) byToken(token string) *fileVersion {
	for i := range m.Versions {
		if m.Versions[i].Token == token {
			return &m.Versions[i]
		}
	}
	return nil
}

func (fv *fileVersion) has(s Stage) bool { return slices.Contains(fv.Stages, s) }

func (fv *fileVersion) drop(s Stage) {
	fv.Stages = slices.DeleteFunc(fv.Stages, func(x Stage) bool { return x == s })
}

func (fv *fileVersion) add(s Stage) {
	if !fv.has(s) {
		fv.Stages = append(fv.Stages, s)
	}
}

func (fv *fileVersion) version() Version {
	return Version{ID: fv.ID, Stages: sortStages(fv.Stages), Created: fv.Created}
}

// sortStages returns stages in the order of Stages, as a new slice.
func sortStages(in []Stage) []Stage {
	out := make([]Stage, 0, len(in))
	for _, s := range Stages {
		if slices.Contains(in, s) {
			out = append(out, s)
		}
	}
	return out
}
