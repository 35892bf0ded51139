package kdcops

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/krbops/krbops/internal/readcap"
)

// The MIT keytab format (https://web.mit.edu/kerberos/krb5-latest/doc/formats/keytab_file_format.html):
//
//	header   0x05 0x01 (native byte order) or 0x05 0x02 (big-endian)
//	entry    int32 length; negative = a hole of -length bytes left by a
//	         removed entry; 0 = end of keytab
//	         int16 components (version 1: counts the realm too)
//	         uint16-counted realm, then each component
//	         uint32 name type (version 2 only)
//	         uint32 timestamp, uint8 kvno
//	         uint16 enctype, uint16-counted key
//	         uint32 kvno, present when at least 4 bytes of the entry are
//	         left; 0 means "use the 8-bit kvno"
//
// krbops parses keytabs itself rather than with gokrb5 so that an error
// names the byte offset and never carries key bytes (gokrb5's errors embed
// the raw buffer; see DESIGN.md).

// maxKeytabEntry bounds one entry. A real entry is around 100 bytes; a
// length beyond this is corruption, and the bound keeps a hostile file from
// making krbops allocate gigabytes.
const maxKeytabEntry = 64 << 10

// maxKeytabFile bounds the size of a file krbops agrees to read as a
// keytab or ccache: the largest real ones (hosts with hundreds of
// principals, caches with hundreds of service tickets) are a few MiB.
const maxKeytabFile = 64 << 20

// IsKeytabHeader reports whether b starts like a keytab: 0x05 then version
// 0x01 or 0x02. This is how --dir tells keytabs from other files, whatever
// their name. (A version 1 or 2 ccache starts the same way; those formats
// died with krb5 1.0 and parse as corrupt keytabs.)
func IsKeytabHeader(b []byte) bool {
	return len(b) >= 2 && b[0] == 0x05 && (b[1] == 0x01 || b[1] == 0x02)
}

// KeytabEntry is one key of a keytab. The key itself is not exported:
// krbops only needs it to spot duplicates (Fingerprint) and, with --online,
// to authenticate to the KDC. It never reaches a finding, log or error.
type KeytabEntry struct {
	Principal  string   // name@REALM, escaped as MIT's klist prints it
	Realm      string   // as stored
	Components []string // as stored
	NameType   int32    // 0 in version 1 keytabs, which do not store it
	Timestamp  time.Time
	KVNO       uint32 // the effective kvno: the 32-bit field when present and non-zero, else KVNO8
	KVNO8      uint8  // the 8-bit field: what readers that ignore the 32-bit field see
	Enctype    int32
	KeyLen     int
	Offset     int64 // byte offset of the entry's length field

	fingerprint [16]byte // SHA-256 of enctype and key, truncated: equal keys, equal fingerprints
	key         []byte   // only when read with KeepKeys
}

// SameKey reports whether two entries hold the same key bytes.
func (e KeytabEntry) SameKey(o KeytabEntry) bool {
	return e.Enctype == o.Enctype && e.fingerprint == o.fingerprint
}

// FormatError is a file that is not a valid keytab or ccache. Offset is
// the byte where the problem starts, so an operator can look at it with
// `xxd -s OFFSET`.
type FormatError struct {
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string { return fmt.Sprintf("corrupt at byte %d: %s", e.Offset, e.Msg) }

// FileError is a keytab or ccache that could not be used, with the file
// named: "keytab /etc/krb5.keytab: corrupt at byte 38: ...".
type FileError struct {
	Kind string // "keytab" or "credential cache"
	Path string
	Err  error
}

func (e *FileError) Error() string {
	var fe *FormatError
	if errors.As(e.Err, &fe) {
		return fmt.Sprintf("%s %s: %s", e.Kind, e.Path, fe.Error())
	}
	return fmt.Sprintf("%s %s: %s", e.Kind, e.Path, describeOpenError(e.Err))
}
func (e *FileError) Unwrap() error { return e.Err }

// Offset returns the byte offset of a format error, or -1.
func (e *FileError) Offset() int64 {
	var fe *FormatError
	if errors.As(e.Err, &fe) {
		return fe.Offset
	}
	return -1
}

// KeytabReader reads a keytab entry by entry, so a caller walking a tree of
// keytabs holds one entry at a time.
type KeytabReader struct {
	r        io.Reader
	size     int64 // total size when known, else -1
	off      int64 // offset of the next unread byte
	order    binary.ByteOrder
	version  int
	keepKeys bool
	holes    int
	done     bool
	buf      []byte
}

// KeytabOptions tune reading.
type KeytabOptions struct {
	// KeepKeys keeps each entry's key in memory for --online
	// authentication; without it only a fingerprint is kept.
	KeepKeys bool
}

// NewKeytabReader reads the header from r. size is the number of bytes r
// holds, or -1 when unknown; with it, a length that runs past the end is
// reported at its own offset instead of as a short read.
func NewKeytabReader(r io.Reader, size int64, o KeytabOptions) (*KeytabReader, error) {
	// A file is read through a buffer; bytes already in memory need none.
	if _, inMemory := r.(*bytes.Reader); !inMemory {
		r = bufio.NewReaderSize(r, 4096)
	}
	kr := &KeytabReader{r: r, size: size, keepKeys: o.KeepKeys}
	var hdr [2]byte
	n, err := io.ReadFull(kr.r, hdr[:])
	kr.off = int64(n)
	switch {
	case n == 0 && (err == io.EOF || err == nil):
		return nil, &FormatError{Offset: 0, Msg: "empty file, no keytab header"}
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return nil, err
	case n < 2:
		return nil, &FormatError{Offset: 0, Msg: "file is 1 byte, shorter than the 2-byte keytab header"}
	case hdr[0] != 0x05:
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("first byte is 0x%02x, not 0x05: not a keytab", hdr[0])}
	case hdr[1] == 0x01:
		kr.version, kr.order = 1, binary.NativeEndian
	case hdr[1] == 0x02:
		kr.version, kr.order = 2, binary.BigEndian
	default:
		return nil, &FormatError{Offset: 1, Msg: fmt.Sprintf("keytab version 0x%02x is not 0x01 or 0x02", hdr[1])}
	}
	return kr, nil
}

// Version is the keytab format version, 1 or 2.
func (kr *KeytabReader) Version() int { return kr.version }

// Holes is the number of holes (removed entries) skipped so far.
func (kr *KeytabReader) Holes() int { return kr.holes }

// Next returns the next entry, io.EOF after the last one, or a
// *FormatError. After an error the reader is done.
func (kr *KeytabReader) Next() (KeytabEntry, error) {
	for !kr.done {
		start := kr.off
		var lb [4]byte
		n, err := io.ReadFull(kr.r, lb[:])
		kr.off += int64(n)
		switch {
		case n == 0 && (err == io.EOF || err == nil):
			kr.done = true
			return KeytabEntry{}, io.EOF
		case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
			kr.done = true
			return KeytabEntry{}, err
		case n < 4:
			kr.done = true
			return KeytabEntry{}, &FormatError{Offset: start, Msg: fmt.Sprintf("truncated entry length: %d of 4 bytes before the end of the file", n)}
		}
		length := int64(int32(kr.order.Uint32(lb[:])))
		switch {
		case length == 0:
			// MIT stops reading here; anything after is not part of the keytab.
			kr.done = true
			return KeytabEntry{}, io.EOF
		case length < 0:
			if err := kr.skipHole(start, -length); err != nil {
				kr.done = true
				return KeytabEntry{}, err
			}
			kr.holes++
			continue
		}
		e, err := kr.readEntry(start, length)
		if err != nil {
			kr.done = true
			return KeytabEntry{}, err
		}
		return e, nil
	}
	return KeytabEntry{}, io.EOF
}

func (kr *KeytabReader) skipHole(start, n int64) error {
	if kr.size >= 0 && kr.off+n > kr.size {
		return &FormatError{Offset: start, Msg: fmt.Sprintf("hole of %d bytes runs past the end of the file (%d bytes)", n, kr.size)}
	}
	skipped, err := io.CopyN(io.Discard, kr.r, n)
	kr.off += skipped
	if err == io.EOF {
		return &FormatError{Offset: start, Msg: fmt.Sprintf("hole of %d bytes runs past the end of the file (%d bytes)", n, kr.off)}
	}
	return err
}

func (kr *KeytabReader) readEntry(start, length int64) (KeytabEntry, error) {
	if length > maxKeytabEntry {
		return KeytabEntry{}, &FormatError{Offset: start, Msg: fmt.Sprintf("entry length %d is implausible (over %d bytes)", length, maxKeytabEntry)}
	}
	if kr.size >= 0 && kr.off+length > kr.size {
		return KeytabEntry{}, &FormatError{Offset: start, Msg: fmt.Sprintf("entry of %d bytes runs past the end of the file (%d bytes)", length, kr.size)}
	}
	if cap(kr.buf) < int(length) {
		kr.buf = make([]byte, length)
	}
	buf := kr.buf[:length]
	n, err := io.ReadFull(kr.r, buf)
	base := kr.off
	kr.off += int64(n)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return KeytabEntry{}, &FormatError{Offset: start, Msg: fmt.Sprintf("entry of %d bytes is truncated: the file ends at byte %d", length, kr.off)}
		}
		return KeytabEntry{}, err
	}
	p := entryParser{buf: buf, base: base, order: kr.order}
	e, err := p.parse(kr.version, kr.keepKeys)
	if err != nil {
		return KeytabEntry{}, err
	}
	e.Offset = start
	return e, nil
}

// entryParser decodes one entry from its bytes with a bounds check before
// every read; base is the file offset of buf[0], for error messages.
type entryParser struct {
	buf   []byte
	base  int64
	pos   int
	order binary.ByteOrder
}

func (p *entryParser) fail(at int, format string, a ...any) error {
	return &FormatError{Offset: p.base + int64(at), Msg: fmt.Sprintf(format, a...)}
}

func (p *entryParser) take(n int, what string) ([]byte, error) {
	if n > len(p.buf)-p.pos {
		return nil, p.fail(p.pos, "%s needs %d bytes but the entry ends at byte %d", what, n, p.base+int64(len(p.buf)))
	}
	b := p.buf[p.pos : p.pos+n]
	p.pos += n
	return b, nil
}

func (p *entryParser) u16(what string) (uint16, error) {
	b, err := p.take(2, what)
	if err != nil {
		return 0, err
	}
	return p.order.Uint16(b), nil
}

func (p *entryParser) u32(what string) (uint32, error) {
	b, err := p.take(4, what)
	if err != nil {
		return 0, err
	}
	return p.order.Uint32(b), nil
}

func (p *entryParser) str(what string) (string, error) {
	at := p.pos
	n, err := p.u16(what + " length")
	if err != nil {
		return "", err
	}
	if int(n) > len(p.buf)-p.pos {
		return "", p.fail(at, "%s length %d runs past the end of the entry at byte %d", what, n, p.base+int64(len(p.buf)))
	}
	b, _ := p.take(int(n), what)
	return string(b), nil
}

func (p *entryParser) parse(version int, keepKeys bool) (KeytabEntry, error) {
	var e KeytabEntry
	at := p.pos
	c, err := p.u16("component count")
	if err != nil {
		return e, err
	}
	count := int(int16(c))
	if version == 1 {
		count-- // version 1 counts the realm as a component
	}
	if count <= 0 {
		return e, p.fail(at, "principal has %d name components", count)
	}
	// Each component takes at least its 2-byte length: a count the entry
	// cannot hold is corruption, caught before allocating for it.
	if count*2 > len(p.buf)-p.pos {
		return e, p.fail(at, "component count %d does not fit in the entry", count)
	}
	if e.Realm, err = p.str("realm"); err != nil {
		return e, err
	}
	e.Components = make([]string, count)
	for i := range e.Components {
		if e.Components[i], err = p.str(fmt.Sprintf("component %d", i+1)); err != nil {
			return e, err
		}
	}
	if version == 2 {
		nt, err := p.u32("name type")
		if err != nil {
			return e, err
		}
		e.NameType = int32(nt)
	}
	ts, err := p.u32("timestamp")
	if err != nil {
		return e, err
	}
	e.Timestamp = time.Unix(int64(ts), 0).UTC()
	v8, err := p.take(1, "kvno")
	if err != nil {
		return e, err
	}
	e.KVNO8 = v8[0]
	e.KVNO = uint32(v8[0])
	et, err := p.u16("enctype")
	if err != nil {
		return e, err
	}
	e.Enctype = int32(int16(et)) // MIT stores a signed 16-bit enctype
	at = p.pos
	klen, err := p.u16("key length")
	if err != nil {
		return e, err
	}
	if klen == 0 {
		return e, p.fail(at, "key of %s is empty", EnctypeName(e.Enctype))
	}
	if int(klen) > len(p.buf)-p.pos {
		return e, p.fail(at, "key length %d runs past the end of the entry at byte %d", klen, p.base+int64(len(p.buf)))
	}
	key, _ := p.take(int(klen), "key")
	e.KeyLen = int(klen)
	e.fingerprint = keyFingerprint(e.Enctype, key)
	if keepKeys {
		e.key = append([]byte(nil), key...)
	}
	// MIT's rule: the 32-bit kvno is there when 4 or more bytes remain; a
	// zero there is padding, not a kvno.
	if len(p.buf)-p.pos >= 4 {
		v32, _ := p.u32("kvno32")
		if v32 != 0 {
			e.KVNO = v32
		}
	}
	e.Principal = unparsePrincipal(e.Components, e.Realm)
	return e, nil
}

func keyFingerprint(enctype int32, key []byte) [16]byte {
	h := sha256.New()
	var et [4]byte
	binary.BigEndian.PutUint32(et[:], uint32(enctype))
	h.Write(et[:])
	h.Write(key)
	var fp [16]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// unparsePrincipal renders components and realm as MIT's krb5_unparse_name
// does, escaping the separators so the text parses back to the same name.
func unparsePrincipal(components []string, realm string) string {
	var b strings.Builder
	for i, c := range components {
		if i > 0 {
			b.WriteByte('/')
		}
		escapeName(&b, c, "/@")
	}
	b.WriteByte('@')
	escapeName(&b, realm, "@")
	return b.String()
}

func escapeName(b *strings.Builder, s, special string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || strings.IndexByte(special, c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == 0:
			b.WriteString(`\0`)
		default:
			b.WriteByte(c)
		}
	}
}

// Keytab is a whole keytab read into memory: fine for the few files named
// with --keytab; --dir streams with [KeytabReader] instead.
type Keytab struct {
	Version int
	Entries []KeytabEntry
	Holes   int
}

// ParseKeytab parses a keytab held in memory. It never panics, whatever
// data holds (see FuzzParseKeytab).
func ParseKeytab(data []byte, o KeytabOptions) (*Keytab, error) {
	return readKeytab(bytes.NewReader(data), int64(len(data)), o)
}

func readKeytab(r io.Reader, size int64, o KeytabOptions) (*Keytab, error) {
	kr, err := NewKeytabReader(r, size, o)
	if err != nil {
		return nil, err
	}
	kt := &Keytab{Version: kr.Version()}
	for {
		e, err := kr.Next()
		if err == io.EOF {
			kt.Holes = kr.Holes()
			return kt, nil
		}
		if err != nil {
			return kt, err
		}
		kt.Entries = append(kt.Entries, e)
	}
}

// ReadKeytabFile reads the keytab at path. Errors are *FileError.
func ReadKeytabFile(path string, o KeytabOptions) (*Keytab, error) {
	f, fi, err := readcap.Open(path, maxKeytabFile)
	if err != nil {
		return nil, &FileError{Kind: "keytab", Path: path, Err: err}
	}
	defer f.Close()
	kt, err := readKeytab(f, fi.Size(), o)
	if err != nil {
		return kt, &FileError{Kind: "keytab", Path: path, Err: err}
	}
	return kt, nil
}

// checkRegular refuses what cannot be a keytab or ccache file: a
// directory, a FIFO (reading would block forever), a device, or something
// larger than maxKeytabFile.
func checkRegular(fi os.FileInfo) error { return readcap.Check(fi, maxKeytabFile) }

// Principals lists the keytab's principals in order of first appearance.
func (kt *Keytab) Principals() []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range kt.Entries {
		if !seen[e.Principal] {
			seen[e.Principal] = true
			out = append(out, e.Principal)
		}
	}
	return out
}

// EntriesFor returns the entries of one principal.
func (kt *Keytab) EntriesFor(principal string) []KeytabEntry {
	var out []KeytabEntry
	for _, e := range kt.Entries {
		if e.Principal == principal {
			out = append(out, e)
		}
	}
	return out
}

// Wipe overwrites the keys kept with KeepKeys once they are no longer
// needed, so they do not linger in memory for the rest of a long run.
func (kt *Keytab) Wipe() {
	for i := range kt.Entries {
		clear(kt.Entries[i].key)
		kt.Entries[i].key = nil
	}
}

// openNoBlock opens path for reading without blocking: opening a FIFO
// named as a keytab (or swapped in during a --dir walk) would otherwise
// wait forever for a writer. checkRegular then refuses it.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
