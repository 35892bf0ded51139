package rotate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/krbops/krbops/kdcops"
)

// KDC is what a rotation asks of the realm's Kerberos services. Every
// resume decision rests on these answers, so the seam lets tests put an
// in-memory KDC (internal/fakekdc) behind the real state machine. When
// [Rotation.KDC] is nil the rotation talks to the realm's KDCs and
// kpasswd servers (kdcops) and runs MIT kadmin for the kadmin backend.
type KDC interface {
	// Check asks for the enctypes, salts and kvno of the principal whose
	// keytab entries (read with KeepKeys) are given, and tries the keys at
	// that kvno. Answers of the KDC are in the result; the error is for
	// what stopped the check.
	Check(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.OnlineResult, error)
	// Login logs in with one principal's entries, newest kvno first and
	// one kvno at a time; nil and no error when the KDC rejects them all.
	Login(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.Session, error)
	// Keys asks which enctypes and salts the KDC holds for the principal
	// now (ETYPE-INFO2, no credentials needed).
	Keys(ctx context.Context, realm string, components []string) ([]kdcops.KDCKey, error)
	// ServiceTicket asks for a ticket to sname with a session's TGT.
	ServiceTicket(ctx context.Context, s *kdcops.Session, sname types.PrincipalName) (messages.Ticket, error)
	// ChangeServer reports which server of backend (kpasswd or kadmind)
	// answers, and changes nothing. A kpasswd server answers over TCP or
	// UDP.
	ChangeServer(ctx context.Context, backend string) (string, error)
	// Kpasswd sets the password of target in realm over RFC 3244, as the
	// principal whose keys (one kvno) are auth: the target or an admin.
	Kpasswd(ctx context.Context, auth []kdcops.KeytabEntry, realm string, target []string, password string) error
	// KadminCPW sets principal's password with kadmin cpw as admin,
	// authenticated by the keytab file adminKeytab.
	KadminCPW(ctx context.Context, admin, adminKeytab, principal, password string) error
}

// kdc returns the rotation's KDC. The default is built per call, as the
// client used to be: an OnlineClient is not safe for concurrent use.
func (r *Rotation) kdc() KDC {
	if r.KDC != nil {
		return r.KDC
	}
	return &onlineKDC{
		client:  &kdcops.OnlineClient{Config: r.Config, Timeout: r.Timeout, Log: r.Log},
		config:  r.Config,
		realm:   r.Realm,
		timeout: r.Timeout,
		kadmin:  r.Kadmin,
		env:     r.KadminEnv,
	}
}

// onlineKDC is the realm's KDCs over the network, and MIT kadmin.
type onlineKDC struct {
	client  *kdcops.OnlineClient
	config  *kdcops.Config
	realm   string
	timeout time.Duration
	kadmin  string   // the MIT kadmin binary
	env     []string // kadmin's environment (KRB5_CONFIG)
}

func (k *onlineKDC) Check(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.OnlineResult, error) {
	return k.client.Check(ctx, entries)
}

func (k *onlineKDC) Login(ctx context.Context, entries []kdcops.KeytabEntry) (*kdcops.Session, error) {
	sess, _, err := k.client.LoginPerKVNO(ctx, entries)
	return sess, err
}

func (k *onlineKDC) Keys(ctx context.Context, realm string, components []string) ([]kdcops.KDCKey, error) {
	return k.client.KDCKeys(ctx, realm, components)
}

func (k *onlineKDC) ServiceTicket(ctx context.Context, s *kdcops.Session, sname types.PrincipalName) (messages.Ticket, error) {
	return k.client.ServiceTicket(ctx, s, sname)
}

func (k *onlineKDC) Kpasswd(ctx context.Context, auth []kdcops.KeytabEntry, realm string, target []string, password string) error {
	return k.client.KpasswdSet(ctx, auth, realm, target, password)
}

// setupError is something missing on this host (no server configured, no
// kadmin binary): a failed pre-check with a hint, not an unreachable
// dependency.
type setupError struct{ msg, hint string }

func (e *setupError) Error() string { return e.msg }

func (k *onlineKDC) ChangeServer(ctx context.Context, backend string) (string, error) {
	var addrs []string
	var port string
	switch backend {
	case BackendKadmin:
		port = "749"
		for _, rl := range k.config.Realms {
			if rl.Realm == k.realm {
				addrs = rl.AdminServer
			}
		}
		if _, err := exec.LookPath(k.kadmin); err != nil {
			return "", &setupError{fmt.Sprintf("the MIT kadmin client %q is not installed", k.kadmin), "install krb5-user or pass --kadmin PATH"}
		}
	default:
		// Over TCP or UDP: Heimdal's kpasswdd listens on UDP only.
		server, _, err := k.client.KpasswdReachable(ctx, k.realm)
		var ue *kdcops.UnreachableError
		if err != nil && !errors.As(err, &ue) && !errors.Is(err, context.Canceled) {
			return "", &setupError{err.Error(), "set kpasswd_server (or admin_server) under [realms]"}
		}
		return server, err
	}
	if len(addrs) == 0 {
		return "", &setupError{fmt.Sprintf("krb5.conf names no admin_server for %s: the kadmin backend needs MIT's kadmind", k.realm), kadminOnlyMIT}
	}
	var d net.Dialer
	var last error
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, port)
		}
		dctx, cancel := context.WithTimeout(ctx, k.timeout)
		c, err := d.DialContext(dctx, "tcp", a)
		cancel()
		if err == nil {
			c.Close()
			return a, nil
		}
		last = err
	}
	return "", fmt.Errorf("no %s server answers: %s (the kadmin backend needs MIT's kadmind)", backend, last)
}

// kadminOnlyMIT is the hint when the kadmin backend has no MIT kadmind to
// talk to: it speaks MIT's kadmin protocol (RPCSEC_GSS), which Heimdal's
// kadmind and Active Directory do not.
const kadminOnlyMIT = "the kadmin backend speaks MIT's kadmin protocol only: on Heimdal or Active Directory use --backend kpasswd (a self change) or kpasswd-admin (set-password as --admin-principal); on MIT set admin_server under [realms]"

// KadminCPW runs MIT kadmin with the admin keytab. The password goes to
// kadmin's two prompts on stdin: argv is visible to every local user.
func (k *onlineKDC) KadminCPW(ctx context.Context, admin, adminKeytab, principal, pw string) error {
	for _, s := range []string{principal, admin, adminKeytab} {
		if strings.ContainsAny(s, " \t\n\"'\\") {
			return fmt.Errorf("%q cannot be passed to kadmin -q safely", s)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 4*k.timeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, k.kadmin, "-k", "-t", adminKeytab, "-p", admin, "-q", "cpw "+principal)
	cmd.Env = append(os.Environ(), k.env...)
	cmd.Stdin = strings.NewReader(pw + "\n" + pw + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := out.String()
	if err == nil && strings.Contains(text, "changed.") {
		return nil
	}
	// kadmin's output holds prompts and errors, never the password.
	var msg []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Authenticating as") || strings.Contains(l, "password for principal") {
			continue
		}
		msg = append(msg, l)
	}
	if err == nil {
		err = errors.New("kadmin did not confirm the change")
	}
	return fmt.Errorf("%s: %s", err, strings.Join(msg, "; "))
}
