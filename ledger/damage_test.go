package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/krbops/krbops/internal/fault"
)

// goodLedger writes a ledger with a few rotations and returns its bytes.
func goodLedger(t *testing.T) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "good.db")
	l, err := OpenFile(p, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i, pr := range []string{"HTTP/a@EX", "HTTP/b@EX", "HTTP/c@EX"} {
		if _, err := l.Start(context.Background(), rot(pr, "prod", "server")); err != nil {
			t.Fatal(i, err)
		}
	}
	l.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pageSize of a file goodLedger wrote: the meta page says.
func pageSizeOf(b []byte) int {
	return int(binary.NativeEndian.Uint32(b[pageHeaderSize+8:]))
}

// resum recomputes the checksum of the meta page at off after an edit, so
// the page passes bbolt's own check and only the ledger's checks remain.
func resum(b []byte, off int) {
	m := b[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	h := fnv.New64a()
	h.Write(m[:56])
	binary.NativeEndian.PutUint64(m[56:], h.Sum64())
}

func TestDamagedLedgersAreErrorsNotCrashes(t *testing.T) {
	good := goodLedger(t)
	ps := pageSizeOf(good)
	rng := rand.New(rand.NewPCG(10, 8))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"random bytes", random(64 << 10), "meta page 0: no bbolt magic number (not a bbolt file)"},
		{"text file", []byte("[libdefaults]\n default_realm = EX\n"), "meta page 0: "},
		{"truncated to three pages", good[:3*ps], "shorter than the 4 pages of an empty ledger"},
		{"truncated mid-page", good[:len(good)-100], "is not a whole number of"},
		{"truncated inside the first page", good[:100], "100 bytes is not a whole number of"},
		{"truncated inside the first meta page", good[:40], "meta page 0: shorter than a meta page"},
		{"both meta pages corrupted", edit(func(b []byte) []byte {
			b[pageHeaderSize+60] ^= 0xff
			b[ps+pageHeaderSize+60] ^= 0xff
			return b
		}), "both meta pages are invalid (page 0: checksum mismatch; page 1: checksum mismatch)"},
		{"meta version changed", edit(func(b []byte) []byte {
			binary.NativeEndian.PutUint32(b[pageHeaderSize+4:], 9)
			binary.NativeEndian.PutUint32(b[ps+pageHeaderSize+4:], 9)
			return b
		}), "bbolt format version 9, not 2"},
		{"meta says more pages than the file has", edit(func(b []byte) []byte {
			for _, off := range []int{0, ps} {
				binary.NativeEndian.PutUint64(b[off+pageHeaderSize+40:], 1<<20)
				resum(b, off)
			}
			return b
		}), "the file was cut short"},
		{"meta root past its pages", edit(func(b []byte) []byte {
			for _, off := range []int{0, ps} {
				binary.NativeEndian.PutUint64(b[off+pageHeaderSize+16:], 1<<40)
				resum(b, off)
			}
			return b
		}), "points past its own"},
		{"odd page size", edit(func(b []byte) []byte {
			for _, off := range []int{0, ps} {
				binary.NativeEndian.PutUint32(b[off+pageHeaderSize+8:], 3000)
				resum(b, off)
			}
			return b
		}), "page size 3000 is not a power of two"},
		// The meta pages are sound, every other page is garbage: bbolt
		// reads it and fails (or faults) inside; the ledger recovers.
		{"data pages garbage", edit(func(b []byte) []byte {
			copy(b[2*ps:], random(len(b)-2*ps))
			return b
		}), "is damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "ledger.db")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{false, true} {
				l, err := OpenFile(p, Options{Timeout: time.Second, ReadOnly: ro})
				if err == nil {
					// The meta pages passed; the damage shows when the
					// records are read.
					_, err = l.List(context.Background(), Filter{})
					l.Close()
				}
				if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "ledger "+p+" is damaged: ") || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("read-only %t: error %v, want ErrDamaged with %q", ro, err, tc.want)
				}
				if fault.ClassOf(err) != fault.Usage || !strings.Contains(fault.HintOf(err), "mv "+p+" "+p+".damaged") {
					t.Errorf("class %s, hint %q", fault.ClassOf(err), fault.HintOf(err))
				}
			}
			// Nothing was written to the damaged file.
			if b, _ := os.ReadFile(p); string(b) != string(tc.data) {
				t.Error("the damaged file was changed")
			}
		})
	}
}

// bbolt writes the two meta pages in turn, so a crash mid-commit leaves one
// torn: that is no damage, the ledger opens from the other.
func TestOneTornMetaPageStillOpens(t *testing.T) {
	good := goodLedger(t)
	ps := pageSizeOf(good)
	for _, off := range []int{0, ps} {
		b := append([]byte(nil), good...)
		b[off+pageHeaderSize+60] ^= 0xff
		p := filepath.Join(t.TempDir(), "ledger.db")
		os.WriteFile(p, b, 0o600)
		l, err := OpenFile(p, Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatalf("meta page at %d torn: %v", off, err)
		}
		if _, err := l.List(context.Background(), Filter{}); err != nil {
			t.Fatalf("meta page at %d torn: List: %v", off, err)
		}
		l.Close()
	}
}

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "sub", "ledger.db")
	if _, err := OpenFile(missing, Options{ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a read-only open created the directory")
	}

	p := filepath.Join(dir, "ledger.db")
	w := open(t, p, nil)
	if _, err := w.Start(ctx, rot("HTTP/a@EX", "prod", "server")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	r, err := OpenFile(p, Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := r.Pending(ctx); err != nil || len(got) != 1 {
		t.Fatalf("Pending: %v %v", got, err)
	}
	if _, err := r.Start(ctx, rot("HTTP/b@EX", "prod", "server")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Start on a read-only ledger: %v", err)
	}
	if _, err := r.Lock(ctx, "HTTP/b@EX", "me", time.Minute); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Lock on a read-only ledger: %v", err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Error("a read-only ledger changed the file")
	}

	// A bbolt file that is not a ledger.
	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenFile(other, Options{ReadOnly: true}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "not a krbops ledger") {
		t.Errorf("bbolt file without buckets: %v", err)
	}
}

// A panic in Update's callback is the caller's bug and passes through, not
// disguised as a damaged ledger.
func TestUpdateCallbackPanicPassesThrough(t *testing.T) {
	l := open(t, filepath.Join(t.TempDir(), "ledger.db"), nil)
	r, err := l.Start(context.Background(), rot("HTTP/a@EX", "prod", "server"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if p := recover(); p != "caller bug" {
			t.Fatalf("recovered %v, want the callback's panic", p)
		}
	}()
	l.Update(context.Background(), r.ID, func(*Rotation) error { panic("caller bug") })
}

// An empty file is a ledger bbolt has not initialised yet (another process
// is creating it, or one crashed right after creating it): a writer lets
// bbolt initialise it, a reader finds no ledger. Never "damaged".
func TestEmptyLedgerFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ledger.db")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(p, Options{ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only open of an empty file: %v, want fs.ErrNotExist", err)
	}
	l, err := OpenFile(p, Options{})
	if err != nil {
		t.Fatalf("read-write open of an empty file: %v", err)
	}
	defer l.Close()
	if _, err := l.Start(context.Background(), Rotation{Principal: "p@R", Cluster: "c", Role: "client", Operator: "o", Outcome: InProgress}); err != nil {
		t.Errorf("the initialised ledger does not take a rotation: %v", err)
	}
}
