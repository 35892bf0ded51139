package fakekdc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/internal/fakekdc"
	"github.com/krbops/krbops/kdcops"
)

const realm = "FAKE.TEST"

var epoch = time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC)

func newKDC(t *testing.T) *fakekdc.KDC {
	t.Helper()
	k := fakekdc.New(realm)
	k.Now = func() time.Time { return epoch }
	return k
}

// keytab derives name's keys the way rotate does, from what the KDC's
// ETYPE-INFO2 says.
func keytab(t *testing.T, k *fakekdc.KDC, name, password string, kvno uint32) []kdcops.KeytabEntry {
	t.Helper()
	n, _ := kdcops.SplitPrincipal(name)
	ents, err := kdcops.DeriveKeytab(realm, strings.Split(n, "/"), k.KDCKeys(name), password, kvno, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

func put(t *testing.T, k *fakekdc.KDC, p fakekdc.Principal) {
	t.Helper()
	if err := k.Put(p); err != nil {
		t.Fatal(err)
	}
}

// A keytab kdcops derives from the principal's password logs in, but only
// at the current kvno and with the current password.
func TestLoginNeedsCurrentKVNOAndKey(t *testing.T) {
	ctx := context.Background()
	k := newKDC(t)
	put(t, k, fakekdc.Principal{Name: "alice", Password: "pw-one", KVNO: 2})
	sess, err := k.Login(ctx, keytab(t, k, "alice", "pw-one", 2))
	if err != nil || sess == nil || sess.KVNO != 2 {
		t.Fatalf("login with the current keys: %+v %v", sess, err)
	}
	for _, tc := range []struct {
		pw   string
		kvno uint32
	}{{"pw-one", 1}, {"pw-one", 3}, {"pw-two", 2}} {
		if sess, err := k.Login(ctx, keytab(t, k, "alice", tc.pw, tc.kvno)); err != nil || sess != nil {
			t.Errorf("login with password %s at kvno %d: %+v %v, want rejected", tc.pw, tc.kvno, sess, err)
		}
	}
	// Several kvnos: the newest one the KDC accepts wins.
	mixed := append(keytab(t, k, "alice", "pw-one", 2), keytab(t, k, "alice", "pw-two", 3)...)
	if sess, err := k.Login(ctx, mixed); err != nil || sess == nil || sess.KVNO != 2 {
		t.Errorf("login with kvno 2 and a wrong kvno 3: %+v %v", sess, err)
	}
	var ke *kdcops.KDCError
	if _, err := k.Login(ctx, keytab(t, k, "alice", "pw-one", 2)[:1]); err != nil {
		t.Errorf("login with one key: %v", err)
	}
	bob := keytab(t, k, "alice", "pw-one", 2)
	for i := range bob {
		bob[i].Components = []string{"bob"}
	}
	if _, err := k.Login(ctx, bob); !errors.As(err, &ke) || ke.Code != kdcops.ErrPrincipalUnknown {
		t.Errorf("login of an unknown principal: %v", err)
	}
}

// MIT's rule: a password change gives the realm's enctypes with the normal
// salt, whatever the principal had; the kvno goes up by one.
func TestKeyChangeLikeMIT(t *testing.T) {
	ctx := context.Background()
	k := fakekdc.New(realm, 18, 17)
	k.Now = func() time.Time { return epoch }
	put(t, k, fakekdc.Principal{Name: "svc/old", Password: "pw-one", KVNO: 5, Salt: "OTHER.REALMsvcold", Enctypes: []int32{18}})
	if got := k.KDCKeys("svc/old"); len(got) != 1 || got[0].Salt != "OTHER.REALMsvcold" || got[0].DefaultSalt {
		t.Fatalf("keys before: %+v", got)
	}
	if err := k.Kpasswd(ctx, keytab(t, k, "svc/old", "pw-one", 5), realm, []string{"svc", "old"}, "pw-two"); err != nil {
		t.Fatal(err)
	}
	got := k.KDCKeys("svc/old")
	if k.KVNO("svc/old") != 6 || len(got) != 2 || got[0].Enctype != 18 || got[1].Enctype != 17 || !got[0].DefaultSalt || got[0].Salt != realm+"svcold" {
		t.Fatalf("after the change: kvno %d keys %+v", k.KVNO("svc/old"), got)
	}
	if sess, err := k.Login(ctx, keytab(t, k, "svc/old", "pw-two", 6)); err != nil || sess == nil {
		t.Errorf("login with the new password: %v", err)
	}
	if k.ChangeRequests("svc/old") != 1 {
		t.Errorf("change requests %d, want 1", k.ChangeRequests("svc/old"))
	}
}

// kpasswd authenticates like a login: the old key after a change cannot
// change anything again, and only an admin may set another's password.
func TestKpasswdAuthentication(t *testing.T) {
	ctx := context.Background()
	k := newKDC(t)
	put(t, k, fakekdc.Principal{Name: "alice", Password: "pw-one", KVNO: 2})
	put(t, k, fakekdc.Principal{Name: "bob", Password: "pw-bob", KVNO: 1})
	put(t, k, fakekdc.Principal{Name: "admin/admin", Password: "pw-admin", KVNO: 1, Admin: true})
	old := keytab(t, k, "alice", "pw-one", 2)
	if err := k.Kpasswd(ctx, old, realm, []string{"alice"}, "pw-two"); err != nil {
		t.Fatal(err)
	}
	if err := k.Kpasswd(ctx, old, realm, []string{"alice"}, "pw-three"); err == nil || !strings.Contains(err.Error(), "PREAUTH_FAILED") {
		t.Errorf("kpasswd with the replaced key: %v", err)
	}
	var kpe *kdcops.KpasswdError
	if err := k.Kpasswd(ctx, keytab(t, k, "bob", "pw-bob", 1), realm, []string{"alice"}, "pw-x"); !errors.As(err, &kpe) || kpe.Code != 5 {
		t.Errorf("kpasswd of alice as bob: %v, want access denied", err)
	}
	if err := k.Kpasswd(ctx, keytab(t, k, "admin/admin", "pw-admin", 1), realm, []string{"alice"}, "pw-four"); err != nil {
		t.Errorf("kpasswd of alice as admin: %v", err)
	}
	if k.KVNO("alice") != 4 || k.ChangeRequests("alice") != 4 {
		t.Errorf("alice kvno %d after %d requests, want 4 and 4", k.KVNO("alice"), k.ChangeRequests("alice"))
	}

	dir := t.TempDir()
	adminKT := filepath.Join(dir, "admin.keytab")
	data, err := kdcops.MarshalKeytab(keytab(t, k, "admin/admin", "pw-admin", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(adminKT, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.KadminCPW(ctx, "admin/admin@"+realm, adminKT, "alice@"+realm, "pw-five"); err != nil || k.KVNO("alice") != 5 {
		t.Errorf("kadmin cpw: %v, kvno %d", err, k.KVNO("alice"))
	}
	if err := k.KadminCPW(ctx, "bob@"+realm, adminKT, "alice@"+realm, "pw-six"); err == nil {
		t.Error("kadmin with a keytab that holds no key of the admin named")
	}
}

// Service tickets are real: kdcops.DecryptTicket opens them with the
// service's keytab at the current kvno, and a ticket from before a key
// change still opens with the old keys.
func TestServiceTicketDecrypts(t *testing.T) {
	ctx := context.Background()
	k := newKDC(t)
	put(t, k, fakekdc.Principal{Name: "HTTP/web1", Password: "pw-one", KVNO: 2})
	old := keytab(t, k, "HTTP/web1", "pw-one", 2)
	sess, err := k.Login(ctx, old)
	if err != nil || sess == nil {
		t.Fatal(err)
	}
	sname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"HTTP", "web1"}}
	before, err := k.ServiceTicket(ctx, sess, sname)
	if err != nil {
		t.Fatal(err)
	}
	if ap := kdcops.DecryptTicket(before, old); !ap.Decrypted || ap.TicketKVNO != 2 || ap.Enctype != 18 || ap.Client != "HTTP/web1@"+realm {
		t.Fatalf("ticket before the change: %+v", ap)
	}
	if err := k.SetPassword("HTTP/web1", "pw-two"); err != nil {
		t.Fatal(err)
	}
	// The TGT from before the change still works: only the krbtgt key
	// protects it.
	after, err := k.ServiceTicket(ctx, sess, sname)
	if err != nil {
		t.Fatal(err)
	}
	if ap := kdcops.DecryptTicket(after, old); ap.Decrypted || ap.TicketKVNO != 3 {
		t.Errorf("new ticket with the old keytab: %+v, want kvno 3, not decrypted", ap)
	}
	if ap := kdcops.DecryptTicket(after, keytab(t, k, "HTTP/web1", "pw-two", 3)); !ap.Decrypted {
		t.Errorf("new ticket with the new keytab: %+v", ap)
	}
	if ap := kdcops.DecryptTicket(before, old); !ap.Decrypted {
		t.Errorf("old ticket with the old keytab: %+v", ap)
	}
	forged := *sess
	forged.Key.KeyValue = make([]byte, len(sess.Key.KeyValue))
	if _, err := k.ServiceTicket(ctx, &forged, sname); !kdcops.IsKDCCode(err, kdcops.ErrBadIntegrity) {
		t.Errorf("ticket with a session key that is not the TGT's: %v", err)
	}
	other := fakekdc.New(realm)
	if _, err := other.ServiceTicket(ctx, sess, sname); !kdcops.IsKDCCode(err, kdcops.ErrBadIntegrity) {
		t.Errorf("TGT of another KDC: %v", err)
	}
	if _, err := k.ServiceTicket(ctx, sess, types.PrincipalName{NameString: []string{"HTTP", "nope"}}); !kdcops.IsKDCCode(err, kdcops.ErrServerUnknown) {
		t.Errorf("ticket for an unknown service: %v", err)
	}
}

// Check reports what rotate's preflight reads: enctypes and salts, the
// kvno, and which keys work.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	k := newKDC(t)
	put(t, k, fakekdc.Principal{Name: "alice", Password: "pw-one", KVNO: 7})
	res, err := k.Check(ctx, append(keytab(t, k, "alice", "pw-old", 6), keytab(t, k, "alice", "pw-one", 7)...))
	if err != nil {
		t.Fatal(err)
	}
	if !res.KVNOKnown || res.KDCKVNO != 7 || len(res.KDCKeys) != 2 || res.KDCKeys[0].Salt != realm+"alice" {
		t.Fatalf("check: %+v", res)
	}
	for _, c := range res.Checks {
		if c.KVNO != 7 || !c.OK {
			t.Errorf("check %+v: want kvno 7 ok", c)
		}
	}
	res, err = k.Check(ctx, keytab(t, k, "alice", "pw-old", 7))
	if err != nil || res.KVNOKnown || !strings.Contains(res.KVNONote, "PREAUTH_FAILED") {
		t.Errorf("check with wrong keys: %+v %v", res, err)
	}
	bob := keytab(t, k, "alice", "pw-one", 7)
	for i := range bob {
		bob[i].Components = []string{"bob"}
	}
	if res, err := k.Check(ctx, bob); err != nil || !res.Unknown {
		t.Errorf("check of an unknown principal: %+v %v", res, err)
	}
}

// The fault hooks: a refused change changes nothing; a lost reply changes
// the key and still reports an error; an unreachable KDC answers nothing.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	k := newKDC(t)
	put(t, k, fakekdc.Principal{Name: "alice", Password: "pw-one", KVNO: 2})
	refused := errors.New("kpasswd refused: KRB5_KPASSWD_SOFTERROR (4)")
	k.FailNextChange(refused)
	if err := k.Kpasswd(ctx, keytab(t, k, "alice", "pw-one", 2), realm, []string{"alice"}, "pw-two"); !errors.Is(err, refused) || k.KVNO("alice") != 2 {
		t.Fatalf("failed change: %v, kvno %d", err, k.KVNO("alice"))
	}
	k.LoseNextReply()
	var ue *kdcops.UnreachableError
	if err := k.Kpasswd(ctx, keytab(t, k, "alice", "pw-one", 2), realm, []string{"alice"}, "pw-two"); !errors.As(err, &ue) || k.KVNO("alice") != 3 {
		t.Fatalf("lost reply: %v, kvno %d", err, k.KVNO("alice"))
	}
	if k.ChangeRequests("alice") != 2 {
		t.Errorf("change requests %d, want 2", k.ChangeRequests("alice"))
	}
	k.SetUnreachable(true)
	if _, err := k.Login(ctx, keytab(t, k, "alice", "pw-two", 3)); !errors.As(err, &ue) {
		t.Errorf("login while unreachable: %v", err)
	}
	if _, err := k.ProbeClock(ctx, kdcops.KDC{Entry: "kdc1"}); !errors.As(err, &ue) {
		t.Errorf("clock probe while unreachable: %v", err)
	}
	if err := k.Kpasswd(ctx, keytab(t, k, "alice", "pw-two", 3), realm, []string{"alice"}, "pw-x"); !errors.As(err, &ue) || k.ChangeRequests("alice") != 2 {
		t.Errorf("kpasswd while unreachable: %v (requests %d)", err, k.ChangeRequests("alice"))
	}
	k.SetUnreachable(false)
	k.SetClockOffset(-90 * time.Second)
	if s, err := k.ProbeClock(ctx, kdcops.KDC{Entry: "kdc1"}); err != nil || s.Offset != -90*time.Second || !s.KDCTime.Equal(epoch.Add(-90*time.Second)) {
		t.Errorf("clock probe: %+v %v", s, err)
	}
}
