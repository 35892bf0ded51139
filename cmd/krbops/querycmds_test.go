package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/krbops/krbops/dynamo"
	"github.com/krbops/krbops/internal/dynalab"
	"github.com/krbops/krbops/internal/lab"
)

// queryLab is what the resume_query_*.txtar scripts run against:
// dynalite, the fault-injecting proxy in front of it and a SPNEGO
// credential broker on the lab realm. It starts on the first dynalab-*
// command, so the other scripts never pay for it. Scripts run in
// parallel and share it: each uses its own table names and principals.
type queryLab struct {
	realm *lab.Realm

	once   sync.Once
	err    error
	srv    *dynalab.Server
	proxy  *dynalab.Proxy
	broker *dynalab.Broker

	mu     sync.Mutex
	expire map[string]int // principal -> requests per minted key
}

func newQueryLab(r *lab.Realm) *queryLab {
	return &queryLab{realm: r, expire: map[string]int{}}
}

func (q *queryLab) start() error {
	q.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if q.srv, q.err = dynalab.Start(ctx, dynalab.Options{}); q.err != nil {
			return
		}
		if q.proxy, q.err = dynalab.NewProxy(q.srv.Endpoint, uint64(time.Now().UnixNano())); q.err != nil {
			return
		}
		q.broker, q.err = dynalab.NewBroker(ctx, q.realm, dynalab.BrokerOptions{Proxy: q.proxy,
			Policy: func(principal string, _ int) dynalab.KeyPolicy {
				q.mu.Lock()
				defer q.mu.Unlock()
				if n := q.expire[principal]; n < 0 {
					return dynalab.KeyPolicy{ExpiresAt: time.Unix(1, 0)} // revoked: expired at once
				}
				return dynalab.KeyPolicy{MaxRequests: q.expire[principal]}
			}})
	})
	return q.err
}

func (q *queryLab) close() {
	if q.broker != nil {
		q.broker.Close()
	}
	if q.proxy != nil {
		q.proxy.Close()
	}
	if q.srv != nil {
		q.srv.Close()
	}
}

// setup gives every script dummy AWS settings (nothing of the developer's
// ~/.aws reaches a test server) and skips a resume_query script when
// dynalite is missing — except under CI=true, where that fails it, as
// lab.ForTest does for a missing KDC.
func (q *queryLab) setup(env *testscript.Env) error {
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": dynalab.AccessKeyID, "AWS_SECRET_ACCESS_KEY": dynalab.SecretAccessKey,
		"AWS_REGION": dynalab.Region, "AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": "/nonexistent/krbops-e2e", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/krbops-e2e",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_DYNAMODB": "",
	} {
		env.Setenv(k, v)
	}
	if base := filepath.Base(env.WorkDir); !strings.Contains(base, "resume_query") && !strings.Contains(base, "ledger_dynamodb") {
		return nil
	}
	if err := dynalab.Missing(); err != nil {
		if os.Getenv("CI") == "true" {
			return fmt.Errorf("%v (CI=true: a missing dynalite is a failure, not a skip)", err)
		}
		env.T().Skip(err.Error())
	}
	return nil
}

type scriptCmd = func(ts *testscript.TestScript, neg bool, args []string)

// cmds are the scripts' dynalab-* commands:
//
//	dynalab-table NAME ITEMS [PAD]     create and load a table; sets $DYNALAB (proxy URL)
//	dynalab-rule NAME [deny=OP] [after=N] [moto] [throttle=P] [error500=P] [delay=D]
//	dynalab-count NAME CODE N          the proxy answered N times with CODE ("passed" for none)
//	dynalab-check FILE NAME [FORMAT]   FILE holds exactly a plain scan of table NAME
//	dynalab-principal NAME KEYTAB      a lab principal and its keytab; sets $BROKER, $BROKER_SPN
//	dynalab-expire PRINCIPAL N         keys the broker mints for PRINCIPAL expire after N requests (-1: at once)
func (q *queryLab) cmds() map[string]scriptCmd {
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Minute)
	}
	ready := func(ts *testscript.TestScript) {
		ts.Check(q.start())
		ts.Setenv("DYNALAB", q.proxy.URL)
		ts.Setenv("BROKER", q.broker.URL)
		ts.Setenv("BROKER_SPN", q.broker.SPN)
	}
	return map[string]scriptCmd{
		"dynalab-table": func(ts *testscript.TestScript, neg bool, args []string) {
			if neg || len(args) < 2 || len(args) > 3 {
				ts.Fatalf("usage: dynalab-table NAME ITEMS [PAD]")
			}
			ready(ts)
			n, err := strconv.Atoi(args[1])
			ts.Check(err)
			pad := 0
			if len(args) == 3 {
				pad, err = strconv.Atoi(args[2])
				ts.Check(err)
			}
			c, cancel := ctx()
			defer cancel()
			ts.Check(q.srv.Setup(c, args[0], n, pad))
		},
		"dynalab-rule": func(ts *testscript.TestScript, neg bool, args []string) {
			if neg || len(args) < 1 {
				ts.Fatalf("usage: dynalab-rule NAME [deny=OP] [after=N] [moto] [throttle=P] [error500=P] [delay=D]")
			}
			ready(ts)
			var r dynalab.Rule
			for _, a := range args[1:] {
				k, v, _ := strings.Cut(a, "=")
				var err error
				switch k {
				case "deny":
					r.Deny, r.DenyActions = true, []string{v}
				case "after":
					r.DenyAfter, err = strconv.Atoi(v)
				case "moto":
					r.MotoStyle = true
				case "throttle":
					r.ThrottleRate, err = strconv.ParseFloat(v, 64)
				case "error500":
					r.ServerErrorRate, err = strconv.ParseFloat(v, 64)
				case "delay":
					r.Delay, err = time.ParseDuration(v)
				default:
					ts.Fatalf("dynalab-rule: unknown setting %q", a)
				}
				ts.Check(err)
			}
			q.proxy.SetRule(args[0], r)
		},
		"dynalab-count": func(ts *testscript.TestScript, neg bool, args []string) {
			if len(args) != 3 {
				ts.Fatalf("usage: dynalab-count NAME CODE N")
			}
			ready(ts)
			code := args[1]
			if code == "passed" {
				code = ""
			}
			got := q.proxy.Count(args[0], code)
			if (strconv.Itoa(got) == args[2]) == neg {
				ts.Fatalf("proxy answered %s %d times for table %s, want %s%s", args[1], got, args[0], map[bool]string{true: "not ", false: ""}[neg], args[2])
			}
		},
		"dynalab-check": func(ts *testscript.TestScript, neg bool, args []string) {
			if neg || len(args) < 2 || len(args) > 3 {
				ts.Fatalf("usage: dynalab-check FILE NAME [FORMAT]")
			}
			ready(ts)
			format := dynamo.FormatJSON
			if len(args) == 3 {
				format = dynamo.Format(args[2])
			}
			c, cancel := ctx()
			defer cancel()
			d, err := q.srv.CompareFile(c, ts.MkAbs(args[0]), &dynamodb.ScanInput{TableName: aws.String(args[1]), ConsistentRead: aws.Bool(true)}, format)
			ts.Check(err)
			if !d.OK() {
				ts.Fatalf("%s is not a plain scan of %s: %s", args[0], args[1], d)
			}
			ts.Logf("%s: %d items, 0 duplicates, 0 missing", args[0], d.Got)
		},
		"dynalab-principal": func(ts *testscript.TestScript, neg bool, args []string) {
			if neg || len(args) != 2 {
				ts.Fatalf("usage: dynalab-principal NAME KEYTAB")
			}
			ready(ts)
			c, cancel := ctx()
			defer cancel()
			err := q.realm.AddPrincipal(c, args[0], "")
			if err != nil && !strings.Contains(err.Error(), "already exists") {
				ts.Check(err)
			}
			ts.Check(q.realm.Keytab(c, args[0], ts.MkAbs(args[1])))
		},
		"dynalab-expire": func(ts *testscript.TestScript, neg bool, args []string) {
			if neg || len(args) != 2 {
				ts.Fatalf("usage: dynalab-expire PRINCIPAL N")
			}
			n, err := strconv.Atoi(args[1])
			ts.Check(err)
			p := args[0]
			if !strings.Contains(p, "@") {
				p += "@" + q.realm.Name
			}
			q.mu.Lock()
			q.expire[p] = n
			q.mu.Unlock()
		},
	}
}
