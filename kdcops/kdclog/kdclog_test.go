package kdclog

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// ev is an Event with strings, for comparing.
type ev struct {
	Time                          int64
	Kind                          Kind
	Client, Service, Addr, Status string
}

func (e ev) String() string {
	return fmt.Sprintf("%d %s %s->%s from %s [%s]", e.Time, e.Kind, e.Client, e.Service, e.Addr, e.Status)
}

func strEv(e *Event) ev {
	return ev{e.Time, e.Kind, string(e.Client), string(e.Service), string(e.Addr), string(e.Status)}
}

// copyAt copies a testdata file to a temp dir with the given mtime.
func copyAt(t *testing.T, name string, mtime time.Time) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return writeAt(t, name, data, mtime)
}

func writeAt(t *testing.T, name string, data []byte, mtime time.Time) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

func readAll(t *testing.T, path string, loc *time.Location) ([]ev, Stats) {
	t.Helper()
	r, err := openIn(path, loc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []ev
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strEv(e))
	}
	return out, r.Stats()
}

func unixUTC(y int, m time.Month, d, hh, mm, ss int) int64 {
	return time.Date(y, m, d, hh, mm, ss, 0, time.UTC).Unix()
}

func TestMITRecordedLog(t *testing.T) {
	p := copyAt(t, "mit-kdc.log", time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC))
	got, st := readAll(t, p, time.UTC)
	ts := unixUTC(2026, 12, 2, 6, 43, 27)
	want := []ev{
		{ts, AS, "krbops-lab-probe@KRBOPS.TEST", "krbtgt/KRBOPS.TEST@KRBOPS.TEST", "127.0.0.1", "CLIENT_NOT_FOUND"},
		{1796193807, AS, "alice@KRBOPS.TEST", "krbtgt/KRBOPS.TEST@KRBOPS.TEST", "127.0.0.1", ""},
		{ts, TGS, "alice@KRBOPS.TEST", "host/svc.krbops.test@KRBOPS.TEST", "127.0.0.1", ""},
		{ts, AS, "alice@KRBOPS.TEST", "krbtgt/KRBOPS.TEST@KRBOPS.TEST", "127.0.0.1", "PREAUTH_FAILED"},
		{ts, TGS, "alice@KRBOPS.TEST", "host/none.krbops.test@KRBOPS.TEST", "127.0.0.1", "S_PRINCIPAL_UNKNOWN"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	if st.Bad != 0 || st.Lines != 13 || st.Events != 5 || st.Ignored != 8 {
		t.Fatalf("stats = %+v, want 13 lines, 5 events, 8 ignored, 0 bad", st)
	}
}

func TestMITKadmindKeyChanges(t *testing.T) {
	data := string(mustRead(t, "mit-kadmind.log")) +
		"Dec 02 06:45:00 vm kadmind[12979](Notice): chpw request from 127.0.0.7 for bob@KRBOPS.TEST: success\n" +
		"Dec 02 06:45:01 vm kadmind[12979](Notice): chpw request from 127.0.0.7 for carol@KRBOPS.TEST: Password change rejected\n" +
		"Dec 02 06:45:02 vm kadmind[12979](Notice): setpw request from 127.0.0.8 by admin/admin@KRBOPS.TEST for dave@KRBOPS.TEST: success\n"
	p := writeAt(t, "kadmind.log", []byte(data), time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC))
	got, st := readAll(t, p, time.UTC)
	want := []ev{
		{unixUTC(2026, 12, 2, 6, 44, 11), KeyChange, "alice@KRBOPS.TEST", "", "127.0.0.1", ""},
		{unixUTC(2026, 12, 2, 6, 45, 0), KeyChange, "bob@KRBOPS.TEST", "", "127.0.0.7", ""},
		{unixUTC(2026, 12, 2, 6, 45, 2), KeyChange, "dave@KRBOPS.TEST", "", "127.0.0.8", ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || st.Bad != 0 {
		t.Fatalf("events:\n got %v\nwant %v (stats %+v)", got, want, st)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHeimdalRecordedLog(t *testing.T) {
	p := copyAt(t, "heimdal-kdc.log", time.Now())
	got, st := readAll(t, p, time.UTC)
	at := func(s string) int64 { return unixUTC(2026, 12, 2, 6, 43, map[string]int{"47": 47, "52": 52}[s]) }
	want := []ev{
		{at("47"), AS, "alice@H.TEST", "krbtgt/H.TEST@H.TEST", "127.0.0.1", ""},
		{at("47"), TGS, "alice@H.TEST", "host/svc.h.test@H.TEST", "127.0.0.1", ""},
		{at("47"), TGS, "alice@H.TEST", "host/none.h.test@H.TEST", "127.0.0.1", "S_PRINCIPAL_UNKNOWN"},
		{at("47"), TGS, "alice@H.TEST", "host/none.h.test@H.TEST", "127.0.0.1", "S_PRINCIPAL_UNKNOWN"},
		{at("47"), AS, "alice@H.TEST", "krbtgt/H.TEST@H.TEST", "127.0.0.1", "PREAUTH_FAILED"},
		{at("52"), AS, "nobody@H.TEST", "krbtgt/H.TEST@H.TEST", "127.0.0.1", "CLIENT_NOT_FOUND"},
		{at("52"), AS, "alice@H.TEST", "krbtgt/H.TEST@H.TEST", "127.0.0.1", ""},
		{at("52"), TGS, "alice@H.TEST", "host/svc.h.test@H.TEST", "127.0.0.1", ""},
		{unixUTC(2026, 12, 2, 6, 44, 3), AS, "alice@H.TEST", "kadmin/changepw@H.TEST", "127.0.0.1", ""}, // kpasswd's login
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events:\n got %v\nwant %v", strings.ReplaceAll(fmt.Sprint(got), "} {", "}\n{"), want)
	}
	if st.Bad != 0 {
		t.Fatalf("bad lines in a recorded Heimdal log: %+v", st.Samples)
	}

	p = copyAt(t, "heimdal-kpasswdd.log", time.Now())
	got, _ = readAll(t, p, time.UTC)
	if len(got) != 1 || got[0].Kind != KeyChange || got[0].Client != "alice@H.TEST" {
		t.Fatalf("kpasswdd log: %v, want alice's key change", got)
	}
}

func TestADExports(t *testing.T) {
	jsonl := `{"TimeCreated":"2026-12-02T06:50:01.123Z","Id":4768,"TargetUserName":"svc-web","TargetDomainName":"ad.test","ServiceName":"krbtgt","IpAddress":"::ffff:10.0.0.5","Status":"0x0"}
{"TimeCreated":"/Date(1796194202000)/","Id":4769,"TargetUserName":"svc-web@AD.TEST","TargetDomainName":"AD.TEST","ServiceName":"HOST1$","IpAddress":"::ffff:10.0.0.5","Status":"0x0"}
{"TimeCreated":"2026-12-02T06:50:03Z","Id":4768,"TargetUserName":"HOST1$","TargetDomainName":"AD.TEST","ServiceName":"krbtgt","IpAddress":"10.0.0.9","Status":"0x18"}
{"TimeCreated":"2026-12-02T06:50:04Z","Id":4624,"TargetUserName":"x"}
not json
`
	want := []ev{
		{unixUTC(2026, 12, 2, 6, 50, 1), AS, "svc-web@AD.TEST", "krbtgt/AD.TEST@AD.TEST", "10.0.0.5", ""},
		{1796194202, TGS, "svc-web@AD.TEST", "HOST1$@AD.TEST", "10.0.0.5", ""},
		{unixUTC(2026, 12, 2, 6, 50, 3), AS, "HOST1$@AD.TEST", "krbtgt/AD.TEST@AD.TEST", "10.0.0.9", "PREAUTH_FAILED"},
	}
	got, st := readAll(t, writeAt(t, "ad.jsonl", []byte(jsonl), time.Now()), time.UTC)
	if fmt.Sprint(got) != fmt.Sprint(want) || st.Bad != 1 || st.Ignored != 1 {
		t.Fatalf("json events:\n got %v\nwant %v (stats %+v)", got, want, st)
	}
	csv := "Status,TimeCreated,Id,TargetUserName,TargetDomainName,ServiceName,IpAddress,Extra\r\n" +
		"0x0,2026-12-02T06:50:01.123Z,4768,svc-web,ad.test,krbtgt,::ffff:10.0.0.5,x\r\n" +
		`0x0,/Date(1796194202000)/,4769,svc-web@AD.TEST,AD.TEST,HOST1$,::ffff:10.0.0.5,"a,b"` + "\r\n" +
		"0x18,2026-12-02T06:50:03Z,4768,HOST1$,AD.TEST,krbtgt,10.0.0.9,\r\n"
	got, st = readAll(t, writeAt(t, "ad.csv", []byte(csv), time.Now()), time.UTC)
	if fmt.Sprint(got) != fmt.Sprint(want) || st.Bad != 0 {
		t.Fatalf("csv events:\n got %v\nwant %v (stats %+v)", got, want, st)
	}
}

func TestSyslogYearInference(t *testing.T) {
	// A log from Dec 30 to Jan 2, rotated (mtime) on Jan 2 2027: December
	// is 2026, January 2027.
	line := func(ts, who string) string {
		return ts + " kdc1 krb5kdc[1](info): TGS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 10.0.0.1: ISSUE: authtime 1, etypes {rep=18}, " + who + "@R for host/a@R\n"
	}
	data := line("Dec 30 23:00:00", "a") + line("Dec 31 23:59:59", "b") + line("Jan  1 00:00:01", "c") + line("Jan 02 10:00:00", "d")
	p := writeAt(t, "kdc.log", []byte(data), time.Date(2027, 1, 2, 10, 5, 0, 0, time.UTC))
	got, _ := readAll(t, p, time.UTC)
	want := []int64{unixUTC(2026, 12, 30, 23, 0, 0), unixUTC(2026, 12, 31, 23, 59, 59), unixUTC(2027, 1, 1, 0, 0, 1), unixUTC(2027, 1, 2, 10, 0, 0)}
	for i, w := range want {
		if i >= len(got) || got[i].Time != w {
			t.Fatalf("times %v, want %v", got, want)
		}
	}
	// The same file with an mtime of Dec 31 2026: a December line after
	// the mtime belongs to the year before.
	p = writeAt(t, "kdc.log", []byte(line("Dec 30 23:00:00", "a")), time.Date(2026, 12, 28, 0, 0, 0, 0, time.UTC))
	got, _ = readAll(t, p, time.UTC)
	if len(got) != 1 || got[0].Time != unixUTC(2025, 12, 30, 23, 0, 0) {
		t.Fatalf("a line dated after the mtime: %v, want 2025", got)
	}
}

func TestGarbageLongLinesAndGzip(t *testing.T) {
	good := "Dec 02 06:43:27 vm krb5kdc[1](info): AS_REQ (1 etypes {aes256-cts-hmac-sha1-96(18)}) 10.0.0.1: ISSUE: authtime 1796193807, etypes {rep=18}, a@R for krbtgt/R@R\n"
	data := "\x00\x01binary junk\n" + strings.Repeat("x", MaxLine+10) + "\n" + good + "Dec 02 06:43:27 vm krb5kdc[1](info): AS_REQ (truncated\n" + good[:len(good)-1]
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(data))
	zw.Close()
	for name, b := range map[string][]byte{"plain": []byte(data), "gzip": gz.Bytes()} {
		got, st := readAll(t, writeAt(t, "kdc.log.1", b, time.Now()), time.UTC)
		if len(got) != 2 || st.Bad != 3 || st.Lines != 5 || len(st.Samples) != 3 {
			t.Errorf("%s: %d events, stats %+v; want 2 events, 3 bad of 5 lines", name, len(got), st)
		}
		if st.Samples[1].Line != 2 || len(st.Samples[1].Text) != sampleLen {
			t.Errorf("%s: sample of the long line: %+v", name, st.Samples[1])
		}
	}
}

func TestMergeByTime(t *testing.T) {
	mk := func(name string, secs ...int) string {
		var b strings.Builder
		for _, s := range secs {
			fmt.Fprintf(&b, "Dec 02 06:00:%02d kdc krb5kdc[1](info): TGS_REQ (1 etypes {x(18)}) 10.0.0.1: ISSUE: authtime 1, etypes {rep=18}, %s%d@R for host/a@R\n", s, name, s)
		}
		return writeAt(t, name, []byte(b.String()), time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC))
	}
	a, b := mk("a", 1, 4, 5, 9), mk("b", 2, 3, 6)
	m, err := OpenAll([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var order []string
	for {
		e, _, err := m.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, string(e.Client))
	}
	if got := strings.Join(order, " "); got != "a1@R b2@R b3@R a4@R a5@R b6@R a9@R" {
		t.Fatalf("merged order %s", got)
	}
	if st := m.Stats(); st.Events != 7 || st.Lines != 7 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOpenRefusesFIFO(t *testing.T) {
	if _, err := Open(t.TempDir()); err == nil {
		t.Fatal("Open of a directory succeeded")
	}
}

func TestUsage(t *testing.T) {
	line := func(s int, req, addr, status, client, service string) string {
		rest := client + " for " + service
		if status == "ISSUE" {
			rest = "authtime 1, etypes {rep=18}, " + rest
		}
		return fmt.Sprintf("Dec 02 06:00:%02d kdc krb5kdc[1](info): %s (1 etypes {x(18)}) %s: %s: %s\n", s, req, addr, status, rest)
	}
	kdc := line(1, "AS_REQ", "10.0.0.1", "ISSUE", "web@R", "krbtgt/R@R") +
		line(2, "TGS_REQ", "10.0.0.1", "ISSUE", "web@R", "HTTP/db@R") +
		line(3, "AS_REQ", "10.0.0.2", "ISSUE", "web@R", "krbtgt/R@R") +
		line(5, "AS_REQ", "10.0.0.3", "PREAUTH_FAILED", "web@R", "krbtgt/R@R") +
		line(6, "AS_REQ", "10.0.0.4", "PREAUTH_FAILED", "web@R", "krbtgt/R@R") +
		line(7, "AS_REQ", "10.0.0.4", "ISSUE", "web@R", "krbtgt/R@R")
	adm := "Dec 02 06:00:04 kdc kadmind[2](Notice): Request: kadm5_randkey_principal, web@R, success, client=admin/admin@R, service=kadmin/admin@R, addr=10.0.0.9\n"
	mt := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	m, err := OpenAll([]string{writeAt(t, "kdc.log", []byte(kdc), mt), writeAt(t, "kadmind.log", []byte(adm), mt)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	u := NewUsage(nil)
	for {
		e, _, err := m.Next()
		if err != nil {
			break
		}
		u.Add(e)
	}
	ps := u.Sorted()
	if len(ps) != 2 || ps[0].Name != "HTTP/db@R" || ps[1].Name != "web@R" {
		t.Fatalf("principals %v", ps)
	}
	db, web := ps[0], ps[1]
	if db.TGS != 1 || db.Client() || !db.Server() {
		t.Errorf("HTTP/db: %+v, want a server only", db)
	}
	if web.AS != 3 || !web.Client() || web.Server() || strings.Join(web.Addrs, ",") != "10.0.0.1,10.0.0.2,10.0.0.4" {
		t.Errorf("web: %+v", web)
	}
	if web.KeyChanges != 1 || web.FailedSince != 2 || strings.Join(web.FailedSinceAddrs, ",") != "10.0.0.3,10.0.0.4" || web.Failures["PREAUTH_FAILED"] != 2 {
		t.Errorf("web failures after the key change: %+v", web)
	}
}

// Lines cross the reader's blocks, and a line longer than a whole block
// is one bad line, not the end of the file.
func TestBlocksAndHugeLine(t *testing.T) {
	var b strings.Builder
	n := 0
	for i := range 3 * blockSize / 150 {
		if i == 7000 {
			b.WriteString(strings.Repeat("y", 2*blockSize+17) + "\n")
		}
		fmt.Fprintf(&b, "Dec 02 06:00:%02d kdc krb5kdc[1](info): TGS_REQ (1 etypes {x(18)}) 10.0.0.1: ISSUE: authtime 1, etypes {rep=18}, u%d@R for host/a@R\n", i%60, i)
		n++
	}
	got, st := readAll(t, writeAt(t, "kdc.log", []byte(b.String()), time.Now()), time.UTC)
	if len(got) != n || st.Bad != 1 || st.Lines != int64(n+1) || st.Samples[0].Line != 7001 {
		t.Fatalf("%d events of %d, stats %+v", len(got), n, st)
	}
	for i, e := range got {
		if e.Client != fmt.Sprintf("u%d@R", i) {
			t.Fatalf("event %d is %s: out of order or torn at a block edge", i, e.Client)
		}
	}
}

// Heimdal's kdc writes every line twice when two settings name one log
// (the lab's, and production's with both set): each event counts once.
func TestHeimdalDoubledLines(t *testing.T) {
	var doubled bytes.Buffer
	for _, l := range strings.SplitAfter(string(mustRead(t, "heimdal-kdc.log")), "\n") {
		doubled.WriteString(l + l)
	}
	once, _ := readAll(t, copyAt(t, "heimdal-kdc.log", time.Now()), time.UTC)
	twice, st := readAll(t, writeAt(t, "kdc.log", doubled.Bytes(), time.Now()), time.UTC)
	if fmt.Sprint(once) != fmt.Sprint(twice) || st.Bad != 0 {
		t.Fatalf("doubled log:\n got %v\nwant %v", twice, once)
	}
	kp, _ := readAll(t, writeAt(t, "kpasswdd.log", []byte(strings.Repeat(string(mustRead(t, "heimdal-kpasswdd.log")), 2)), time.Now()), time.UTC)
	if len(kp) != 1 {
		t.Fatalf("doubled kpasswdd line: %v", kp)
	}
}

// A Samba AD DC's own log, recorded from the lab (kinit, a service
// ticket, an unknown service, a wrong password, an unknown client): the
// KDC's per-request audit lines are the events; the pre-auth round, the
// UDP reply too large for its datagram and every other line are not.
func TestSambaRecordedLog(t *testing.T) {
	p := copyAt(t, "samba-ad-dc.log", time.Now())
	got, st := readAll(t, p, time.UTC)
	probe, login := unixUTC(2026, 12, 2, 7, 30, 3), unixUTC(2026, 12, 2, 7, 30, 8)
	const tgt = "krbtgt/AD.TEST@AD.TEST"
	want := []ev{
		{probe, AS, "krbops-lab-probe@AD.TEST", tgt, "127.0.0.1", "CLIENT_NOT_FOUND"}, // the lab's readiness probes
		{probe, AS, "krbops-lab-probe@AD.TEST", tgt, "127.0.0.1", "CLIENT_NOT_FOUND"},
		{login, AS, "alice@AD.TEST", tgt, "127.0.0.1", ""},
		{login, TGS, "alice@AD.TEST", "HTTP/web.ad.test@AD.TEST", "127.0.0.1", ""},
		{login, TGS, "alice@AD.TEST", "HTTP/none.ad.test@AD.TEST", "127.0.0.1", "S_PRINCIPAL_UNKNOWN"},
		{login, TGS, "alice@AD.TEST", "HTTP/none.ad.test@AD.TEST", "127.0.0.1", "S_PRINCIPAL_UNKNOWN"},
		{login, AS, "alice@AD.TEST", tgt, "127.0.0.1", "PREAUTH_FAILED"},
		{login, AS, "nobody@AD.TEST", tgt, "127.0.0.1", "CLIENT_NOT_FOUND"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events:\n got %v\nwant %v", strings.ReplaceAll(fmt.Sprint(got), "} {", "}\n{"), want)
	}
	r, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil || r.Format() != FormatSamba {
		t.Fatalf("format %q (%v), want %q", r.Format(), err, FormatSamba)
	}
	if st.Bad != 0 || st.Lines != 391 || st.Events+st.Ignored != st.Lines {
		t.Fatalf("stats %+v: every line of a recorded Samba log is known", st)
	}
}

// Samba's audit line with an IPv6 client, a status the reader has no
// name for, and lines that are not Samba's: the address loses its port,
// the status its ERR_ prefix, the garbage is counted.
func TestSambaAddressesAndGarbage(t *testing.T) {
	log := "[2026/12/02 07:30:08.669253,  3] ../../source4/auth/kerberos/krb5_init_context.c:90(smb_krb5_debug_wrapper)\n" +
		"  Kerberos: AS-REQ ERR_POLICY ipv6:::1:46164 bob@AD.TEST krbtgt/AD.TEST@AD.TEST elapsed=0.1\n" +
		"garbage without a header\n" +
		"[2026/13/02 07:30:09,  3] a month that is not\n" +
		"[2026/12/02 07:30:09,  3] ../../auth/auth_log.c:647(log_authentication_event_human_readable)\n" +
		"  Kerberos: TGS-REQ SUCCESS ipv4:10.1.2.3:500 bob@AD.TEST cifs/fs1.ad.test@AD.TEST etype=18/18\n"
	p := writeAt(t, "samba.log", []byte(log), time.Now())
	got, st := readAll(t, p, time.UTC)
	want := []ev{
		{unixUTC(2026, 12, 2, 7, 30, 8), AS, "bob@AD.TEST", "krbtgt/AD.TEST@AD.TEST", "::1", "POLICY"},
		{unixUTC(2026, 12, 2, 7, 30, 9), TGS, "bob@AD.TEST", "cifs/fs1.ad.test@AD.TEST", "10.1.2.3", ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || st.Bad != 2 {
		t.Fatalf("events %v (bad %d: %+v), want %v and 2 bad", got, st.Bad, st.Samples, want)
	}
}

// TestPrincipalLayout keeps the field order usage.go's comment promises:
// a 256-byte struct whose first cache line holds what a lookup and a
// client's ticket touch.
func TestPrincipalLayout(t *testing.T) {
	var p Principal
	if got := unsafe.Sizeof(p); got != 256 {
		t.Errorf("Principal is %d bytes, want 256 (a size class aligned to cache lines)", got)
	}
	if end := unsafe.Offsetof(p.LastTGSAsked) + 8; end > 64 {
		t.Errorf("the client's counters end at byte %d, past the first cache line", end)
	}
}

// A log of more blocks than the reader ever makes is read whole and in
// order with the blocks recycled, and a reader closed after its first
// event stops its producer, which may be waiting for a free block.
func TestBlocksRecycled(t *testing.T) {
	var b bytes.Buffer
	n := 0
	for b.Len() < (4*4+2+4)*blockSize {
		fmt.Fprintf(&b, "Dec 02 06:00:%02d kdc krb5kdc[1](info): TGS_REQ (1 etypes {x(18)}) 10.0.0.1: ISSUE: authtime 1, etypes {rep=18}, u%d@R for host/a@R\n", n%60, n)
		n++
	}
	path := writeAt(t, "kdc.log", b.Bytes(), time.Now())
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			if i != n {
				t.Fatalf("%d events of %d", i, n)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("u%d@R", i); string(ev.Client) != want {
			t.Fatalf("event %d is %s, want %s", i, ev.Client, want)
		}
	}
	if r.pipe.made > cap(r.pipe.free) {
		t.Errorf("%d blocks made, more than the %d the pipeline recycles", r.pipe.made, cap(r.pipe.free))
	}
	r.Close()

	r, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a hang guard, not a rate
		t.Fatal("Close hangs: the producer did not stop while waiting for a free block")
	}
}

// The shard's table finds every principal through growth, and two names
// under one first hash (forced here; by chance one in 2^64) stay apart.
func TestShardTable(t *testing.T) {
	sh := &shard{collided: map[string]*Principal{}, checkSeed: maphash.MakeSeed()}
	seed := maphash.MakeSeed()
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("u%d@R", i)
		sh.get(maphash.String(seed, names[i]), []byte(names[i]))
	}
	a, b := sh.get(42, []byte("a@R")), sh.get(42, []byte("b@R"))
	if a == b || a.Name != "a@R" || b.Name != "b@R" || sh.get(42, []byte("a@R")) != a || sh.get(42, []byte("b@R")) != b {
		t.Fatalf("names under one hash: %+v %+v", a, b)
	}
	for _, n := range names {
		if p := sh.get(maphash.String(seed, n), []byte(n)); p.Name != n {
			t.Fatalf("%s found as %s", n, p.Name)
		}
	}
	if sh.byHash.n != len(names)+1 || len(sh.collided) != 1 || 2*sh.byHash.n > len(sh.byHash.slots) {
		t.Errorf("%d in the table of %d slots, %d collided", sh.byHash.n, len(sh.byHash.slots), len(sh.collided))
	}
}
