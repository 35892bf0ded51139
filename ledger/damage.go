package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"runtime/debug"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/readcap"
	"github.com/krbops/krbops/internal/shquote"
)

// ErrDamaged is what errors.Is finds in a *DamagedError.
var ErrDamaged = errors.New("ledger: damaged")

// DamagedError is a ledger file bbolt cannot be trusted to open: empty,
// cut short, not a bbolt file, or with pages that do not add up. bbolt
// maps the file into memory and follows page numbers from it, so such a
// file can crash the whole process with SIGBUS (not a panic) instead of
// failing; it is refused before bbolt sees it, and a fault that slips
// through is recovered (see [File] and guard).
type DamagedError struct {
	Path   string
	Reason string

	recovered bool // from a panic or fault inside bbolt: its file may still be open
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("ledger %s is damaged: %s", e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// FaultClass: a damaged ledger is local input krbops cannot use
// (fault.Usage, exit 2); nothing was changed.
func (e *DamagedError) FaultClass() fault.Class { return fault.Usage }

// Hint says what an operator does about a damaged ledger.
func (e *DamagedError) Hint() string {
	aside := "move it aside"
	if mv := shquote.Command("mv", e.Path, e.Path+".damaged"); mv != "" {
		aside += " (" + mv + ")"
	}
	return "restore the ledger from a backup, or " + aside + " to start an empty ledger; the rotation history stays in the moved file"
}

func damaged(path, format string, a ...any) *DamagedError {
	return &DamagedError{Path: path, Reason: fmt.Sprintf(format, a...)}
}

// bbolt's on-disk meta page (go.etcd.io/bbolt internal/common): a 16-byte
// page header (id, flags, count, overflow), then the meta, in the host's
// byte order:
//
//	magic u32, version u32, pageSize u32, flags u32,
//	root bucket (root pgid u64, sequence u64), freelist pgid u64,
//	pgid u64 (high-water mark: pages in use), txid u64,
//	checksum u64 (FNV-1a 64 of the 56 bytes before it)
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64
	noFreelist     = ^uint64(0)
	// bbolt's page size is the OS page size at creation: 4 KiB, 16 KiB
	// or 64 KiB in practice; bbolt itself looks from 1 KiB to 16 MiB.
	minPageSize = 1 << 10
	maxPageSize = 1 << 24
	// A new bbolt file has 4 pages: two meta pages, the freelist and the
	// root leaf.
	minPages = 4
)

type boltMeta struct {
	pageSize        uint64 // read even when the checksum fails, to find page 1
	root, freelist  uint64
	highWater, txid uint64
	problem         string // why it is not valid; "" when it is
	magicOK         bool
}

func parseMeta(b []byte) boltMeta {
	var m boltMeta
	if len(b) < pageHeaderSize+metaSize {
		m.problem = "shorter than a meta page"
		return m
	}
	b = b[pageHeaderSize : pageHeaderSize+metaSize]
	o := binary.NativeEndian
	switch {
	case o.Uint32(b[0:]) != boltMagic:
		m.problem = "no bbolt magic number (not a bbolt file)"
		return m
	case o.Uint32(b[4:]) != boltVersion:
		m.magicOK = true
		m.problem = fmt.Sprintf("bbolt format version %d, not %d", o.Uint32(b[4:]), boltVersion)
		return m
	}
	m.magicOK = true
	m.pageSize = uint64(o.Uint32(b[8:]))
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != o.Uint64(b[56:]) {
		m.problem = "checksum mismatch"
		return m
	}
	m.root = o.Uint64(b[16:])
	m.freelist = o.Uint64(b[32:])
	m.highWater = o.Uint64(b[40:])
	m.txid = o.Uint64(b[48:])
	return m
}

// checkFile refuses a ledger file bbolt could crash on, before bbolt
// maps it. A missing file is fs.ErrNotExist (a writable open creates it).
//
// One invalid meta page is not damage: bbolt writes the two meta pages
// in turn, so a crash mid-commit leaves one torn and the other intact,
// and bbolt opens from the intact one (losing only the commit the crash
// interrupted). Both invalid is damage, as is a file whose size does not
// hold the pages its newest valid meta page says are in use.
// errEmpty: the file has no bytes yet. bbolt creates a ledger by making
// an empty file and then writing its first pages under its lock, so
// another process may see it empty for a moment; and a crash in that
// moment leaves it so. A writer lets bbolt initialise it; a reader has no
// ledger to read.
var errEmpty = errors.New("ledger: empty file")

func checkFile(path string) error {
	// Opened without blocking on a FIFO, and refused unless regular; the
	// size is bbolt's business (a ledger grows without bound).
	f, fi, err := readcap.Open(path, math.MaxInt64)
	var nr *readcap.NotRegularError
	if errors.As(err, &nr) {
		return fault.Usagef("point --ledger at the ledger file (a bbolt file krbops created)",
			"ledger %s: %s", path, nr)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if fi.Size() == 0 {
		return errEmpty
	}
	read := func(off int64) []byte {
		b := make([]byte, pageHeaderSize+metaSize)
		n, err := f.ReadAt(b, off)
		if err != nil && err != io.EOF {
			return nil
		}
		return b[:n]
	}
	// The meta pages are read before the file's size: bbolt grows a file
	// before it commits a meta page naming the new pages, so a writer in
	// another process can make the size larger than a meta page read
	// earlier says, never smaller.
	m0 := parseMeta(read(0))
	var m1 boltMeta
	if m0.problem == "" {
		m1 = parseMeta(read(int64(m0.pageSize)))
	} else {
		// Without a valid page 0 the page size is not known for sure:
		// try what page 0 says, then where bbolt itself looks.
		m1.problem = "not found"
		if ps := int64(m0.pageSize); m0.magicOK && ps >= minPageSize && ps <= maxPageSize {
			m1 = parseMeta(read(ps))
		}
		for ps := int64(minPageSize); m1.problem != "" && ps <= maxPageSize; ps <<= 1 {
			if m := parseMeta(read(ps)); m.problem == "" && int64(m.pageSize) == ps {
				m1 = m
			}
		}
	}
	fi, err = f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if m0.problem != "" && m1.problem != "" {
		if !m0.magicOK {
			return damaged(path, "meta page 0: %s", m0.problem)
		}
		return damaged(path, "both meta pages are invalid (page 0: %s; page 1: %s)", m0.problem, m1.problem)
	}
	m := m0
	if m0.problem != "" || m1.problem == "" && m1.txid > m0.txid {
		m = m1
	}
	ps := int64(m.pageSize)
	switch {
	case ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0:
		return damaged(path, "page size %d is not a power of two between 1 KiB and 16 MiB", ps)
	case size%ps != 0:
		return damaged(path, "%d bytes is not a whole number of %d-byte pages: the file was cut short mid-page", size, ps)
	case size < minPages*ps:
		return damaged(path, "%d bytes is shorter than the %d pages of an empty ledger", size, minPages)
	case m.highWater > uint64(size/ps):
		return damaged(path, "its meta page uses %d pages but the file ends after %d: the file was cut short", m.highWater, size/ps)
	case m.root >= m.highWater || m.freelist != noFreelist && m.freelist >= m.highWater:
		return damaged(path, "its meta page points past its own %d pages", m.highWater)
	}
	return nil
}

// guard runs fn, turning a memory fault and any panic inside it into a
// *DamagedError. bbolt reads the ledger through a memory map: a page
// number past the end of the file faults (SIGBUS), which would kill the
// process; with SetPanicOnFault it is a panic on this goroutine instead.
// Other panics of bbolt's (a page of the wrong type, a bad index) come
// from a damaged file too. A caller's own callback does not run under
// guard unprotected: Update passes its callback's panic through
// (see callerPanic).
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if cp, ok := p.(callerPanic); ok {
			panic(cp.v)
		}
		de := damaged(path, "bbolt failed reading it: %v", p)
		if _, fault := p.(interface{ Addr() uintptr }); fault {
			de.Reason = "reading it faulted (a page past the end of the file)"
		}
		de.recovered = true
		err = de
	}()
	return fn()
}

// callerPanic carries a panic of a caller's callback through guard
// unchanged: it is the caller's bug, not damage.
type callerPanic struct{ v any }

// callerFunc runs fn and re-panics its panic as a callerPanic.
func callerFunc(fn func() error) error {
	defer func() {
		if p := recover(); p != nil {
			panic(callerPanic{p})
		}
	}()
	return fn()
}

// isNotExist reports a missing ledger file.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
