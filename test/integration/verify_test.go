package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/commands"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/lab"
	"github.com/krbops/krbops/kdcops"
	"github.com/krbops/krbops/secretstore"
)

// verifyReport is the part of the krbops/v1 JSON report these tests read.
type verifyReport struct {
	ExitCode int    `json:"exit_code"`
	Status   string `json:"status"`
	Steps    []struct {
		ID       string         `json:"id"`
		Group    string         `json:"group"`
		Status   string         `json:"status"`
		Message  string         `json:"message"`
		Hint     string         `json:"hint"`
		Evidence map[string]any `json:"evidence"`
	} `json:"steps"`
}

// runKrbops runs the real command tree in-process (the same code the
// binary runs) and decodes its JSON report.
func runKrbops(t *testing.T, r *lab.Realm, args ...string) (verifyReport, int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"KRB5_CONFIG": r.Krb5Conf, "KRB5CCNAME": "FILE:" + filepath.Join(t.TempDir(), "none")}
	streams := &commands.IOStreams{Out: &out, ErrOut: &errOut, Getenv: func(k string) string { return env[k] }}
	root := commands.NewRootCmd(streams, commands.BuildInfo{})
	root.SetArgs(append(args, "-o", "json"))
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		code = exitCodeOf(err)
	}
	var rep verifyReport
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
			t.Fatalf("report is not JSON: %v\n%s", jerr, out.String())
		}
	}
	return rep, code, errOut.String()
}

func (r verifyReport) step(group, id string) (s struct {
	ID       string         `json:"id"`
	Group    string         `json:"group"`
	Status   string         `json:"status"`
	Message  string         `json:"message"`
	Hint     string         `json:"hint"`
	Evidence map[string]any `json:"evidence"`
}, ok bool) {
	for _, st := range r.Steps {
		if st.ID == id && st.Group == group {
			return st, true
		}
	}
	return s, false
}

// kadminBatch runs many kadmin.local queries in one process: creating a
// thousand principals one process at a time would take minutes.
func kadminBatch(t *testing.T, r *lab.Realm, queries []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.KadminBatch(ctx, queries); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyGoodKeytab(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	kt := filepath.Join(t.TempDir(), "svc.keytab")
	if err := r.AddPrincipal(ctx, "svc/good.krbops.test", ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Keytab(ctx, "svc/good.krbops.test", kt); err != nil {
		t.Fatal(err)
	}
	os.Chmod(kt, 0o600)
	rep, code, stderr := runKrbops(t, r, "verify", "--keytab", kt)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr %s; report %+v", code, stderr, rep)
	}
	want := []string{"config", "clock", "keytab", "as", "tgt", "tgs", "ap"}
	if len(rep.Steps) != len(want) {
		t.Fatalf("%d steps, want %v", len(rep.Steps), want)
	}
	for i, s := range rep.Steps {
		if s.ID != want[i] || s.Status != "pass" {
			t.Errorf("step %d: %s %s (%s), want %s pass", i, s.ID, s.Status, s.Message, want[i])
		}
	}
	if as, _ := rep.step("", "as"); as.Evidence["accepted_kvno"] != float64(2) {
		t.Errorf("as evidence %v, want accepted_kvno 2", as.Evidence)
	}
}

// Issue 4 must-show: after cpw -randkey at the KDC, as fails naming both
// kvnos, later steps are skipped with the reason, exit 1.
func TestVerifyStaleKeytabNamesBothKVNOs(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	kt := filepath.Join(dir, "svc.keytab")
	p := "svc/stale.krbops.test"
	if err := r.AddPrincipal(ctx, p, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Keytab(ctx, p, kt); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Kadmin(ctx, "cpw -randkey "+p); err != nil {
		t.Fatal(err)
	}
	// The operator's own TGT lets verify ask the KDC's kvno.
	cc := filepath.Join(dir, "operator.ccache")
	if out, err := r.Command(ctx, "kinit", "-k", "-t", r.AdminKeytab, "-c", "FILE:"+cc, r.AdminPrincipal).CombinedOutput(); err != nil {
		t.Fatalf("kinit: %v %s", err, out)
	}
	rep, code, _ := runKrbops(t, r, "verify", "--keytab", kt, "--ccache", "FILE:"+cc)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	as, _ := rep.step("", "as")
	if as.Status != "fail" || !strings.Contains(as.Message, "keytab kvno 2") || !strings.Contains(as.Message, "current kvno is 3") {
		t.Errorf("as: %s %q", as.Status, as.Message)
	}
	if as.Evidence["kdc_kvno"] != float64(3) || fmt.Sprint(as.Evidence["keytab_kvnos"]) != "[2]" {
		t.Errorf("as evidence %v", as.Evidence)
	}
	if !strings.Contains(as.Hint, "stale") {
		t.Errorf("as hint %q", as.Hint)
	}
	for _, id := range []string{"tgt", "tgs", "ap"} {
		s, _ := rep.step("", id)
		if s.Status != "skip" || !strings.HasPrefix(s.Message, "skipped: needs ") {
			t.Errorf("%s: %s %q, want skipped with the reason", id, s.Status, s.Message)
		}
	}
	// Without an operator TGT the message says the KDC's kvno is unknown
	// and how to learn it.
	rep, code, _ = runKrbops(t, r, "verify", "--keytab", kt, "--ccache", "FILE:"+filepath.Join(dir, "absent"))
	as, _ = rep.step("", "as")
	if code != 1 || !strings.Contains(as.Message, "kvno is unknown") || !strings.Contains(as.Hint, "kinit") {
		t.Errorf("without ccache: exit %d, as %q hint %q", code, as.Message, as.Hint)
	}
}

// Issue 4 must-show: a server keytab holding old and new kvno (phase 1 of
// a server rotation): a ticket issued under either kvno decrypts, and the
// ap evidence lists both.
func TestVerifyPhaseOneServerKeytab(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	svc := "HTTP/phase1.krbops.test"
	client := "client/phase1.krbops.test"
	for _, p := range []string{svc, client} {
		if err := r.AddPrincipal(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	clientKT := filepath.Join(dir, "client.keytab")
	if err := r.Keytab(ctx, client, clientKT); err != nil {
		t.Fatal(err)
	}
	oldKT := filepath.Join(dir, "old.keytab")
	if err := r.Keytab(ctx, svc, oldKT); err != nil { // kvno 2
		t.Fatal(err)
	}
	// A ticket issued before the rotation, under kvno 2, held by MIT's kvno.
	cc := "FILE:" + filepath.Join(dir, "client.ccache")
	if out, err := r.Command(ctx, "kinit", "-k", "-t", clientKT, "-c", cc, client).CombinedOutput(); err != nil {
		t.Fatalf("kinit: %v %s", err, out)
	}
	if out, err := r.Command(ctx, "kvno", "-c", cc, svc).CombinedOutput(); err != nil || !strings.Contains(string(out), "kvno = 2") {
		t.Fatalf("kvno before rotation: %v %s", err, out)
	}
	// Phase 1: new key at kvno 3, old kept, keytab with both.
	if _, err := r.Kadmin(ctx, "cpw -randkey -keepold "+svc); err != nil {
		t.Fatal(err)
	}
	bothKT := filepath.Join(dir, "both.keytab")
	if err := r.KeytabWith(ctx, svc, bothKT, lab.KeytabOptions{NoRandKey: true}); err != nil {
		t.Fatal(err)
	}
	rep, code, stderr := runKrbops(t, r, "verify", "--principal", client, "--keytab", clientKT, "--service", svc, "--server-keytab", bothKT)
	if code != 0 {
		t.Fatalf("exit %d: %s %+v", code, stderr, rep)
	}
	ap, _ := rep.step("", "ap")
	if fmt.Sprint(ap.Evidence["server_kvnos"]) != "[2 3]" || ap.Evidence["ticket_kvno"] != float64(3) {
		t.Errorf("ap evidence %v, want server_kvnos [2 3] and ticket_kvno 3", ap.Evidence)
	}
	// The old ticket (kvno 2) from before the rotation decrypts with the
	// same phase-1 keytab: decode it from MIT's ccache and try.
	checkOldTicketDecrypts(t, strings.TrimPrefix(cc, "FILE:"), svc+"@"+r.Name, bothKT, oldKT)
}

// checkOldTicketDecrypts reads the service ticket MIT's kvno stored in
// ccache and decrypts it with the phase-1 keytab, as the server would; the
// pre-rotation keytab is the control.
func checkOldTicketDecrypts(t *testing.T, ccache, spn, phase1, old string) {
	t.Helper()
	checkOldTicketDecryptsAt(t, ccache, spn, 2, phase1, old)
}

// checkOldTicketDecryptsAt is checkOldTicketDecrypts for a ticket of
// kvno oldKVNO.
func checkOldTicketDecryptsAt(t *testing.T, ccache, spn string, oldKVNO uint32, phase1, old string) {
	t.Helper()
	cc, err := credentials.LoadCCache(ccache)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := kdcops.SplitPrincipal(spn)
	cred, ok := cc.GetEntry(types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, name))
	if !ok {
		t.Fatalf("no ticket for %s in %s", spn, ccache)
	}
	var tkt messages.Ticket
	if err := tkt.Unmarshal(cred.Ticket); err != nil {
		t.Fatal(err)
	}
	if uint32(tkt.EncPart.KVNO) != oldKVNO {
		t.Fatalf("pre-rotation ticket has kvno %d, want %d", tkt.EncPart.KVNO, oldKVNO)
	}
	for _, kt := range []string{phase1, old} {
		k, err := kdcops.ReadKeytabFile(kt, kdcops.KeytabOptions{KeepKeys: true})
		if err != nil {
			t.Fatal(err)
		}
		res := kdcops.DecryptTicket(tkt, k.Entries)
		if !res.Held || !res.Decrypted {
			t.Errorf("%s: old ticket (kvno %d) does not decrypt: %+v", kt, oldKVNO, res)
		}
	}
}

func exitCodeOf(err error) int { return fault.ExitCode(fault.ClassOf(err)) }

// Issue 4 must-show: 1,000 targets with 10 deliberately broken: exactly
// those 10 fail, exit 1, and the run respects --kdc-rate (checked against
// the KDC's own log).
func TestVerifyFleetRespectsKDCRate(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet test in -short mode")
	}
	r := lab.ForTest(t, lab.Options{})
	dir := t.TempDir()
	const n, brokenEvery = 1000, 100
	var queries []string
	var csv strings.Builder
	csv.WriteString("principal,keytab\n")
	broken := map[string]bool{}
	for i := range n {
		p := fmt.Sprintf("svc%04d/fleet.krbops.test", i)
		kt := filepath.Join(dir, fmt.Sprintf("svc%04d.keytab", i))
		queries = append(queries, "addprinc -randkey "+p, fmt.Sprintf("ktadd -k %s -e aes256-cts-hmac-sha1-96:normal %s", kt, p))
		if i%brokenEvery == 7 {
			queries = append(queries, "cpw -randkey "+p)
			broken[p+"@"+r.Name] = true
		}
		fmt.Fprintf(&csv, "%s@%s,%s\n", p, r.Name, kt)
	}
	kadminBatch(t, r, queries)
	targets := filepath.Join(dir, "targets.csv")
	os.WriteFile(targets, []byte(csv.String()), 0o600)

	const rate = 400
	logBefore, _ := os.ReadFile(r.KDCs[0].Log)
	begin := time.Now()
	rep, code, stderr := runKrbops(t, r, "verify", "--targets", targets, "--concurrency", "32", "--kdc-rate", fmt.Sprint(rate))
	took := time.Since(begin)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	failed := map[string]bool{}
	for _, s := range rep.Steps {
		if s.Status == "fail" || s.Status == "error" {
			failed[s.Group] = true
			if s.ID != "as" {
				t.Errorf("%s/%s %s: %s", s.Group, s.ID, s.Status, s.Message)
			}
		}
	}
	if len(failed) != len(broken) {
		t.Errorf("%d targets failed, want %d", len(failed), len(broken))
	}
	for p := range broken {
		if !failed[p] {
			t.Errorf("broken target %s did not fail", p)
		}
	}
	// The KDC's log has one line per request with a one-second timestamp.
	logAfter, _ := os.ReadFile(r.KDCs[0].Log)
	perSecond, err := kdcLogPerSecond(logAfter[len(logBefore):])
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, c := range perSecond {
		total += c
	}
	// One clock probe, AS+TGS per good target, one rejected AS per broken
	// one (no operator TGT to ask the kvno with).
	if want := 1 + 2*(n-len(broken)) + len(broken); total < want {
		t.Fatalf("KDC log shows %d requests, want at least %d", total, want)
	}
	// verify paces with a token bucket of burst 1 (commands/verify.go).
	const burst = 1
	if err := checkPaced(perSecond, rate, burst); err != nil {
		t.Errorf("--kdc-rate %d: %v", rate, err)
	}
	// The bucket hands out total tokens in no less than (total-burst)/rate:
	// a lower bound on the run's duration that load can only lengthen.
	if minTook := time.Duration(float64(total-burst) / rate * float64(time.Second)); took < minTook {
		t.Errorf("%d requests took %v, faster than --kdc-rate %d allows (%v)", total, took, rate, minTook)
	}
	t.Logf("%d targets, %d KDC requests in %v (busiest log second %d at --kdc-rate %d)", n, total, took.Round(time.Millisecond), maxCount(perSecond), rate)
}

var kdcLogLine = regexp.MustCompile(`(?m)^(\w{3} [ \d]\d \d\d:\d\d:\d\d) \S+ krb5kdc\[\d+\]\(info\): (AS_REQ|TGS_REQ) `)

// kdcLogPerSecond counts the AS_REQ and TGS_REQ lines of an MIT KDC log
// by their one-second timestamp (seconds since the start of the year).
func kdcLogPerSecond(log []byte) (map[int64]int, error) {
	per := map[int64]int{}
	for _, m := range kdcLogLine.FindAllSubmatch(log, -1) {
		ts, err := time.Parse("Jan _2 15:04:05", string(m[1]))
		if err != nil {
			return nil, fmt.Errorf("KDC log timestamp %q: %w", m[1], err)
		}
		per[ts.Unix()]++
	}
	return per, nil
}

func maxCount(per map[int64]int) int {
	peak := 0
	for _, c := range per {
		peak = max(peak, c)
	}
	return peak
}

// checkPaced checks a KDC log's requests per second against what a token
// bucket of rate and burst guarantees whatever the machine's load. The
// bucket grants at most burst + rate*d requests in any d seconds; the log
// stamps a request when the KDC handles it, a little after the grant, and
// truncates to the second. So w consecutive log seconds may hold requests
// granted over w seconds plus that delay's spread; one second of slack
// covers a loaded machine: at most burst + rate*(w+1). (Asserting rate per
// log second fails on a loaded machine: a few grants late in one second
// are logged in the next.) Every window of 1 up to all seconds is checked,
// so an unpaced run fails however slow the machine.
func checkPaced(per map[int64]int, rate, burst int) error {
	if len(per) == 0 {
		return nil
	}
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for s := range per {
		first, last = min(first, s), max(last, s)
	}
	for w := int64(1); w <= last-first+1; w++ {
		for start := first; start+w-1 <= last; start++ {
			n := 0
			for s := start; s < start+w; s++ {
				n += per[s]
			}
			if limit := burst + rate*int(w+1); n > limit {
				return fmt.Errorf("%d requests in the %d log seconds from %s, more than a token bucket allows (%d)",
					n, w, time.Unix(start, 0).UTC().Format("15:04:05"), limit)
			}
		}
	}
	return nil
}

// checkPaced accepts what a paced run logs on a loaded machine and
// rejects an unpaced one.
func TestCheckPaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		per  map[int64]int
		ok   bool
	}{
		// The loaded-machine run the old per-second assertion failed on.
		{"403 in one second", map[int64]int{0: 380, 1: 403, 2: 397, 3: 400, 4: 420}, true},
		{"a late second catching up", map[int64]int{0: 300, 1: 500, 2: 400}, true},
		{"unpaced, fast", map[int64]int{0: 1991}, false},
		{"unpaced, slow machine", map[int64]int{0: 700, 1: 700, 2: 591}, false},
		{"twice the rate for long", map[int64]int{0: 800, 1: 800, 2: 800, 3: 800}, false},
	} {
		if err := checkPaced(tc.per, 400, 1); (err == nil) != tc.ok {
			t.Errorf("%s: checkPaced = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// The spnego step against a real SPNEGO server: gokrb5's service handler
// with the lab's HTTP/127.0.0.1 keytab, on loopback.
func TestVerifySPNEGO(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	client, httpSPN := "client/spnego.krbops.test", "HTTP/127.0.0.1"
	for _, p := range []string{client, httpSPN} {
		if err := r.AddPrincipal(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	clientKT, httpKT := filepath.Join(dir, "client.keytab"), filepath.Join(dir, "http.keytab")
	if err := r.Keytab(ctx, client, clientKT); err != nil {
		t.Fatal(err)
	}
	if err := r.Keytab(ctx, httpSPN, httpKT); err != nil {
		t.Fatal(err)
	}
	kt, err := keytab.Load(httpKT)
	if err != nil {
		t.Fatal("load the service keytab")
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("hello")) })
	srv := httptest.NewServer(spnego.SPNEGOKRB5Authenticate(ok, kt,
		// MIT 1.20 tickets carry a PAC without AD logon info; gokrb5 rejects
		// those unless PAC decoding is off, as an MIT-realm service runs it.
		service.DecodePAC(false), service.Logger(log.New(os.Stderr, "spnego-server: ", 0))))
	defer srv.Close()

	rep, code, stderr := runKrbops(t, r, "verify", "--principal", client, "--keytab", clientKT, "--spnego-url", srv.URL+"/")
	sp, found := rep.step("", "spnego")
	if code != 0 || !found || sp.Status != "pass" || sp.Evidence["status"] != float64(200) {
		t.Fatalf("exit %d, spnego %+v; stderr %s", code, sp, stderr)
	}
	// A server whose keytab is stale rejects the ticket: the step fails
	// with the HTTP status and the hint.
	if _, err := r.Kadmin(ctx, "cpw -randkey "+httpSPN); err != nil {
		t.Fatal(err)
	}
	rep, code, _ = runKrbops(t, r, "verify", "--principal", client, "--keytab", clientKT, "--spnego-url", srv.URL+"/")
	sp, _ = rep.step("", "spnego")
	if code != 1 || sp.Status != "fail" || !strings.Contains(sp.Message, "HTTP 401") {
		t.Fatalf("stale server keytab: exit %d, spnego %s %q", code, sp.Status, sp.Message)
	}
}

// The secret-store step: the store's current keytab must hold the same
// keys as the local one; after a rotation the host missed, it names the
// kvnos on each side.
func TestVerifySecretStore(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	p := "svc/stored.krbops.test"
	if err := r.AddPrincipal(ctx, p, ""); err != nil {
		t.Fatal(err)
	}
	kt := filepath.Join(dir, "svc.keytab")
	if err := r.Keytab(ctx, p, kt); err != nil {
		t.Fatal(err)
	}
	storeURL := "file://" + filepath.Join(dir, "store")
	st, err := secretstore.Open(ctx, storeURL, secretstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(kt)
	if _, err := st.Seed(ctx, "svc-stored", data, secretstore.NewToken()); err != nil {
		t.Fatal(err)
	}
	rep, code, stderr := runKrbops(t, r, "verify", "--keytab", kt, "--secret-store", storeURL, "--secret", "svc-stored")
	ss, _ := rep.step("", "secret-store")
	if code != 0 || ss.Status != "pass" {
		t.Fatalf("exit %d, secret-store %+v; %s", code, ss, stderr)
	}
	// The store gets the rotated keytab (kvno 3); this host keeps kvno 2.
	newKT := filepath.Join(dir, "new.keytab")
	if err := r.Keytab(ctx, p, newKT); err != nil {
		t.Fatal(err)
	}
	newData, _ := os.ReadFile(newKT)
	v, err := st.PutPending(ctx, "svc-stored", newData, secretstore.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "svc-stored", v.ID); err != nil {
		t.Fatal(err)
	}
	rep, code, _ = runKrbops(t, r, "verify", "--keytab", kt, "--secret-store", storeURL, "--secret", "svc-stored")
	ss, _ = rep.step("", "secret-store")
	if code != 1 || ss.Status != "fail" || fmt.Sprint(ss.Evidence["store_kvnos"]) != "[3]" || fmt.Sprint(ss.Evidence["local_kvnos"]) != "[2]" {
		t.Fatalf("exit %d, secret-store %s %q %v", code, ss.Status, ss.Message, ss.Evidence)
	}
	if strings.Contains(fmt.Sprint(ss.Evidence), string(newData[10:20])) {
		t.Fatal("evidence leaks keytab bytes")
	}
}
