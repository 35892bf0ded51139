package dynalab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rule is what the proxy does to requests for one table.
type Rule struct {
	// Deny answers AccessDeniedException for DenyActions (operation names
	// such as "Scan"; empty: every operation) after the first DenyAfter
	// requests of that operation.
	Deny        bool
	DenyActions []string
	DenyAfter   int
	// MotoStyle denies the way moto does with IAM enforcement: HTTP 403
	// with an XML body, not DynamoDB's JSON.
	MotoStyle bool
	// ThrottleRate and ServerErrorRate are the probabilities (0..1) of a
	// ProvisionedThroughputExceededException and of an HTTP 500
	// InternalServerError, for FaultOps (default Scan and Query).
	ThrottleRate    float64
	ServerErrorRate float64
	FaultOps        []string
	// Delay slows every passed-through request of the table.
	Delay time.Duration
	// HoldAfter, when positive, holds every FaultOps request after the
	// first HoldAfter unanswered until the client goes away (counted as
	// code "held"): a test that interrupts a run mid-way holds it there
	// instead of racing its end.
	HoldAfter int
	// ItemCount, when positive, replaces DescribeTable's ItemCount (and
	// TableSizeBytes, at 100 bytes an item): dynalite always says 0, AWS
	// says what it counted in the last six hours.
	ItemCount int64
}

// KeyPolicy says when an access key expires: at ExpiresAt, or after
// MaxRequests requests signed with it (whichever comes first; zero values
// never expire). Counting requests makes "credentials that expire every
// five pages" exact whatever the machine's speed.
type KeyPolicy struct {
	ExpiresAt   time.Time
	MaxRequests int
}

type keyState struct {
	KeyPolicy
	used int
}

// Proxy is a fault-injecting reverse proxy in front of dynalite that
// answers in DynamoDB's JSON error wire format (x-amzn-ErrorType header,
// {"__type": "...#Code", "message": "..."} body, the real status codes).
type Proxy struct {
	URL string // http://127.0.0.1:port

	// RequireKnownKeys answers UnrecognizedClientException for an access
	// key that was never registered, as AWS does for a made-up key.
	RequireKnownKeys bool

	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	mu     sync.Mutex
	rng    *mrand.Rand
	rules  map[string]Rule
	keys   map[string]*keyState
	counts map[string]map[string]int // table -> code ("" = passed) -> n
	reqs   map[string]map[string]int // table -> operation -> n
}

// NewProxy starts a proxy to target (dynalite's endpoint). seed makes the
// random faults of a test repeatable.
func NewProxy(target string, seed uint64) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		URL: "http://" + ln.Addr().String(), ln: ln,
		rng:   mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		rules: map[string]Rule{}, keys: map[string]*keyState{},
		counts: map[string]map[string]int{}, reqs: map[string]map[string]int{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = u.Host },
		ModifyResponse: p.rewriteDescribe,
		// An upstream failure is answered 502, which the tests see; the
		// log line would only be noise in their output.
		ErrorLog: log.New(io.Discard, "", 0),
		// Keep dynalite's connections alive across the many small
		// requests a test makes.
		Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// SetRule replaces the rule for table.
func (p *Proxy) SetRule(table string, r Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules[table] = r
}

// RegisterKey sets when access key id expires.
func (p *Proxy) RegisterKey(id string, kp KeyPolicy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[id] = &keyState{KeyPolicy: kp}
}

// Count is how many answers to table's requests carried code (an error
// code such as "AccessDeniedException"; "" for passed-through requests).
func (p *Proxy) Count(table, code string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[table][code]
}

// Requests is how many op requests for table reached the proxy.
func (p *Proxy) Requests(table, op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reqs[table][op]
}

var credentialRe = regexp.MustCompile(`Credential=([A-Z0-9]+)/`)

// ServeHTTP decides the request's fate in the order AWS would: the
// signature's key first, then IAM, then capacity and server faults.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		http.Error(w, "reading request", http.StatusBadRequest)
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
	var req struct{ TableName string }
	_ = json.Unmarshal(body, &req)
	table := req.TableName
	var key string
	if m := credentialRe.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		key = m[1]
	}

	code, delay := p.decide(table, op, key)
	switch code {
	case "held":
		<-r.Context().Done()
	case "":
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		// A client that goes away (a SIGKILLed krbops, a timed-out
		// request) must not abort the request to dynalite: dynalite 4
		// throws on an aborted request and exits. ReverseProxy cancels
		// upstream on the request's context and, failing that, on the
		// writer's CloseNotify: detach both.
		p.rp.ServeHTTP(detached{w}, r.WithContext(context.WithoutCancel(r.Context())))
	case "ExpiredTokenException":
		writeJSONError(w, http.StatusBadRequest, "com.amazonaws.dynamodb.v20120810#ExpiredTokenException", "message",
			"The security token included in the request is expired")
	case "UnrecognizedClientException":
		writeJSONError(w, http.StatusBadRequest, "com.amazon.coral.service#UnrecognizedClientException", "message",
			"The security token included in the request is invalid.")
	case "AccessDeniedException":
		writeJSONError(w, http.StatusBadRequest, "com.amazon.coral.service#AccessDeniedException", "Message",
			fmt.Sprintf("User: arn:aws:sts::000000000000:assumed-role/krbops-test/session is not authorized to perform: dynamodb:%s on resource: arn:aws:dynamodb:%s:000000000000:table/%s because no identity-based policy allows the dynamodb:%s action", op, Region, table, op))
	case "AccessDenied":
		// moto's IAM denial, byte for byte as its RESTError renders it.
		w.Header().Set("X-Amzn-ErrorType", "AccessDenied")
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?>`+"\n"+`<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/krbops-test is not authorized to perform: dynamodb:%s</Message><Type>Sender</Type></Error></Errors></ErrorResponse>`, op)
	case "ProvisionedThroughputExceededException":
		writeJSONError(w, http.StatusBadRequest, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", "message",
			"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.")
	case "InternalServerError":
		writeJSONError(w, http.StatusInternalServerError, "com.amazonaws.dynamodb.v20120810#InternalServerError", "message", "Internal server error")
	}
}

// detached hides the connection's CloseNotifier from ReverseProxy.
type detached struct{ http.ResponseWriter }

func (p *Proxy) decide(table, op, key string) (code string, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reqs[table] == nil {
		p.reqs[table] = map[string]int{}
		p.counts[table] = map[string]int{}
	}
	p.reqs[table][op]++
	defer func() { p.counts[table][code]++ }()

	if ks, ok := p.keys[key]; ok {
		ks.used++
		if (!ks.ExpiresAt.IsZero() && !time.Now().Before(ks.ExpiresAt)) || (ks.MaxRequests > 0 && ks.used > ks.MaxRequests) {
			return "ExpiredTokenException", 0
		}
	} else if p.RequireKnownKeys {
		return "UnrecognizedClientException", 0
	}
	rule, ok := p.rules[table]
	if !ok {
		return "", 0
	}
	if rule.Deny && (len(rule.DenyActions) == 0 || slices.Contains(rule.DenyActions, op)) {
		// The first DenyAfter requests of the operation pass: a policy
		// that changes in the middle of a run.
		if p.reqs[table][op] > rule.DenyAfter {
			if rule.MotoStyle {
				return "AccessDenied", 0
			}
			return "AccessDeniedException", 0
		}
	}
	ops := rule.FaultOps
	if len(ops) == 0 {
		ops = []string{"Scan", "Query"}
	}
	if slices.Contains(ops, op) {
		if rule.HoldAfter > 0 && p.reqs[table][op] > rule.HoldAfter {
			return "held", 0
		}
		x := p.rng.Float64()
		switch {
		case x < rule.ThrottleRate:
			return "ProvisionedThroughputExceededException", 0
		case x < rule.ThrottleRate+rule.ServerErrorRate:
			return "InternalServerError", 0
		}
	}
	return "", rule.Delay
}

// rewriteDescribe applies Rule.ItemCount to a DescribeTable reply. The
// SDK checks DynamoDB's x-amz-crc32 header, so it is recomputed.
func (p *Proxy) rewriteDescribe(resp *http.Response) error {
	if resp.Request.Header.Get("X-Amz-Target") != "DynamoDB_20120810.DescribeTable" || resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var doc map[string]map[string]any
	if json.Unmarshal(body, &doc) == nil && doc["Table"] != nil {
		name, _ := doc["Table"]["TableName"].(string)
		p.mu.Lock()
		n := p.rules[name].ItemCount
		p.mu.Unlock()
		if n > 0 {
			doc["Table"]["ItemCount"], doc["Table"]["TableSizeBytes"] = n, n*100
			if b, err := json.Marshal(doc); err == nil {
				body = b
				resp.Header.Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10))
			}
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

func writeJSONError(w http.ResponseWriter, status int, typ, msgField, msg string) {
	code := typ[strings.LastIndexByte(typ, '#')+1:]
	b, _ := json.Marshal(map[string]string{"__type": typ, msgField: msg})
	w.Header().Set("x-amzn-ErrorType", code)
	w.Header().Set("x-amzn-RequestId", requestID())
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	w.Write(b)
}

func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}
