package dynalab

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/goidentity/v6"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"

	"github.com/krbops/krbops/internal/lab"
)

// BrokerOptions configure NewBroker.
type BrokerOptions struct {
	// Host is the broker's host name in its URL and SPN (HTTP/<Host>);
	// "localhost" when empty. It must resolve to 127.0.0.1.
	Host string
	// Proxy, when set, learns every minted key and its KeyPolicy.
	Proxy *Proxy
	// Policy gives the key minted for principal (name@REALM), the n-th of
	// the broker (from 1), its expiry at the proxy.
	Policy func(principal string, n int) KeyPolicy
	// ReportedTTL is the Expiration the reply announces (default 1h). A
	// proxy policy stricter than it makes the key expire "early", as a
	// revoked or clock-skewed credential does: only an
	// ExpiredTokenException tells the client.
	ReportedTTL time.Duration
	// Refuse lists principals answered with HTTP 403.
	Refuse []string
}

// Broker is a credential broker behind SPNEGO: it accepts a Kerberos
// service ticket for HTTP/<host> (verified with gokrb5's server handler
// and the service's keytab from the lab realm) and answers with
// credential_process JSON.
type Broker struct {
	URL       string
	SPN       string // HTTP/<host>
	Principal string // SPN@REALM
	Keytab    string

	opts BrokerOptions
	ln   net.Listener
	srv  *http.Server
	mu   sync.Mutex
	n    int
	by   map[string]int
}

// NewBroker creates the service principal in realm, exports its keytab and
// starts the broker on a free loopback port.
func NewBroker(ctx context.Context, realm *lab.Realm, opts BrokerOptions) (*Broker, error) {
	if opts.Host == "" {
		opts.Host = "localhost"
	}
	if opts.ReportedTTL <= 0 {
		opts.ReportedTTL = time.Hour
	}
	b := &Broker{SPN: "HTTP/" + opts.Host, opts: opts, by: map[string]int{}}
	b.Principal = b.SPN + "@" + realm.Name
	b.Keytab = filepath.Join(realm.Dir, "broker-"+strings.ReplaceAll(opts.Host, ".", "_")+".keytab")
	if err := realm.AddPrincipal(ctx, b.SPN, ""); err != nil {
		return nil, err
	}
	if err := realm.Keytab(ctx, b.SPN, b.Keytab); err != nil {
		return nil, err
	}
	kt, err := keytab.Load(b.Keytab)
	if err != nil {
		return nil, fmt.Errorf("dynalab: broker keytab %s does not load", b.Keytab)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b.ln = ln
	b.URL = "http://" + opts.Host + ":" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/aws/credentials"
	quiet := log.New(discard{}, "", 0)
	h := spnego.SPNEGOKRB5Authenticate(http.HandlerFunc(b.serve), kt, service.DecodePAC(false), service.Logger(quiet))
	b.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln)
	return b, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Close stops the broker.
func (b *Broker) Close() error { return b.srv.Close() }

// Minted is how many credential sets the broker handed out, in all or to
// one principal (name@REALM).
func (b *Broker) Minted(principal string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if principal == "" {
		return b.n
	}
	return b.by[principal]
}

func (b *Broker) serve(w http.ResponseWriter, r *http.Request) {
	id := goidentity.FromHTTPRequestContext(r)
	if id == nil || !id.Authenticated() {
		http.Error(w, "not authenticated", http.StatusUnauthorized)
		return
	}
	who := id.UserName() + "@" + id.Domain()
	if slices.Contains(b.opts.Refuse, who) {
		http.Error(w, "principal not allowed", http.StatusForbidden)
		return
	}
	akid := "ASIA" + randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
	b.mu.Lock()
	b.n++
	b.by[who]++
	n := b.n
	b.mu.Unlock()
	if b.opts.Proxy != nil {
		kp := KeyPolicy{}
		if b.opts.Policy != nil {
			kp = b.opts.Policy(who, n)
		}
		b.opts.Proxy.RegisterKey(akid, kp)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"Version":         1,
		"AccessKeyId":     akid,
		"SecretAccessKey": randomString(40, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"),
		"SessionToken":    randomString(64, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
		"Expiration":      time.Now().Add(b.opts.ReportedTTL).UTC().Format(time.RFC3339),
	})
}

func randomString(n int, alphabet string) string {
	buf := make([]byte, n)
	rand.Read(buf)
	for i := range buf {
		buf[i] = alphabet[int(buf[i])%len(alphabet)]
	}
	return string(buf)
}
