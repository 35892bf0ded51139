package kdcops_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Hand-made keytab and ccache bytes for unit tests: corruption cases and
// rule edge cases that MIT tools will not produce on request. Real files
// made by MIT tools are tested in test/integration and seed the fuzz
// corpus.

// testKey is a recognisable key: no error, finding or log may contain it.
var testKey = []byte("KEY-MATERIAL-0123456789abcdef!!!")

// ktEntry is one keytab entry to encode.
type ktEntry struct {
	comps   []string
	realm   string
	ts      time.Time
	kvno    uint32 // encoded in 8 bits, and in the 32-bit field when ext
	ext     bool   // write the trailing 32-bit kvno
	enctype int16
	key     []byte
	pad     int // zero bytes after the entry's fields, inside its length
}

func entry(principal string, kvno uint32, enctype int16) ktEntry {
	return ktEntry{comps: splitComps(principal), realm: "EXAMPLE.COM", ts: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		kvno: kvno, ext: true, enctype: enctype, key: testKey}
}

func splitComps(p string) []string {
	var out []string
	start := 0
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

// ktBytes encodes a keytab of version 1 (native order) or 2 (big-endian).
func ktBytes(version byte, entries ...ktEntry) []byte {
	var order binary.AppendByteOrder = binary.BigEndian
	if version == 1 {
		order = binary.NativeEndian
	}
	out := []byte{0x05, version}
	for _, e := range entries {
		var b []byte
		n := len(e.comps)
		if version == 1 {
			n++
		}
		b = order.AppendUint16(b, uint16(n))
		b = order.AppendUint16(b, uint16(len(e.realm)))
		b = append(b, e.realm...)
		for _, c := range e.comps {
			b = order.AppendUint16(b, uint16(len(c)))
			b = append(b, c...)
		}
		if version == 2 {
			b = order.AppendUint32(b, 1)
		}
		b = order.AppendUint32(b, uint32(e.ts.Unix()))
		b = append(b, byte(e.kvno))
		b = order.AppendUint16(b, uint16(e.enctype))
		b = order.AppendUint16(b, uint16(len(e.key)))
		b = append(b, e.key...)
		if e.ext {
			b = order.AppendUint32(b, e.kvno)
		}
		b = append(b, make([]byte, e.pad)...)
		out = order.AppendUint32(out, uint32(len(b)))
		out = append(out, b...)
	}
	return out
}

// ktHole appends a hole of n zero bytes (a removed entry).
func ktHole(kt []byte, n int) []byte {
	kt = binary.BigEndian.AppendUint32(kt, uint32(int32(-n)))
	return append(kt, make([]byte, n)...)
}

// ccCred is one credential to encode.
type ccCred struct {
	client, server []string // components; the realm is the cache's
	serverRealm    string
	enctype        uint16
	auth, start    time.Time
	end, renew     time.Time
	flags          uint32
}

// ccBytes encodes a ccache of version 1-4 for principal comps@realm.
func ccBytes(version byte, realm string, comps []string, creds ...ccCred) []byte {
	var order binary.AppendByteOrder = binary.BigEndian
	if version <= 2 {
		order = binary.NativeEndian
	}
	b := []byte{0x05, version}
	if version == 4 {
		b = binary.BigEndian.AppendUint16(b, 12)
		b = binary.BigEndian.AppendUint16(b, 1)
		b = binary.BigEndian.AppendUint16(b, 8)
		b = binary.BigEndian.AppendUint32(b, 0xfffffffe) // KDC offset -2s
		b = binary.BigEndian.AppendUint32(b, 0)
	}
	data := func(s []byte) {
		b = order.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	principal := func(r string, cs []string) {
		if version != 1 {
			b = order.AppendUint32(b, 1)
		}
		n := len(cs)
		if version == 1 {
			n++
		}
		b = order.AppendUint32(b, uint32(n))
		data([]byte(r))
		for _, c := range cs {
			data([]byte(c))
		}
	}
	unix := func(t time.Time) uint32 {
		if t.IsZero() {
			return 0
		}
		return uint32(t.Unix())
	}
	principal(realm, comps)
	for _, c := range creds {
		sr := c.serverRealm
		if sr == "" {
			sr = realm
		}
		principal(realm, c.client)
		principal(sr, c.server)
		b = order.AppendUint16(b, c.enctype)
		if version == 3 {
			b = order.AppendUint16(b, c.enctype)
		}
		data(testKey)
		for _, t := range []time.Time{c.auth, c.start, c.end, c.renew} {
			b = order.AppendUint32(b, unix(t))
		}
		b = append(b, 0)
		b = order.AppendUint32(b, c.flags)
		b = order.AppendUint32(b, 1) // one address
		b = order.AppendUint16(b, 2)
		data([]byte{127, 0, 0, 1})
		b = order.AppendUint32(b, 0) // no authdata
		data([]byte("TICKET-BYTES"))
		data(nil)
	}
	return b
}

func tgt(realm string, auth, end, renew time.Time, flags uint32) ccCred {
	return ccCred{client: []string{"alice"}, server: []string{"krbtgt", realm}, enctype: 18,
		auth: auth, end: end, renew: renew, flags: flags}
}

// writeTemp writes data to a file of mode perm in a fresh directory.
func writeTemp(t *testing.T, name string, data []byte, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // umask
		t.Fatal(err)
	}
	return p
}
