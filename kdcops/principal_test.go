package kdcops_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/kdcops"
)

// ccacheBuilder writes MIT FILE ccaches (ccache_file_format) in tests.
type ccacheBuilder struct {
	version byte
	buf     []byte
}

func (c *ccacheBuilder) order() binary.AppendByteOrder {
	if c.version <= 2 {
		return binary.NativeEndian
	}
	return binary.BigEndian
}
func (c *ccacheBuilder) u8(v byte)    { c.buf = append(c.buf, v) }
func (c *ccacheBuilder) u16(v uint16) { c.buf = c.order().AppendUint16(c.buf, v) }
func (c *ccacheBuilder) u32(v uint32) { c.buf = c.order().AppendUint32(c.buf, v) }
func (c *ccacheBuilder) data(s string) {
	c.u32(uint32(len(s)))
	c.buf = append(c.buf, s...)
}

func (c *ccacheBuilder) principal(realm string, components ...string) {
	if c.version != 1 {
		c.u32(1) // KRB5_NT_PRINCIPAL
	}
	n := uint32(len(components))
	if c.version == 1 {
		n++
	}
	c.u32(n)
	c.data(realm)
	for _, s := range components {
		c.data(s)
	}
}

// credential appends one credential; addresses is the address count
// written, whatever follows.
func (c *ccacheBuilder) credential(addresses uint32) {
	c.principal("TEST.REALM", "alice")
	c.principal("TEST.REALM", "krbtgt", "TEST.REALM")
	c.u16(18) // keytype
	if c.version == 3 {
		c.u16(18)
	}
	c.data("0123456789abcdef0123456789abcdef")
	for range 4 { // authtime, starttime, endtime, renew_till
		c.u32(1700000000)
	}
	c.u8(0)                              // is_skey
	c.buf = append(c.buf, 0x40, 0, 0, 0) // ticket flags
	c.u32(addresses)
	if addresses == 0 {
		c.u32(0) // authdata
		c.data("ticket")
		c.data("")
	}
}

// newCCache returns a ccache of the given version for realm/components
// with creds credentials.
func newCCache(version byte, creds int, realm string, components ...string) []byte {
	c := &ccacheBuilder{version: version}
	c.u8(5)
	c.u8(version)
	if version == 4 {
		// One header field: the KDC time offset (tag 1, 8 bytes).
		c.buf = binary.BigEndian.AppendUint16(c.buf, 12)
		c.buf = binary.BigEndian.AppendUint16(c.buf, 1)
		c.buf = binary.BigEndian.AppendUint16(c.buf, 8)
		c.buf = append(c.buf, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	c.principal(realm, components...)
	for range creds {
		c.credential(0)
	}
	return c.buf
}

func writeCCache(t *testing.T, data []byte) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "krb5cc_test", string(data))
}

func TestCCachePrincipal(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"v4 user", newCCache(4, 1, "TEST.REALM", "alice"), "alice@TEST.REALM"},
		{"v4 host", newCCache(4, 2, "EXAMPLE.COM", "host", "web1.example.com"), "host/web1.example.com@EXAMPLE.COM"},
		{"v4 no credentials", newCCache(4, 0, "TEST.REALM", "bob"), "bob@TEST.REALM"},
		{"v3", newCCache(3, 1, "TEST.REALM", "carol"), "carol@TEST.REALM"},
		{"v2 native byte order", newCCache(2, 0, "TEST.REALM", "dave"), "dave@TEST.REALM"},
		{"v1 count includes realm", newCCache(1, 0, "TEST.REALM", "eve"), "eve@TEST.REALM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kdcops.CCachePrincipal(writeCCache(t, tc.data))
			if err != nil {
				t.Fatalf("CCachePrincipal: %v", err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCCachePrincipalCorruptCredentialCountDoesNotAbort(t *testing.T) {
	// A credential claiming 2^31-1 addresses: gokrb5 would allocate 64 GiB
	// for them and the runtime would abort the whole process. The default
	// principal comes before the credentials and is all that is needed.
	c := &ccacheBuilder{version: 4, buf: newCCache(4, 0, "TEST.REALM", "alice")}
	c.credential(0x7fffffff)
	path := writeCCache(t, c.buf)
	got, err := kdcops.CCachePrincipal(path) // reaching the next line is the test
	switch {
	case err == nil && got != "alice@TEST.REALM":
		t.Errorf("got %q", got)
	case err != nil && !strings.Contains(err.Error(), path):
		t.Errorf("error %q does not name the file", err)
	}
}

func TestCCachePrincipalErrors(t *testing.T) {
	valid := newCCache(4, 1, "TEST.REALM", "alice")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty file", nil, "corrupt or truncated"},
		{"one byte", []byte{5}, "corrupt or truncated"},
		{"first 10 bytes", valid[:10], "corrupt or truncated"},
		{"cut inside the realm", valid[:24], "corrupt or truncated"},
		{"bad magic", []byte("not a ccache at all"), "corrupt (invalid credential cache data"},
		{"bad version", []byte{5, 9, 0, 0, 0, 0}, "corrupt (invalid credential cache data"},
		{"no components", newCCache(4, 0, "TEST.REALM"), "no default principal"},
		{"huge component count", append(valid[:20:20], 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1, 'R'), "corrupt or truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeCCache(t, tc.data)
			got, err := kdcops.CCachePrincipal(path)
			if err == nil {
				t.Fatalf("accepted: %q", got)
			}
			if !strings.Contains(err.Error(), "credential cache "+path+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want the path and %q", err, tc.want)
			}
			if got != "" {
				t.Errorf("principal %q returned with an error", got)
			}
		})
	}

	missing := filepath.Join(t.TempDir(), "krb5cc_none")
	_, err := kdcops.CCachePrincipal(missing)
	if err == nil || err.Error() != "credential cache "+missing+": no such file" {
		t.Errorf("missing file: %v", err)
	}
}

func TestCCachePrincipalTruncations(t *testing.T) {
	t.Parallel()
	// Every cut inside the header or the default principal is an error; a
	// cut inside the credentials may yield the principal or an error, but
	// never a wrong principal.
	valid := newCCache(4, 1, "TEST.REALM", "host", "web1")
	head := len(newCCache(4, 0, "TEST.REALM", "host", "web1"))
	dir := t.TempDir()
	for n := 0; n < len(valid); n++ {
		path := filepath.Join(dir, fmt.Sprintf("cc%d", n))
		if err := os.WriteFile(path, valid[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := kdcops.CCachePrincipal(path)
		switch {
		case n < head && err == nil:
			t.Errorf("%d of %d bytes accepted: %q", n, len(valid), got)
		case n < head && !strings.Contains(err.Error(), path):
			t.Errorf("%d bytes: error %q does not name the file", n, err)
		case n >= head && err == nil && got != "host/web1@TEST.REALM":
			t.Errorf("%d bytes (head is %d): %q", n, head, got)
		case n >= head && err != nil && !strings.Contains(err.Error(), path):
			t.Errorf("%d bytes: error %q does not name the file", n, err)
		}
	}
}

func TestCCachePrincipalNeverPanics(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(20240301, 4120))
	valid := newCCache(4, 2, "TEST.REALM", "host", "web1.test")
	dir := t.TempDir()
	for i := range 2000 {
		// A new file per input: rewriting one file in place makes ext4
		// flush on every truncate, which is 5x slower.
		path := filepath.Join(dir, fmt.Sprintf("krb5cc_%d", i))
		var data []byte
		switch i % 4 {
		case 0: // random bytes
			data = make([]byte, rng.IntN(200))
			for j := range data {
				data[j] = byte(rng.UintN(256))
			}
		case 1: // a plausible magic, then random bytes
			data = []byte{5, byte(1 + rng.IntN(4))}
			for range rng.IntN(120) {
				data = append(data, byte(rng.UintN(256)))
			}
		case 2: // a valid cache with a few bytes flipped
			data = append([]byte(nil), valid...)
			for range 1 + rng.IntN(4) {
				data[2+rng.IntN(len(data)-2)] = byte(rng.UintN(256))
			}
		case 3: // a valid cache cut short, with a length field maxed out
			data = append([]byte(nil), valid[:rng.IntN(len(valid))]...)
			if len(data) > 8 {
				off := 2 + rng.IntN(len(data)-6)
				copy(data[off:], []byte{0x7f, 0xff, 0xff, 0xff})
			}
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := kdcops.CCachePrincipal(path) // a panic fails the test binary
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("input %d (% x): error %q does not name the file", i, data, err)
			}
			continue
		}
		if !strings.Contains(got, "@") {
			t.Fatalf("input %d (% x): principal %q without a realm", i, data, got)
		}
	}
}

func TestCCachePath(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "KRB5CCNAME" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		flag, env, want string
	}{
		{"FILE:/tmp/krb5cc_flag", "", "/tmp/krb5cc_flag"},
		{"/tmp/plain", "FILE:/tmp/env", "/tmp/plain"},
		{"", "FILE:/tmp/krb5cc_env", "/tmp/krb5cc_env"},
		{"", "/var/tmp/cc", "/var/tmp/cc"},
		{"", "/path/with:colon", "/path/with:colon"},
		{"", "", fmt.Sprintf("/tmp/krb5cc_%d", os.Getuid())},
	} {
		got, err := kdcops.CCachePath(tc.flag, env(tc.env))
		if err != nil || got != tc.want {
			t.Errorf("CCachePath(%q, KRB5CCNAME=%q) = %q, %v; want %q", tc.flag, tc.env, got, err, tc.want)
		}
	}
	for _, name := range []string{"KEYRING:persistent:0", "KCM:1000", "DIR:/run/user/1000/krb5cc", "MEMORY:x", "API:krb5cc"} {
		typ, _, _ := strings.Cut(name, ":")
		for _, viaEnv := range []bool{false, true} {
			flag, e := name, ""
			if viaEnv {
				flag, e = "", name
			}
			got, err := kdcops.CCachePath(flag, env(e))
			if err == nil {
				t.Errorf("%s accepted as %q", name, got)
				continue
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), typ+": caches are not supported") {
				t.Errorf("%s: error %q", name, err)
			}
		}
	}
}

func TestHostPrincipal(t *testing.T) {
	h, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	got, err := kdcops.HostPrincipal()
	if err != nil {
		t.Fatal(err)
	}
	if want := "host/" + strings.ToLower(h); got != want {
		t.Errorf("HostPrincipal %q, want %q", got, want)
	}
}

func TestSplitPrincipal(t *testing.T) {
	for _, tc := range []struct{ in, name, realm string }{
		{"alice@TEST.REALM", "alice", "TEST.REALM"},
		{"host/web1.test@TEST.REALM", "host/web1.test", "TEST.REALM"},
		{"odd@name@TEST.REALM", "odd@name", "TEST.REALM"},
		{"alice", "alice", ""},
		{"alice@", "alice", ""},
		{"@TEST.REALM", "", "TEST.REALM"},
		{"", "", ""},
	} {
		name, realm := kdcops.SplitPrincipal(tc.in)
		if name != tc.name || realm != tc.realm {
			t.Errorf("SplitPrincipal(%q) = %q, %q; want %q, %q", tc.in, name, realm, tc.name, tc.realm)
		}
	}
}
