package kdcops_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

func TestParseKeytabV2(t *testing.T) {
	big := entry("host/web1.example.com", 259, 18)
	padded := entry("host/web1.example.com", 7, 17)
	padded.pad = 12
	zero32 := entry("HTTP/web1.example.com", 5, 23)
	zero32.kvno = 5
	noExt := entry("HTTP/web1.example.com", 6, 18)
	noExt.ext = false
	data := ktBytes(2, big, padded, zero32, noExt)
	// A 32-bit kvno of 0 is padding: the 8-bit value counts.
	binaryPatchKVNO32(t, data, 3, 0)

	kt, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kt.Version != 2 || len(kt.Entries) != 4 {
		t.Fatalf("version %d, %d entries", kt.Version, len(kt.Entries))
	}
	e := kt.Entries[0]
	if e.Principal != "host/web1.example.com@EXAMPLE.COM" || e.Realm != "EXAMPLE.COM" || e.NameType != 1 {
		t.Errorf("principal = %q realm %q nametype %d", e.Principal, e.Realm, e.NameType)
	}
	if e.KVNO != 259 || e.KVNO8 != 3 {
		t.Errorf("kvno = %d (8-bit %d), want 259 (3)", e.KVNO, e.KVNO8)
	}
	if e.Enctype != 18 || e.KeyLen != len(testKey) || !e.Timestamp.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("entry = %+v", e)
	}
	if e.Offset != 2 {
		t.Errorf("first entry offset = %d, want 2", e.Offset)
	}
	if kt.Entries[1].KVNO != 7 {
		t.Errorf("padded entry kvno = %d", kt.Entries[1].KVNO)
	}
	if kt.Entries[2].KVNO != 5 {
		t.Errorf("zero 32-bit kvno: kvno = %d, want the 8-bit 5", kt.Entries[2].KVNO)
	}
	if kt.Entries[3].KVNO != 6 {
		t.Errorf("no 32-bit field: kvno = %d", kt.Entries[3].KVNO)
	}
	if got := kt.Principals(); len(got) != 2 || got[1] != "HTTP/web1.example.com@EXAMPLE.COM" {
		t.Errorf("Principals() = %v", got)
	}
	if n := len(kt.EntriesFor("HTTP/web1.example.com@EXAMPLE.COM")); n != 2 {
		t.Errorf("EntriesFor = %d entries", n)
	}
}

// binaryPatchKVNO32 rewrites the trailing 32-bit kvno of entry i.
func binaryPatchKVNO32(t *testing.T, data []byte, i int, v uint32) {
	t.Helper()
	off := 2
	for n := 0; ; n++ {
		l := int(int32(uint32(data[off])<<24 | uint32(data[off+1])<<16 | uint32(data[off+2])<<8 | uint32(data[off+3])))
		if n == i {
			end := off + 4 + l
			data[end-4], data[end-3], data[end-2], data[end-1] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
			return
		}
		off += 4 + l
	}
}

func TestParseKeytabV1NativeOrder(t *testing.T) {
	kt, err := kdcops.ParseKeytab(ktBytes(1, entry("svc", 2, 18)), kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kt.Version != 1 || kt.Entries[0].Principal != "svc@EXAMPLE.COM" || kt.Entries[0].NameType != 0 || kt.Entries[0].KVNO != 2 {
		t.Errorf("v1 entry = %+v", kt.Entries[0])
	}
}

func TestParseKeytabHolesAndEnd(t *testing.T) {
	data := ktBytes(2, entry("a", 1, 18))
	data = ktHole(data, 40)
	data = append(data, ktBytes(2, entry("b", 1, 18))[2:]...)
	data = append(data, 0, 0, 0, 0)             // length 0: the end
	data = append(data, 0xde, 0xad, 0xbe, 0xef) // ignored, as MIT does
	kt, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(kt.Entries) != 2 || kt.Holes != 1 || kt.Entries[1].Principal != "b@EXAMPLE.COM" {
		t.Errorf("entries %d holes %d", len(kt.Entries), kt.Holes)
	}
}

func TestUnparseEscapes(t *testing.T) {
	e := entry("x", 1, 18)
	e.comps = []string{"we/ird@na\\me", "tab\there"}
	kt, err := kdcops.ParseKeytab(ktBytes(2, e), kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := `we\/ird\@na\\me/tab\there@EXAMPLE.COM`; kt.Entries[0].Principal != want {
		t.Errorf("principal = %q, want %q", kt.Entries[0].Principal, want)
	}
}

func TestParseKeytabCorrupt(t *testing.T) {
	good := ktBytes(2, entry("host/a", 3, 18))
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	set16 := func(b []byte, off int, v uint16) []byte { b[off], b[off+1] = byte(v>>8), byte(v); return b }
	set32 := func(b []byte, off int, v uint32) []byte {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		return b
	}
	// Layout of good: 0 header, 2 length, 6 count, 8 realm len, 10 realm
	// (11 bytes), 21 comp1 len, 23 "host", 27 comp2 len, 29 "a", 30 name
	// type, 34 timestamp, 38 kvno, 39 enctype, 41 key len, 43 key.
	for _, tc := range []struct {
		name   string
		data   []byte
		offset int64
		msg    string
	}{
		{"empty", nil, 0, "empty file"},
		{"one byte", []byte{5}, 0, "shorter than the 2-byte keytab header"},
		{"not 0x05", []byte{4, 2}, 0, "first byte is 0x04"},
		{"version 3", []byte{5, 3}, 1, "keytab version 0x03"},
		{"truncated length", append(append([]byte(nil), good...), 0, 0), int64(len(good)), "truncated entry length: 2 of 4 bytes"},
		{"entry past end", good[:len(good)-5], 2, "runs past the end of the file"},
		{"huge entry", mut(func(b []byte) []byte { return set32(b, 2, 1<<30) }), 2, "implausible"},
		{"hole past end", ktHole([]byte{5, 2}, 8)[:8], 2, "hole of 8 bytes runs past the end"},
		{"no components", mut(func(b []byte) []byte { return set16(b, 6, 0) }), 6, "principal has 0 name components"},
		{"negative components", mut(func(b []byte) []byte { return set16(b, 6, 0xffff) }), 6, "principal has -1 name components"},
		{"too many components", mut(func(b []byte) []byte { return set16(b, 6, 500) }), 6, "component count 500 does not fit"},
		{"realm past entry", mut(func(b []byte) []byte { return set16(b, 8, 400) }), 8, "realm length 400 runs past the end of the entry"},
		{"component past entry", mut(func(b []byte) []byte { return set16(b, 27, 300) }), 27, "component 2 length 300"},
		{"key past entry", mut(func(b []byte) []byte { return set16(b, 41, 900) }), 41, "key length 900 runs past"},
		{"empty key", mut(func(b []byte) []byte {
			b = set16(b, 41, 0)
			return set32(b, 2, 41-6+4) // shrink the entry to end after the key length... plus 4
		}), 41, "key of aes256-cts-hmac-sha1-96 is empty"},
		{"entry ends in a component", mut(func(b []byte) []byte { return set32(b, 2, 20) }), 21, "component 1 length 4 runs past the end of the entry at byte 26"},
		{"entry ends in a length", mut(func(b []byte) []byte { return set32(b, 2, 16) }), 21, "component 1 length needs 2 bytes but the entry ends at byte 22"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kdcops.ParseKeytab(tc.data, kdcops.KeytabOptions{KeepKeys: true})
			var fe *kdcops.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *FormatError", err, err)
			}
			if fe.Offset != tc.offset || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("got offset %d %q, want offset %d containing %q", fe.Offset, fe.Msg, tc.offset, tc.msg)
			}
			noKeyMaterial(t, err.Error())
		})
	}
}

// noKeyMaterial fails when s holds testKey in any form an error could
// carry it: raw, hex, or Go's %v of a byte slice.
func noKeyMaterial(t *testing.T, s string) {
	t.Helper()
	decimal := strings.Trim(fmt.Sprint(testKey[:8]), "[]")
	for _, form := range []string{string(testKey[:8]), hex.EncodeToString(testKey[:8]), decimal} {
		if strings.Contains(s, form) {
			t.Fatalf("key material in %q", s)
		}
	}
}

// The reader streams: with an unknown size a truncated entry is still
// named at its own offset.
func TestKeytabReaderUnknownSize(t *testing.T) {
	data := ktBytes(2, entry("a", 1, 18), entry("b", 1, 18))
	kr, err := kdcops.NewKeytabReader(bytes.NewReader(data[:len(data)-3]), -1, kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Next(); err != nil {
		t.Fatalf("first entry: %v", err)
	}
	_, err = kr.Next()
	var fe *kdcops.FormatError
	if !errors.As(err, &fe) || !strings.Contains(fe.Msg, "truncated") || fe.Offset != int64(len(data)/2+1) {
		t.Errorf("second entry: %v", err)
	}
	if _, err := kr.Next(); err != io.EOF {
		t.Errorf("after an error Next = %v, want io.EOF", err)
	}
}

func TestSameKey(t *testing.T) {
	a, b, c := entry("p", 1, 18), entry("p", 1, 18), entry("p", 1, 18)
	c.key = []byte("another-key-of-the-same-length!!")
	kt, err := kdcops.ParseKeytab(ktBytes(2, a, b, c), kdcops.KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !kt.Entries[0].SameKey(kt.Entries[1]) || kt.Entries[0].SameKey(kt.Entries[2]) {
		t.Error("SameKey does not tell equal keys from different ones")
	}
}

func TestReadKeytabFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := kdcops.ReadKeytabFile(dir, kdcops.KeytabOptions{})
	if err == nil || err.Error() != "keytab "+dir+": it is a directory, not a regular file" {
		t.Errorf("directory: %v", err)
	}
	_, err = kdcops.ReadKeytabFile(dir+"/missing", kdcops.KeytabOptions{})
	if err == nil || err.Error() != "keytab "+dir+"/missing: no such file" {
		t.Errorf("missing: %v", err)
	}
	p := writeTemp(t, "bad.keytab", []byte{5, 2, 0, 0, 0, 9, 1}, 0o600)
	_, err = kdcops.ReadKeytabFile(p, kdcops.KeytabOptions{})
	var fe *kdcops.FileError
	if !errors.As(err, &fe) || fe.Offset() != 2 || err.Error() != "keytab "+p+": corrupt at byte 2: entry of 9 bytes runs past the end of the file (7 bytes)" {
		t.Errorf("corrupt: %v", err)
	}
}

func TestIsKeytabHeader(t *testing.T) {
	for in, want := range map[string]bool{"\x05\x02": true, "\x05\x01rest": true, "\x05\x04": false, "\x05": false, "": false, "\x04\x02": false} {
		if got := kdcops.IsKeytabHeader([]byte(in)); got != want {
			t.Errorf("IsKeytabHeader(%q) = %t", in, got)
		}
	}
}

// A FIFO named as a keytab is refused at once instead of blocking on open.
func TestReadKeytabFileFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo.keytab")
	if err := mkfifo(p); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() { _, err := kdcops.ReadKeytabFile(p, kdcops.KeytabOptions{}); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(time.Minute): // a hang guard: open(2) on a FIFO blocks for good
		t.Fatal("ReadKeytabFile blocked on a FIFO")
	}
}
