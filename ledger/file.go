package ledger

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/krbops/krbops/internal/durable"
	"io/fs"
	"os"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultTimeout is how long an operation waits for another process that
// has the ledger file open.
const DefaultTimeout = 5 * time.Second

// Options configure OpenFile, OpenDynamo and Open.
type Options struct {
	// Timeout bounds the wait for the file lock; DefaultTimeout when zero.
	Timeout time.Duration
	// Now is the ledger's clock (lock expiry, stamps); time.Now when nil.
	Now func() time.Time
	// ReadOnly opens for callers that only read (rotate status): the file
	// is never created, written or locked exclusively, and every write
	// method fails with ErrReadOnly. A missing file is an error that
	// satisfies errors.Is(err, fs.ErrNotExist).
	ReadOnly bool
	// Endpoint overrides the DynamoDB endpoint of a dynamodb:// ledger
	// (--endpoint-url); "" leaves it to the SDK (AWS_ENDPOINT_URL_DYNAMODB,
	// AWS_ENDPOINT_URL, the profile's endpoint_url, then AWS).
	Endpoint string
	// TLS, when set, is the trust of a dynamodb:// ledger's HTTPS client
	// (--ca-bundle).
	TLS *tls.Config
}

// Buckets of the file ledger. Rotations are keyed by an 8-byte big-endian
// sequence number; the ID is its decimal form.
var (
	bucketRotations = []byte("rotations")
	// bucketDomain indexes rotations by cluster NUL role NUL start(8) seq(8)
	// so CountSince seeks to the window instead of reading every record.
	bucketDomain = []byte("by-domain")
	// bucketOpen holds the sequence numbers of open rotations.
	bucketOpen  = []byte("open")
	bucketLocks = []byte("locks")
	bucketAudit = []byte("audit")
	bucketMeta  = []byte("meta")
	keyFormat   = []byte("format")
)

const fileFormat = "1"

// File is the embedded ledger: one bbolt file. bbolt lets one process
// open a file at a time, so File opens it for each operation and closes it
// right after; two operators' processes take turns instead of the second
// one failing for as long as the first runs.
type File struct {
	path     string
	timeout  time.Duration
	now      func() time.Time
	readOnly bool

	mu     sync.Mutex // one open at a time within this process
	closed bool
	// broken is the damage a recovered fault or panic inside bbolt
	// revealed: later calls return it at once rather than hand the same
	// file to bbolt again.
	broken error
}

var _ Ledger = (*File)(nil)

// OpenFile opens the ledger at path, creating it (0600, in a 0700
// directory if that is missing too) when it does not exist, unless
// opts.ReadOnly. A file that is not a sound bbolt file is a
// *DamagedError (errors.Is ErrDamaged, class fault.Usage): it is never
// handed to bbolt, which could crash the process on it.
func OpenFile(path string, opts Options) (*File, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", path, err)
	}
	f := &File{path: abs, timeout: opts.Timeout, now: opts.Now, readOnly: opts.ReadOnly}
	if f.timeout <= 0 {
		f.timeout = DefaultTimeout
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.readOnly {
		if err := f.view(context.Background(), checkFormat(abs)); err != nil {
			return nil, err
		}
		return f, nil
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	err = f.update(context.Background(), func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRotations, bucketDomain, bucketOpen, bucketLocks, bucketAudit, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyFormat); {
		case v == nil:
			return meta.Put(keyFormat, []byte(fileFormat))
		case string(v) != fileFormat:
			return fmt.Errorf("ledger %s has format %s, this krbops reads %s", abs, v, fileFormat)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// checkFormat is a read-only open's check that the file is a ledger this
// krbops reads: every bucket there, and the format it writes.
func checkFormat(path string) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRotations, bucketDomain, bucketOpen, bucketLocks, bucketMeta} {
			if tx.Bucket(b) == nil {
				return damaged(path, "it is a bbolt file without the ledger's %q bucket (not a krbops ledger?)", b)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keyFormat); string(v) != fileFormat {
			return fmt.Errorf("ledger %s has format %q, this krbops reads %s", path, v, fileFormat)
		}
		return nil
	}
}

// Path is the ledger file.
func (f *File) Path() string { return f.path }

// Close makes later calls fail; the file is already closed between calls.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// ErrReadOnly is a write to a ledger opened with Options.ReadOnly.
var ErrReadOnly = errors.New("ledger: opened read-only")

func (f *File) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if f.readOnly {
		return ErrReadOnly
	}
	return f.with(ctx, false, func(db *bolt.DB) error { return db.Update(fn) })
}

func (f *File) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	return f.with(ctx, true, func(db *bolt.DB) error { return db.View(fn) })
}

// with opens the file, runs fn and closes the file. Readers take a shared
// lock, writers an exclusive one; either waits at most the timeout (or
// what is left of ctx) and then reports ErrBusy naming the file, rather
// than hanging behind a stuck process.
func (f *File) with(ctx context.Context, readOnly bool, fn func(*bolt.DB) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if f.broken != nil {
		return f.broken
	}
	// Checked before every open, not once: the file is closed between
	// operations, and what another process or a full disk did to it in
	// between is not known.
	wait := f.timeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = max(time.Until(dl), time.Millisecond)
	}
	err := checkFile(f.path)
	if errors.Is(err, errEmpty) || errors.Is(err, ErrDamaged) {
		// Another process may be creating the ledger right now (bbolt
		// writes its first pages under its lock): look again once no
		// one holds the file, before calling it damaged.
		err = recheckUnlocked(ctx, f.path, wait, err)
	}
	switch {
	case err == nil:
	case errors.Is(err, errEmpty) && !f.readOnly, isNotExist(err) && !f.readOnly:
		// bbolt creates or initialises it under its own lock.
	case errors.Is(err, errEmpty), isNotExist(err):
		return fmt.Errorf("ledger %s: %w", f.path, fs.ErrNotExist)
	default:
		return err
	}
	// bbolt's file is kept, so that an open a fault or panic aborted can
	// still be closed: its flock would otherwise hold the ledger for the
	// rest of the process.
	var (
		file *os.File
		db   *bolt.DB
	)
	openFile := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		fh, err := os.OpenFile(name, flag, perm)
		file = fh
		return fh, err
	}
	err = guard(f.path, func() error {
		var err error
		db, err = bolt.Open(f.path, 0o600, &bolt.Options{Timeout: wait, ReadOnly: readOnly || f.readOnly, OpenFile: openFile})
		if errors.Is(err, berrors.ErrTimeout) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: %s stayed locked for %s; another krbops is using it (wait for it to finish)", ErrBusy, f.path, wait)
		}
		if err != nil {
			if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
				return damaged(f.path, "bbolt refused it: %v", err)
			}
			return fmt.Errorf("ledger: open %s: %w", f.path, err)
		}
		defer db.Close()
		if err := fn(db); err != nil {
			return err
		}
		return db.Close()
	})
	if de := (*DamagedError)(nil); errors.As(err, &de) && de.recovered {
		// A panic inside a transaction has rolled it back (bbolt's own
		// defers ran), so Close can release the file; a panic inside
		// bolt.Open left no *DB, only the file (and a memory map that
		// stays until the process exits).
		if (db == nil || guard(f.path, db.Close) != nil) && file != nil {
			release(file)
		}
		f.broken = err
	}
	return err
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func idKey(id string) ([]byte, bool) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n == 0 {
		return nil, false
	}
	return seqKey(n), true
}

func domainPrefix(cluster, role string) []byte {
	return []byte(cluster + "\x00" + role + "\x00")
}

func domainKey(r *Rotation, seq []byte) []byte {
	k := binary.BigEndian.AppendUint64(domainPrefix(r.Cluster, r.Role), uint64(r.Started.UnixNano()))
	return append(k, seq...)
}

func getRotation(b *bolt.Bucket, key []byte) (*Rotation, error) {
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	var r Rotation
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("ledger: record %d does not parse: %w", binary.BigEndian.Uint64(key), err)
	}
	return &r, nil
}

func putRotation(tx *bolt.Tx, key []byte, r *Rotation) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketRotations).Put(key, b); err != nil {
		return err
	}
	if r.Outcome.Open() {
		return tx.Bucket(bucketOpen).Put(key, nil)
	}
	return tx.Bucket(bucketOpen).Delete(key)
}

func (f *File) Start(ctx context.Context, r Rotation) (Rotation, error) {
	if r.Outcome == "" {
		r.Outcome = InProgress
	}
	if r.Started.IsZero() {
		r.Started = f.now()
	}
	r.Started = r.Started.UTC()
	if err := r.validate(); err != nil {
		return Rotation{}, err
	}
	err := f.update(ctx, func(tx *bolt.Tx) error { return startTx(tx, &r) })
	if err != nil {
		return Rotation{}, err
	}
	return r, nil
}

// Admit decides and starts in one bbolt transaction: the file's lock
// serialises every process's admissions.
func (f *File) Admit(ctx context.Context, req AdmitRequest) (Rotation, error) {
	if err := req.validate(); err != nil {
		return Rotation{}, err
	}
	r := req.Rotation
	if r.Outcome == "" {
		r.Outcome = InProgress
	}
	if err := r.validate(); err != nil {
		return Rotation{}, err
	}
	err := f.update(ctx, func(tx *bolt.Tx) error {
		now := f.now().UTC()
		r.Started = now
		prefix := domainPrefix(r.Cluster, r.Role)
		c := tx.Bucket(bucketDomain).Cursor()
		var last time.Time
		// The domain's keys end in the start time: the last key is the
		// latest rotation.
		k, _ := c.Seek(append(bytes.Clone(prefix), bytes.Repeat([]byte{0xff}, 17)...))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		if k != nil && bytes.HasPrefix(k, prefix) {
			last = domainStart(k, prefix)
		}
		var window []time.Time
		if req.Limit > 0 {
			for k, _ := c.Seek(windowFrom(prefix, now.Add(-req.Window))); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if s := domainStart(k, prefix); inWindow(s, now, req.Window) {
					window = append(window, s)
				}
			}
		}
		if refused := admission(req, now, window, last); refused != nil {
			return refused
		}
		return startTx(tx, &r)
	})
	if err != nil {
		return Rotation{}, err
	}
	return r, nil
}

func domainStart(k, prefix []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[len(prefix):]))).UTC()
}

func windowFrom(prefix []byte, since time.Time) []byte {
	from := bytes.Clone(prefix)
	if since.After(time.Unix(0, 0)) { // UnixNano is undefined far from 1970
		from = binary.BigEndian.AppendUint64(from, uint64(since.UnixNano()))
	}
	return from
}

// startTx records r (validated, Started set) unless its principal has an
// open rotation.
func startTx(tx *bolt.Tx, r *Rotation) error {
	rots := tx.Bucket(bucketRotations)
	c := tx.Bucket(bucketOpen).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		o, err := getRotation(rots, k)
		if err != nil {
			return err
		}
		if o != nil && o.Principal == r.Principal {
			return openConflict(r.Principal, o)
		}
	}
	seq, err := rots.NextSequence()
	if err != nil {
		return err
	}
	key := seqKey(seq)
	r.ID = strconv.FormatUint(seq, 10)
	if err := putRotation(tx, key, r); err != nil {
		return err
	}
	return tx.Bucket(bucketDomain).Put(domainKey(r, key), nil)
}

func (f *File) Update(ctx context.Context, id string, fn func(*Rotation) error) (Rotation, error) {
	key, ok := idKey(id)
	if !ok {
		return Rotation{}, fmt.Errorf("%w: rotation %q", ErrNotFound, id)
	}
	var out Rotation
	err := f.update(ctx, func(tx *bolt.Tx) error {
		cur, err := getRotation(tx.Bucket(bucketRotations), key)
		if err != nil {
			return err
		}
		if cur == nil {
			return fmt.Errorf("%w: rotation %s", ErrNotFound, id)
		}
		next := *cur
		if err := callerFunc(func() error { return fn(&next) }); err != nil {
			return err
		}
		if err := checkUpdate(*cur, &next, f.now().UTC()); err != nil {
			return err
		}
		out = next
		return putRotation(tx, key, &next)
	})
	if err != nil {
		return Rotation{}, err
	}
	return out, nil
}

func (f *File) Get(ctx context.Context, id string) (Rotation, error) {
	key, ok := idKey(id)
	if !ok {
		return Rotation{}, fmt.Errorf("%w: rotation %q", ErrNotFound, id)
	}
	var out *Rotation
	err := f.view(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = getRotation(tx.Bucket(bucketRotations), key)
		return err
	})
	if err != nil {
		return Rotation{}, err
	}
	if out == nil {
		return Rotation{}, fmt.Errorf("%w: rotation %s", ErrNotFound, id)
	}
	return *out, nil
}

func (f *File) List(ctx context.Context, flt Filter) ([]Rotation, error) {
	var out []Rotation
	// A batch asks, per target, for the last record of one principal:
	// skip the records whose JSON cannot name it without decoding them
	// (putRotation writes json.Marshal's encoding, so a record of the
	// principal holds exactly this text). Decoding every record made a
	// batch of N targets O(N²) in record decodes.
	var needle []byte
	if flt.Principal != "" {
		p, err := json.Marshal(flt.Principal)
		if err != nil {
			return nil, err
		}
		needle = append([]byte(`"principal":`), p...)
	}
	err := f.view(ctx, func(tx *bolt.Tx) error {
		rots := tx.Bucket(bucketRotations)
		c := rots.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if needle != nil && !bytes.Contains(v, needle) && json.Valid(v) {
				continue // (a record that is not JSON still fails below)
			}
			r, err := getRotation(rots, k)
			if err != nil {
				return err
			}
			if flt.match(r) {
				out = append(out, *r)
				if flt.Limit > 0 && len(out) == flt.Limit {
					return nil
				}
			}
		}
		return nil
	})
	return out, err
}

func (f *File) Pending(ctx context.Context) ([]Rotation, error) {
	var out []Rotation
	err := f.view(ctx, func(tx *bolt.Tx) error {
		rots := tx.Bucket(bucketRotations)
		c := tx.Bucket(bucketOpen).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			r, err := getRotation(rots, k)
			if err != nil {
				return err
			}
			if r != nil {
				out = append(out, *r)
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b Rotation) int { return a.Started.Compare(b.Started) })
	return out, err
}

func (f *File) CountSince(ctx context.Context, cluster, role string, since time.Time) (int, error) {
	n := 0
	prefix := domainPrefix(cluster, role)
	from := windowFrom(prefix, since)
	err := f.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDomain).Cursor()
		for k, _ := c.Seek(from); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n, err
}

func (f *File) Lock(ctx context.Context, principal, holder string, ttl time.Duration) (Lock, error) {
	if principal == "" || holder == "" || ttl <= 0 {
		return Lock{}, fmt.Errorf("ledger: lock needs a principal, a holder and a positive ttl (got %q, %q, %s)", principal, holder, ttl)
	}
	var out Lock
	err := f.update(ctx, func(tx *bolt.Tx) error {
		now := f.now().UTC()
		b := tx.Bucket(bucketLocks)
		cur, err := getLock(b, principal)
		if err != nil {
			return err
		}
		if cur != nil && cur.Holder != holder {
			return &LockedError{Lock: *cur, Stale: cur.Stale(now)}
		}
		out = Lock{Principal: principal, Holder: holder, Acquired: now, Expires: now.Add(ttl)}
		out.Host, out.PID, out.User = processIdentity()
		out.Renewed = now
		if cur != nil {
			out.Acquired = cur.Acquired // an extension, not a new lock
		}
		return putLock(b, out)
	})
	if err != nil {
		return Lock{}, err
	}
	return out, nil
}

func (f *File) Unlock(ctx context.Context, principal, holder string) error {
	return f.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLocks)
		cur, err := getLock(b, principal)
		if err != nil || cur == nil {
			return err
		}
		if cur.Holder != holder {
			return &LockedError{Lock: *cur, Stale: cur.Stale(f.now())}
		}
		return b.Delete([]byte(principal))
	})
}

func (f *File) BreakLock(ctx context.Context, principal, holder string, force bool) (Lock, error) {
	var out Lock
	err := f.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLocks)
		cur, err := getLock(b, principal)
		if err != nil {
			return err
		}
		if cur == nil {
			return fmt.Errorf("%w: no lock on %s", ErrNotFound, principal)
		}
		if holder != "" && cur.Holder != holder {
			return &LockedError{Lock: *cur, Stale: cur.Stale(f.now())}
		}
		if !force && !cur.Stale(f.now()) {
			return &LockedError{Lock: *cur}
		}
		out = *cur
		return b.Delete([]byte(principal))
	})
	if err != nil {
		return Lock{}, err
	}
	return out, nil
}

func (f *File) Locks(ctx context.Context) ([]Lock, error) {
	var out []Lock
	err := f.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLocks).ForEach(func(k, v []byte) error {
			var l Lock
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("ledger: lock of %s does not parse: %w", k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

func getLock(b *bolt.Bucket, principal string) (*Lock, error) {
	v := b.Get([]byte(principal))
	if v == nil {
		return nil, nil
	}
	var l Lock
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, fmt.Errorf("ledger: lock of %s does not parse: %w", principal, err)
	}
	return &l, nil
}

func putLock(b *bolt.Bucket, l Lock) error {
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return b.Put([]byte(l.Principal), v)
}

// processIdentity is the process that takes a lock: host, pid, user.
var processIdentity = func() (host string, pid int, user string) {
	host, _ = os.Hostname()
	user = strconv.Itoa(os.Geteuid())
	if u, err := osuser.Current(); err == nil {
		user = u.Username
	}
	return host, os.Getpid(), user
}

func (f *File) Record(ctx context.Context, e Event) (Event, error) {
	if e.Principal == "" || e.Action == "" {
		return Event{}, fmt.Errorf("ledger: an event needs a principal and an action")
	}
	err := f.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq, e.Time = seq, f.now().UTC()
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(seqKey(seq), v)
	})
	if err != nil {
		return Event{}, err
	}
	return e, nil
}

func (f *File) Events(ctx context.Context, principal string) ([]Event, error) {
	var out []Event
	err := f.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil // a ledger written before the audit trail existed
		}
		return b.ForEach(func(k, v []byte) error {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("ledger: audit event %x does not parse: %w", k, err)
			}
			if principal == "" || e.Principal == principal {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

// recheckUnlocked runs checkFile again while holding the file's lock for a
// moment, so that it never judges a ledger another process is creating
// or committing to. It gives up after wait with the first verdict.
func recheckUnlocked(ctx context.Context, path string, wait time.Duration, first error) error {
	fh, err := os.Open(path)
	if err != nil {
		return first
	}
	defer fh.Close()
	deadline := time.Now().Add(wait)
	for {
		busy, err := durable.TryLock(fh)
		if err != nil {
			return first
		}
		if !busy {
			defer durable.Unlock(fh)
			return checkFile(path)
		}
		if time.Now().After(deadline) {
			return first
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
