package kdcops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/fault"
)

func kpKey(t *testing.T) types.EncryptionKey {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return types.EncryptionKey{KeyType: 18, KeyValue: b}
}

// kpRequest builds a request as KpasswdSet does, with a made-up ticket.
func kpRequest(t *testing.T, target *types.PrincipalName) ([]byte, types.EncryptionKey) {
	t.Helper()
	cname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"svc", "web1"}}
	tkt := messages.Ticket{TktVNO: 5, Realm: "R.TEST",
		SName:   types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"kadmin", "changepw"}},
		EncPart: types.EncryptedData{EType: 18, KVNO: 1, Cipher: []byte("opaque ticket")}}
	msg, subkey, err := kpasswdRequest(cname, "R.TEST", target, "R.TEST", "Np-secret-1", tkt, kpKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return msg, subkey
}

// A self change is version 1 with the bare password and no
// ChangePasswdData, so no targname; a set-password is 0xff80 with
// targname and targrealm.
func TestKpasswdRequestForms(t *testing.T) {
	msg, subkey := kpRequest(t, nil)
	info, err := ParseKpasswdRequest(msg, subkey)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != KpasswdVersionChange || string(info.UserData) != "Np-secret-1" || info.TargName != nil {
		t.Errorf("self change: version 0x%04x, user data %d bytes, targname %v; want 0x0001 with the bare password and no target",
			info.Version, len(info.UserData), info.TargName)
	}
	if binary.BigEndian.Uint16(msg) != uint16(len(msg)) {
		t.Errorf("length field %d, message %d bytes", binary.BigEndian.Uint16(msg), len(msg))
	}
	var ap messages.APReq
	if err := ap.Unmarshal(info.APReq); err != nil {
		t.Errorf("the AP-REQ does not decode: %v", err)
	}

	target := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"HOST1$"}}
	msg, subkey = kpRequest(t, &target)
	info, err = ParseKpasswdRequest(msg, subkey)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != KpasswdVersionSet || string(info.Password) != "Np-secret-1" ||
		strings.Join(info.TargName, "/") != "HOST1$" || info.TargRlm != "R.TEST" {
		t.Errorf("set-password: version 0x%04x, targname %v@%s; want 0xff80 naming HOST1$@R.TEST", info.Version, info.TargName, info.TargRlm)
	}
	if _, err := ParseKpasswdRequest(msg, kpKey(t)); err == nil {
		t.Error("the KRB-PRIV opened with another key")
	}
}

// kpReply builds an RFC 3244 reply: a KRB-PRIV under key with code and
// text, behind an AP-REP that the client only skips.
func kpReply(t *testing.T, version uint16, key types.EncryptionKey, code uint16, text []byte) []byte {
	t.Helper()
	ud := binary.BigEndian.AppendUint16(nil, code)
	priv := messages.NewKRBPriv(messages.EncKrbPrivPart{UserData: append(ud, text...), Timestamp: time.Now().UTC().Truncate(time.Second)})
	if err := priv.EncryptEncPart(key); err != nil {
		t.Fatal(err)
	}
	pb, err := priv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := frameKpasswd(version, []byte{0x6f, 0x03, 0x02, 0x01, 0x05}, pb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kpErrorReply is the error form: no AP-REP, a KRB-ERROR whose e-data
// carries the result code and text.
func kpErrorReply(t *testing.T, krbCode int32, edata []byte) []byte {
	t.Helper()
	ke := messages.NewKRBError(types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"kadmin", "changepw"}}, "R.TEST", krbCode, "etext")
	ke.EData = edata
	kb, err := ke.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := frameKpasswd(1, nil, kb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseKpasswdReply(t *testing.T) {
	key := kpKey(t)
	r, err := parseKpasswdReply(kpReply(t, 1, key, 0, []byte("Password changed")), key)
	if err != nil || r.code != 0 || string(r.result) != "Password changed" {
		t.Errorf("success reply: %+v %v", r, err)
	}
	// AD answers a set-password with 0xff80.
	if r, err := parseKpasswdReply(kpReply(t, KpasswdVersionSet, key, 4, nil), key); err != nil || r.code != 4 {
		t.Errorf("0xff80 reply: %+v %v", r, err)
	}
	// A reply sealed with another subkey is someone else's: refused, so a
	// stray datagram is never taken as the answer.
	if _, err := parseKpasswdReply(kpReply(t, 1, kpKey(t), 0, nil), key); err == nil || !strings.Contains(err.Error(), "subkey") {
		t.Errorf("reply under another key: %v", err)
	}
	if !kpasswdReplyMatcher(key)(kpReply(t, 1, key, 0, nil)) || kpasswdReplyMatcher(key)(kpReply(t, 1, kpKey(t), 0, nil)) {
		t.Error("the matcher does not tell this request's reply from another's")
	}
	// The error form: the code from e-data.
	r, err = parseKpasswdReply(kpErrorReply(t, errorcode.KRB_ERR_GENERIC, append([]byte{0, 1}, "Request length was inconsistent"...)), key)
	if err != nil || r.code != 1 || string(r.result) != "Request length was inconsistent" || r.krbCode != 0 {
		t.Errorf("error reply with e-data: %+v %v", r, err)
	}
	// A KRB-ERROR with no result code keeps its Kerberos code.
	r, err = parseKpasswdReply(kpErrorReply(t, errorcode.KRB_AP_ERR_SKEW, nil), key)
	if err != nil || r.krbCode != errorcode.KRB_AP_ERR_SKEW {
		t.Errorf("bare error reply: %+v %v", r, err)
	}
	// Garbage and truncations are errors, never panics (gokrb5's
	// kadmin.Reply.Unmarshal indexes without checking).
	good := kpReply(t, 1, key, 0, nil)
	for _, b := range [][]byte{nil, {0}, {0, 6, 0, 1, 0}, {0, 6, 0, 2, 0, 0}, {0, 9, 0, 1, 0, 0}, {0, 8, 0, 1, 0, 9, 0, 0},
		good[:len(good)-1], append(bytes.Clone(good[:4]), 0xff, 0xff), {0x7e, 0x01}} {
		if _, err := parseKpasswdReply(b, key); err == nil {
			t.Errorf("reply % x accepted", b)
		}
	}
}

func FuzzParseKpasswdReply(f *testing.F) {
	key := types.EncryptionKey{KeyType: 18, KeyValue: make([]byte, 32)}
	f.Add([]byte{0, 6, 0, 1, 0, 0})
	f.Add([]byte{0x7e, 0x03, 0x02, 0x01, 0x05})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseKpasswdReply(b, key)
		ParseKpasswdRequest(b, key)
	})
}

// Every result code has its own reason and a hint, and the class a
// script can branch on.
func TestKpasswdErrorCodes(t *testing.T) {
	reasons := map[string]bool{}
	for code, class := range map[int]fault.Class{1: fault.Unreachable, 2: fault.CheckFailed, 3: fault.CheckFailed, 4: fault.CheckFailed,
		5: fault.CheckFailed, 6: fault.Unreachable, 7: fault.CheckFailed, 99: fault.Unreachable} {
		e := newKpasswdError("kdc1:464", true, kpasswdResult{code: code, result: []byte("server\x1b[31m text\n")})
		if e.Reason() == "" || e.Hint() == "" || reasons[e.Reason()] {
			t.Errorf("code %d: reason %q hint %q (a reason must be its own)", code, e.Reason(), e.Hint())
		}
		reasons[e.Reason()] = true
		if got := fault.ClassOf(e); got != class {
			t.Errorf("code %d: class %v, want %v", code, got, class)
		}
		msg := e.Error()
		if strings.ContainsAny(msg, "\n\x1b") || !strings.Contains(msg, "kdc1:464") || !strings.Contains(msg, "server[31m text") {
			t.Errorf("code %d: message %q: want one clean line naming the server and its text", code, msg)
		}
	}
	if e := newKpasswdError("s", true, kpasswdResult{code: 99}); e.Name != "KRB5_KPASSWD_UNKNOWN" || !strings.Contains(e.Reason(), "99") {
		t.Errorf("unknown code: %s", e)
	}
	// ACCESSDENIED reads differently for a self change (no targname was
	// sent) and for a set-password (the admin's rights).
	self, admin := newKpasswdError("s", true, kpasswdResult{code: 5}), newKpasswdError("s", false, kpasswdResult{code: 5})
	if !strings.Contains(self.Hint(), "no targname") || !strings.Contains(admin.Hint(), "kadm5.acl") || self.Reason() == admin.Reason() {
		t.Errorf("access denied: self %q / %q; admin %q / %q", self.Reason(), self.Hint(), admin.Reason(), admin.Hint())
	}
	if h := newKpasswdError("s", false, kpasswdResult{code: 6}).Hint(); !strings.Contains(h, "0xff80") {
		t.Errorf("bad version hint %q does not name the version", h)
	}
	// The server's text is capped.
	long := newKpasswdError("s", true, kpasswdResult{code: 4, result: bytes.Repeat([]byte("x"), 5000)})
	if len(long.Result) > maxKpasswdText+len("…") {
		t.Errorf("result text of %d bytes", len(long.Result))
	}
	skew := newKpasswdError("s", true, kpasswdResult{krbCode: errorcode.KRB_AP_ERR_SKEW, eText: "Clock skew too great"})
	if !skew.KRBError || skew.Name != "KRB_AP_ERR_SKEW" || !strings.Contains(skew.Hint(), "clock-check") {
		t.Errorf("skew: %v / %s", skew, skew.Hint())
	}
}

// AD's policy reasons, as text (Samba, MIT) or as Windows' 30-byte blob.
func TestKpasswdPolicyHints(t *testing.T) {
	for text, want := range map[string]string{
		"Password does not meet complexity requirements":                           "upper, lower, digit and symbol",
		"Password is too young to change":                                          "minimum age",
		"Current password's minimum life has not expired":                          "minimum age",
		"Password too short, password must be at least 128 characters long.":       "longer password",
		"Password is already in password history. New password must not match any": "already holds this password",
		"Cannot reuse password":                                                    "already holds this password",
		"something else":                                                           "password policy refused it",
	} {
		e := newKpasswdError("s", true, kpasswdResult{code: 4, result: []byte(text)})
		if !strings.Contains(e.Hint(), want) {
			t.Errorf("%q: hint %q, want it to say %q", text, e.Hint(), want)
		}
	}

	blob := make([]byte, 30)
	binary.BigEndian.PutUint32(blob[2:], 7)                  // minimum length
	binary.BigEndian.PutUint32(blob[6:], 24)                 // history
	binary.BigEndian.PutUint32(blob[10:], ADPasswordComplex) // properties
	maxAge := int64(-42 * 864000000000)                      // negative, as AD stores it
	binary.BigEndian.PutUint64(blob[14:], uint64(maxAge))
	binary.BigEndian.PutUint64(blob[22:], uint64(864000000000+1)) // min age: a day and a tick
	p, ok := DecodeADPolicy(blob)
	if !ok || p != (ADPasswordPolicy{MinLength: 7, History: 24, Properties: 1, MaxAgeDays: 42, MinAgeDays: 2}) {
		t.Fatalf("decoded %+v %v", p, ok)
	}
	e := newKpasswdError("s", true, kpasswdResult{code: 4, result: blob})
	for _, want := range []string{"at least 7 characters", "complexity on", "last 24 passwords", "minimum age 2 days", "maximum age 42 days"} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("%q does not say %q", e.Error(), want)
		}
	}
	if e.Policy == nil || !strings.Contains(e.Hint(), "minimum age") {
		t.Errorf("policy %+v, hint %q", e.Policy, e.Hint())
	}
	never := bytes.Clone(blob)
	binary.BigEndian.PutUint64(never[14:], 1<<63)
	if p, _ := DecodeADPolicy(never); p.MaxAgeDays != 0 {
		t.Errorf("\"never\" max age decoded as %d days", p.MaxAgeDays)
	}
	for _, b := range [][]byte{blob[:29], append(bytes.Clone(blob), 0), append([]byte{0, 1}, blob[2:]...)} {
		if _, ok := DecodeADPolicy(b); ok {
			t.Errorf("% x decoded as a policy", b)
		}
	}
}

func TestKpasswdTransports(t *testing.T) {
	udp, tcp := KDC{Transport: UDP}, KDC{Transport: TCP}
	for _, tc := range []struct {
		limit, size int
		k           KDC
		want        string
	}{
		{1465, 800, udp, "[udp tcp]"},  // MIT's default: a kpasswd request goes UDP first
		{1465, 1465, udp, "[udp tcp]"}, // MIT: no larger than the limit
		{1465, 1466, udp, "[tcp udp]"},
		{1, 800, tcp, "[tcp udp]"}, // 1: TCP always first
		{0, 800, tcp, "[tcp udp]"},
		{1465, 800, KDC{Transport: TCP, Forced: true}, "[tcp]"},
		{1, 800, KDC{Transport: UDP, Forced: true}, "[udp]"},
	} {
		if got := fmtTransports(KpasswdTransports(tc.limit, tc.size, tc.k)); got != tc.want {
			t.Errorf("limit %d size %d %+v: %s, want %s", tc.limit, tc.size, tc.k, got, tc.want)
		}
	}
}

func fmtTransports(ts []Transport) string {
	var s []string
	for _, t := range ts {
		s = append(s, string(t))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// Which failures let the client try again elsewhere: only those that
// cannot have changed the key, and a timeout only after asking the KDC.
func TestKpasswdAfterFailure(t *testing.T) {
	timeout := &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name string
		err  error
		want nextAttempt
	}{
		{"tcp connect refused", &UnreachableError{Err: syscall.ECONNREFUSED}, tryNext},
		{"udp port unreachable", &UnreachableError{Err: syscall.ECONNREFUSED, Sent: true}, tryNext},
		{"response too big", errResponseTooBig, tryNext},
		{"connect timed out", &UnreachableError{Err: timeout}, tryNext},
		{"no reply in time", &UnreachableError{Err: timeout, Sent: true}, checkKDC},
		{"reset", &UnreachableError{Err: syscall.ECONNRESET, Sent: true}, stop},
		{"cut short", &UnreachableError{Err: errors.New("unexpected EOF"), Sent: true}, stop},
		{"bad reply", &BadReplyError{Msg: "x"}, stop},
	} {
		if got := afterFailure(tc.err); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// kpasswd_server entries in krb5.conf order (gokrb5 would shuffle them),
// port 464 for a bare host, a forced transport kept.
func TestKpasswdServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "krb5.conf")
	conf := "[libdefaults]\n default_realm = R\n[realms]\n R = {\n  kdc = k:88\n  kpasswd_server = b.example\n  kpasswd_server = a.example:1464\n  kpasswd_server = tcp/c.example\n }\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c := &OnlineClient{Config: cfg}
	for range 5 {
		ks, err := c.kpasswdServers("R")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range ks {
			got = append(got, k.Addr())
			if k.Entry == "tcp/c.example" && (!k.Forced || k.Transport != TCP) {
				t.Errorf("tcp/ entry %+v not forced to tcp", k)
			}
		}
		if strings.Join(got, ",") != "b.example:464,a.example:1464,c.example:464" {
			t.Fatalf("servers %v", got)
		}
	}
	if _, err := c.kpasswdServers("OTHER"); err == nil {
		t.Error("a realm without servers: no error")
	}
}

// A server that answers neither transport is one error naming both and
// why; no request reached anything, so the KDC is never asked.
func TestKpasswdUnreachableNamesBothTransports(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close() // a silent UDP port; its TCP twin is (almost surely) closed
	port := pc.LocalAddr().(*net.UDPAddr).Port
	k := KDC{Entry: pc.LocalAddr().String(), Host: "127.0.0.1", Port: port, Transport: UDP}
	c := &OnlineClient{Config: &Config{Config: config.New()}, Timeout: 200 * time.Millisecond}
	asked := 0
	applied := func(context.Context) (bool, error) { asked++; return false, nil }
	_, _, err = c.sendKpasswd(context.Background(), []KDC{k}, []byte{0, 6, 0, 1, 0, 0}, kpKey(t), applied, nil)
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Service != "kpasswd server" {
		t.Fatalf("err %v", err)
	}
	if want := "kpasswd server " + k.Entry + " unreachable over udp: no reply before the timeout; tcp: connection refused"; err.Error() != want {
		t.Errorf("message %q\n want %q", err, want)
	}
	if asked != 1 {
		t.Errorf("the KDC was asked %d times whether the change landed, want once (after the udp timeout)", asked)
	}
}

// Over UDP a datagram that is not the reply to this request (a late
// reply to an earlier one, a stray packet) is skipped, not taken as the
// answer; the real reply after it is.
func TestSendRecvMatchSkipsStrayDatagrams(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	key := kpKey(t)
	stray, good := kpReply(t, 1, kpKey(t), 0, nil), kpReply(t, 1, key, 0, []byte("ok"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1024)
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(stray, from)
		pc.WriteTo([]byte("not kerberos"), from)
		pc.WriteTo(good, from)
	}()
	k := KDC{Entry: pc.LocalAddr().String(), Host: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port}
	ex, err := SendRecvMatch(context.Background(), k, UDP, []byte("request"), 30*time.Second, kpasswdReplyMatcher(key))
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ex.Reply, good) || ex.Stray != 2 {
		t.Errorf("reply %d bytes after %d stray datagrams; want the sealed reply after 2", len(ex.Reply), ex.Stray)
	}
}

// gokrb5 picks login keys by timestamp: a two-kvno keytab is refused
// before anything is sent.
func TestKpasswdSetNeedsOneKVNO(t *testing.T) {
	a, _ := DeriveKeytab("R", []string{"a"}, []KDCKey{{Enctype: 18, Salt: "Ra"}}, "x", 2, time.Now())
	b, _ := DeriveKeytab("R", []string{"a"}, []KDCKey{{Enctype: 18, Salt: "Ra"}}, "y", 3, time.Now())
	c := &OnlineClient{}
	err := c.KpasswdSet(context.Background(), append(a, b...), "R", []string{"a"}, "new")
	if err == nil || !strings.Contains(err.Error(), "exactly one kvno") {
		t.Errorf("two kvnos: %v", err)
	}
	if err := c.KpasswdSet(context.Background(), nil, "R", []string{"a"}, "new"); err == nil {
		t.Error("no keys: no error")
	}
}
