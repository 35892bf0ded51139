package kdcops_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/krbops/krbops/kdcops"
)

// The fuzz targets hold the parsers to their contract on any input: no
// panic, an error is a *FormatError whose offset lies inside the input and
// whose text is short (so it cannot carry the input, and with it key
// bytes), and what parses can be linted. The corpus in testdata/fuzz holds
// files written by MIT tools (see test/integration/klistlint_test.go);
// `make fuzz` runs each target for a minute.

func FuzzParseKeytab(f *testing.F) {
	recent := time.Unix(1700000000, 0)
	f.Add(ktBytes(2, at(entry("host/a", 3, 18), recent), at(entry("host/a", 3, 23), recent)))
	f.Add(ktBytes(1, entry("svc", 259, 17)))
	f.Add(ktHole(ktBytes(2, entry("a", 1, 18)), 16))
	f.Add([]byte{5, 2, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		kt, err := kdcops.ParseKeytab(data, kdcops.KeytabOptions{})
		// The streaming reader with an unknown size must agree on where the
		// keytab ends or breaks.
		streamed, serr := streamKeytab(data)
		if err != nil {
			checkFormatError(t, err, len(data))
			if serr == nil {
				t.Fatalf("ParseKeytab failed (%v) but streaming did not", err)
			}
			var a, b *kdcops.FormatError
			if errors.As(err, &a) && errors.As(serr, &b) && a.Offset != b.Offset {
				t.Fatalf("offsets differ: sized %d (%s), streamed %d (%s)", a.Offset, a.Msg, b.Offset, b.Msg)
			}
			return
		}
		if serr != nil || streamed != len(kt.Entries) {
			t.Fatalf("streaming read %d entries, err %v; sized read %d", streamed, serr, len(kt.Entries))
		}
		last := int64(-1)
		for _, e := range kt.Entries {
			if e.Offset <= last || e.Offset >= int64(len(data)) || e.KeyLen == 0 || len(e.Components) == 0 {
				t.Fatalf("bad entry %+v", e)
			}
			last = e.Offset
		}
		kdcops.LintKeytab("fuzz", kt.Entries, kdcops.LintOptions{Principal: "p", MaxAge: time.Hour, Now: recent})
	})
}

func streamKeytab(data []byte) (int, error) {
	kr, err := kdcops.NewKeytabReader(bytes.NewReader(data), -1, kdcops.KeytabOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		_, err := kr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

func FuzzParseCCache(f *testing.F) {
	now := time.Unix(1700000000, 0)
	for _, v := range []byte{1, 2, 3, 4} {
		f.Add(ccBytes(v, "EXAMPLE.COM", alice, tgt("EXAMPLE.COM", now, now.Add(time.Hour), now.Add(time.Hour), 0x00800000)))
	}
	f.Add([]byte{5, 4, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cc, err := kdcops.ParseCCache(data, kdcops.CCacheOptions{KeepTGT: true})
		if err != nil {
			checkFormatError(t, err, len(data))
			return
		}
		for _, c := range cc.Creds {
			if c.Offset < 0 || c.Offset >= int64(len(data)) {
				t.Fatalf("credential offset %d outside %d bytes", c.Offset, len(data))
			}
		}
		kdcops.LintCCache("fuzz", cc, kdcops.LintOptions{Principal: "p", MinRemaining: time.Hour, Now: now})
	})
}

func checkFormatError(t *testing.T, err error, size int) {
	t.Helper()
	var fe *kdcops.FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FormatError", err, err)
	}
	if fe.Offset < 0 || fe.Offset > int64(size) {
		t.Fatalf("offset %d outside the %d-byte input: %v", fe.Offset, size, err)
	}
	if len(err.Error()) > 200 {
		t.Fatalf("error is %d bytes long, it may carry input bytes: %.80q", len(err.Error()), err.Error())
	}
}
