//go:build unix

package secretstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/krbops/krbops/internal/tlstest"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go/logging"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/motolab"
)

// openSM opens an awssm store on srv, signed with cfg, with the endpoint
// given in the URL as an operator would.
func openSM(t *testing.T, srv *motolab.Server, prefix string, cfg aws.Config) Store {
	t.Helper()
	cfg.BaseEndpoint = nil // the URL's endpoint must be the one that counts
	st, err := Open(context.Background(), "awssm://"+prefix+"?region="+srv.Region+"&endpoint="+srv.Endpoint, Options{AWS: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func createSecret(t *testing.T, sm *secretsmanager.Client, id string) {
	t.Helper()
	// No value: krbops gives a secret its first version with Seed.
	if _, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String(id)}); err != nil {
		t.Fatalf("create secret %s: %v", id, err)
	}
}

// labels returns version id -> staging labels as the service has them.
func labels(t *testing.T, sm *secretsmanager.Client, id string) map[string][]string {
	t.Helper()
	out, err := sm.ListSecretVersionIds(context.Background(), &secretsmanager.ListSecretVersionIdsInput{SecretId: aws.String(id), IncludeDeprecated: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, v := range out.Versions {
		l := slices.Clone(v.VersionStages)
		slices.Sort(l)
		m[aws.ToString(v.VersionId)] = l
	}
	return m
}

// TestAWSSM runs the awssm backend against a real moto_server.
func TestAWSSM(t *testing.T) {
	t.Parallel() // overlaps the two moto_servers' start-up
	srv := motolab.ForTest(t, motolab.Options{})
	ctx := context.Background()
	admin := secretsmanager.NewFromConfig(srv.Config())

	t.Run("discard", func(t *testing.T) {
		st := openSM(t, srv, "krbops/discard", srv.Config())
		id := "krbops/discard/" + principal
		createSecret(t, admin, id)
		if _, err := st.Seed(ctx, principal, keytab("one"), NewToken()); err != nil {
			t.Fatal(err)
		}
		p, err := st.PutPending(ctx, principal, keytab("two"), NewToken())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Discard(ctx, principal, p.ID); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		if _, err := st.Get(ctx, principal, StagePending); !errors.Is(err, ErrNotFound) {
			t.Errorf("pending after Discard: %v, want ErrNotFound", err)
		}
		mustGet(t, st, principal, StageCurrent, keytab("one"))
		if err := st.Discard(ctx, principal, p.ID); err != nil {
			t.Errorf("repeated Discard: %v", err)
		}
	})

	t.Run("lifecycle", func(t *testing.T) {
		st := openSM(t, srv, "krbops/test", srv.Config())
		id := "krbops/test/" + principal
		createSecret(t, admin, id)
		k1, k2 := keytab("one"), keytab("two")

		if _, err := st.PutPending(ctx, principal, k2, NewToken()); !errors.Is(err, ErrConflict) {
			t.Fatalf("PutPending before Seed = %v, want ErrConflict (the service would make it current)", err)
		}
		v1, err := st.Seed(ctx, principal, k1, NewToken())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Check(ctx, principal); err != nil {
			t.Fatalf("Check: %v", err)
		}
		tok := NewToken()
		v2, err := st.PutPending(ctx, principal, k2, tok)
		if err != nil {
			t.Fatal(err)
		}
		if v2.ID != tok || !slices.Equal(v2.Stages, []Stage{StagePending}) {
			t.Fatalf("PutPending = %v, want version %s, pending", v2, tok)
		}
		// The pitfall DESIGN.md warns of: AWSCURRENT must not move on put.
		cur, err := admin.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
		if err != nil || !bytes.Equal(cur.SecretBinary, k1) || aws.ToString(cur.VersionId) != v1.ID {
			t.Fatalf("AWSCURRENT after PutPending is %s, want the seeded %s (err %v)", aws.ToString(cur.VersionId), v1.ID, err)
		}
		mustGet(t, st, principal, StagePending, k2)

		if err := st.Promote(ctx, principal, v2.ID); err != nil {
			t.Fatal(err)
		}
		got := labels(t, admin, id)
		want := map[string][]string{v1.ID: {"AWSPREVIOUS"}, v2.ID: {"AWSCURRENT"}}
		if len(got) != 2 || !slices.Equal(got[v1.ID], want[v1.ID]) || !slices.Equal(got[v2.ID], want[v2.ID]) {
			t.Fatalf("labels after Promote = %v, want %v", got, want)
		}
		mustGet(t, st, principal, StageCurrent, k2)
		mustGet(t, st, principal, StagePrevious, k1)
		if _, err := st.Get(ctx, principal, StagePending); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(pending) after Promote = %v, want ErrNotFound", err)
		}
		vs, err := st.Versions(ctx, principal)
		if err != nil || len(vs) != 2 {
			t.Fatalf("Versions = %v, %v", vs, err)
		}
		for _, v := range vs {
			if v.Data != nil {
				t.Errorf("Versions returned data for %s", v.ID)
			}
		}
		old, err := st.GetVersion(ctx, principal, v1.ID)
		if err != nil || !bytes.Equal(old.Data, k1) {
			t.Fatalf("GetVersion(%s) = %v, %v", v1.ID, old, err)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		st := openSM(t, srv, "", srv.Config())
		name := "idem@EXAMPLE.COM"
		createSecret(t, admin, name)
		seedTok := NewToken()
		if _, err := st.Seed(ctx, name, keytab("one"), seedTok); err != nil {
			t.Fatal(err)
		}
		if v, err := st.Seed(ctx, name, keytab("one"), seedTok); err != nil || v.ID != seedTok {
			t.Fatalf("repeated Seed = %v, %v", v, err)
		}
		if _, err := st.Seed(ctx, name, keytab("x"), NewToken()); !errors.Is(err, ErrConflict) {
			t.Fatalf("Seed over current = %v, want ErrConflict", err)
		}
		tok := NewToken()
		p1, err := st.PutPending(ctx, name, keytab("two"), tok)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := st.PutPending(ctx, name, keytab("two"), tok)
		if err != nil || p2.ID != p1.ID || !bytes.Equal(p2.Data, keytab("two")) {
			t.Fatalf("repeated PutPending = %v, %v", p2, err)
		}
		_, err = st.PutPending(ctx, name, keytab("three"), tok)
		if !errors.Is(err, ErrConflict) || strings.Contains(err.Error(), "KEYMATERIAL") {
			t.Fatalf("same token, other data = %v, want ErrConflict without key bytes", err)
		}
		// moto would have overwritten the pending version in place; the
		// store's own lookup must have kept the first data.
		mustGet(t, st, name, StagePending, keytab("two"))
		if err := st.Promote(ctx, name, p1.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.Promote(ctx, name, p1.ID); err != nil {
			t.Fatalf("repeated Promote = %v", err)
		}
		p3, err := st.PutPending(ctx, name, keytab("two"), tok)
		if err != nil || p3.ID != p1.ID || !p3.Has(StageCurrent) {
			t.Fatalf("PutPending after Promote = %v, %v; want the promoted version", p3, err)
		}
		if n := len(labels(t, admin, name)); n != 2 {
			t.Fatalf("%d versions, want 2: a repeat stored a copy", n)
		}
	})

	t.Run("promote-after-crash", func(t *testing.T) {
		st := openSM(t, srv, "", srv.Config())
		name := "crash@EXAMPLE.COM"
		createSecret(t, admin, name)
		v1, _ := st.Seed(ctx, name, keytab("one"), NewToken())
		stale, err := st.PutPending(ctx, name, keytab("two"), NewToken())
		if err != nil {
			t.Fatal(err)
		}
		v3, err := st.PutPending(ctx, name, keytab("three"), NewToken())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Promote(ctx, name, stale.ID); !errors.Is(err, ErrConflict) {
			t.Fatalf("Promote(displaced pending) = %v, want ErrConflict", err)
		}
		if err := st.Promote(ctx, name, NewToken()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Promote(unknown) = %v, want ErrNotFound", err)
		}
		// A crash after Promote's first call: AWSCURRENT moved, AWSPENDING
		// still on the new version.
		if _, err := admin.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
			SecretId: aws.String(name), VersionStage: aws.String("AWSCURRENT"),
			MoveToVersionId: aws.String(v3.ID), RemoveFromVersionId: aws.String(v1.ID),
		}); err != nil {
			t.Fatal(err)
		}
		if got := labels(t, admin, name)[v3.ID]; !slices.Equal(got, []string{"AWSCURRENT", "AWSPENDING"}) {
			t.Fatalf("set-up: labels of %s = %v", v3.ID, got)
		}
		if err := st.Promote(ctx, name, v3.ID); err != nil {
			t.Fatal(err)
		}
		got := labels(t, admin, name)
		if !slices.Equal(got[v3.ID], []string{"AWSCURRENT"}) || !slices.Equal(got[v1.ID], []string{"AWSPREVIOUS"}) {
			t.Fatalf("labels after finishing the promote = %v", got)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		st := openSM(t, srv, "", srv.Config())
		missing := "missing@EXAMPLE.COM"
		for op, call := range map[string]func() error{
			"get":         func() error { _, err := st.Get(ctx, missing, StageCurrent); return err },
			"seed":        func() error { _, err := st.Seed(ctx, missing, keytab("x"), NewToken()); return err },
			"put-pending": func() error { _, err := st.PutPending(ctx, missing, keytab("x"), NewToken()); return err },
			"check":       func() error { return st.Check(ctx, missing) },
		} {
			err := call()
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing) {
				t.Errorf("%s of a missing secret = %v, want ErrNotFound naming it", op, err)
			}
			if op != "get" && !strings.Contains(HintOf(err), "create-secret") {
				t.Errorf("%s of a missing secret: hint %q, want how to create it", op, HintOf(err))
			}
		}

		str := "string@EXAMPLE.COM"
		if _, err := admin.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(str), SecretString: aws.String("not a keytab")}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Get(ctx, str, StageCurrent); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Get of a SecretString = %v, want ErrCorrupt", err)
		}

		deleted := "deleted@EXAMPLE.COM"
		createSecret(t, admin, deleted)
		if _, err := st.Seed(ctx, deleted, keytab("one"), NewToken()); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(deleted), RecoveryWindowInDays: aws.Int64(7)}); err != nil {
			t.Fatal(err)
		}
		if err := st.Check(ctx, deleted); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "scheduled for deletion") {
			t.Errorf("Check of a secret pending deletion = %v, want ErrConflict", err)
		}

		rotated := "rotated@EXAMPLE.COM"
		createSecret(t, admin, rotated)
		if _, err := st.Seed(ctx, rotated, keytab("one"), NewToken()); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.RotateSecret(ctx, &secretsmanager.RotateSecretInput{
			SecretId: aws.String(rotated), RotateImmediately: aws.Bool(false),
			RotationRules: &types.RotationRulesType{AutomaticallyAfterDays: aws.Int64(30)},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutPending(ctx, rotated, keytab("two"), NewToken()); !errors.Is(err, ErrConflict) || !strings.Contains(HintOf(err), "cancel-rotate-secret") {
			t.Errorf("PutPending on a Lambda-rotated secret = %v, want ErrConflict with a hint", err)
		}
	})

	t.Run("no-key-bytes-in-sdk-logs", func(t *testing.T) {
		var mu sync.Mutex
		var logged strings.Builder
		cfg := srv.Config()
		// A caller asking for full wire logs must still not get SecretBinary.
		cfg.ClientLogMode = aws.LogRequest | aws.LogResponse | aws.LogRequestWithBody | aws.LogResponseWithBody
		cfg.Logger = logging.LoggerFunc(func(_ logging.Classification, format string, v ...any) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(&logged, format+"\n", v...)
		})
		st := openSM(t, srv, "", cfg)
		name := "logged@EXAMPLE.COM"
		createSecret(t, admin, name)
		k := keytab("logged")
		if _, err := st.Seed(ctx, name, k, NewToken()); err != nil {
			t.Fatal(err)
		}
		mustGet(t, st, name, StageCurrent, k)
		mu.Lock()
		out := logged.String()
		mu.Unlock()
		if !strings.Contains(out, "PutSecretValue") && !strings.Contains(out, "secretsmanager.PutSecretValue") && !strings.Contains(out, "POST") {
			t.Fatalf("the SDK logged no request at all; the test proves nothing:\n%.500s", out)
		}
		if strings.Contains(out, base64.StdEncoding.EncodeToString(k)) || strings.Contains(out, "KEYMATERIAL") {
			t.Fatalf("SDK log carries the keytab")
		}
	})
}

// TestAWSSMPermissionAndAuth runs against a moto_server that enforces IAM:
// a denial is ErrPermission with the missing action in the hint, unknown
// keys are ErrAuth, and neither is transient.
func TestAWSSMPermissionAndAuth(t *testing.T) {
	t.Parallel()
	srv := motolab.ForTest(t, motolab.Options{EnforceIAM: true})
	ctx := context.Background()
	admin := secretsmanager.NewFromConfig(srv.Config())
	name := "perm@EXAMPLE.COM"
	createSecret(t, admin, name)
	if _, err := openSM(t, srv, "", srv.Config()).Seed(ctx, name, keytab("one"), NewToken()); err != nil {
		t.Fatal(err)
	}
	reader, err := srv.CreateUser(ctx, "reader", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*","Action":[
		"secretsmanager:DescribeSecret","secretsmanager:ListSecretVersionIds","secretsmanager:GetSecretValue"]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	st := openSM(t, srv, "", srv.ConfigFor(reader))
	if err := st.Check(ctx, name); err != nil {
		t.Fatalf("Check with read rights: %v", err)
	}
	mustGet(t, st, name, StageCurrent, keytab("one"))
	_, err = st.PutPending(ctx, name, keytab("two"), NewToken())
	if !errors.Is(err, ErrPermission) || IsTransient(err) || errors.Is(err, ErrAuth) {
		t.Fatalf("PutPending without PutSecretValue = %v, want ErrPermission only", err)
	}
	if !strings.Contains(HintOf(err), "secretsmanager:") || !strings.Contains(HintOf(err), "PutSecretValue") || strings.Contains(err.Error(), "KEYMATERIAL") {
		t.Errorf("denial: %v, hint %q; want the action in the hint and no key bytes", err, HintOf(err))
	}

	stranger := openSM(t, srv, "", srv.ConfigFor(aws.Credentials{AccessKeyID: motolab.DummyAccessKeyID, SecretAccessKey: motolab.DummySecretAccessKey}))
	err = stranger.Check(ctx, name)
	if !errors.Is(err, ErrAuth) || errors.Is(err, ErrPermission) || !strings.Contains(HintOf(err), "refresh") {
		t.Fatalf("Check with unknown keys = %v (hint %q), want ErrAuth", err, HintOf(err))
	}
}

// TestAWSSMTransient covers what moto never produces: throttling, 5xx in
// Secrets Manager's own JSON wire format, and an endpoint nobody serves.
func TestAWSSMTransient(t *testing.T) {
	ctx := context.Background()
	cfg := aws.Config{
		Region:           "us-east-1",
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1, // the SDK's retries are not under test
	}
	for _, c := range []struct {
		status int
		body   string
		want   error
	}{
		{400, `{"__type":"ThrottlingException","message":"Rate exceeded"}`, ErrTransient},
		{500, `{"__type":"InternalServiceError","message":"oops"}`, ErrTransient},
		{503, `<html>bad gateway</html>`, ErrTransient},
		{400, `{"__type":"AccessDeniedException","message":"User: x is not authorized"}`, ErrPermission},
		{400, `{"__type":"ExpiredTokenException","message":"expired"}`, ErrAuth},
		{400, `{"__type":"ResourceNotFoundException","message":"no such secret"}`, ErrNotFound},
		{400, `{"__type":"InvalidRequestException","message":"marked for deletion"}`, ErrConflict},
		{403, `<?xml version="1.0"?><ErrorResponse><Error><Code>AccessDenied</Code><Message>denied</Message></Error></ErrorResponse>`, ErrPermission},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(c.status)
			fmt.Fprint(w, c.body)
		}))
		st, err := Open(ctx, "awssm://?endpoint="+srv.URL, Options{AWS: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		err = st.Check(ctx, "svc@EXAMPLE.COM")
		srv.Close()
		if !errors.Is(err, c.want) {
			t.Errorf("HTTP %d %s: %v, want kind %v", c.status, c.body, err, c.want)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	st, err := Open(ctx, "awssm://?endpoint="+dead, Options{AWS: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx, "svc@EXAMPLE.COM"); !IsTransient(err) {
		t.Errorf("unreachable endpoint: %v, want ErrTransient", err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-cctx.Done()
	if err := st.Check(cctx, "svc@EXAMPLE.COM"); IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired context: %v, want the context's error, not transient", err)
	}
}

// A store endpoint whose certificate this host does not trust fails at
// once with ErrTLS: one connection (neither krbops nor the SDK's standard
// retryer tries again), a message naming the host and the problem, a hint
// at the trust store, and a usage fault since the endpoint is the
// operator's.
func TestAWSSMUntrustedCertificate(t *testing.T) {
	srv, conns := tlstest.UntrustedServer(t)
	// The SDK's default retryer (standard, 3 attempts), as a real run has.
	cfg := aws.Config{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}}
	st, err := Open(context.Background(), "awssm://?endpoint="+srv.URL, Options{AWS: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Check(context.Background(), "svc@EXAMPLE.COM")
	host := strings.TrimPrefix(srv.URL, "https://")
	if !errors.Is(err, ErrTLS) || IsTransient(err) {
		t.Fatalf("Check = %v, want ErrTLS", err)
	}
	if want := "the server at " + host + " presents a certificate signed by an unknown authority"; !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("message %q, want one line with %q", err, want)
	}
	if h := HintOf(err); !strings.Contains(h, "AWS_CA_BUNDLE") {
		t.Errorf("hint %q", h)
	}
	if c := fault.ClassOf(err); c != fault.Usage {
		t.Errorf("fault class %s, want usage", c)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1: the TLS failure was retried", n)
	}
}

// A credential provider's error text (a credential_process helper's
// output) never reaches the store's error.
func TestAWSSMCredentialFailureKeepsNoHelperOutput(t *testing.T) {
	leaky := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New(`credential_process: {"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG"}`)
	})
	cfg := aws.Config{Region: "us-east-1", Credentials: aws.NewCredentialsCache(leaky), RetryMaxAttempts: 1}
	st, err := Open(context.Background(), "awssm://?endpoint=http://127.0.0.1:9", Options{AWS: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Check(context.Background(), "svc@EXAMPLE.COM")
	if !errors.Is(err, ErrCredentials) || strings.Contains(err.Error(), "wJalr") || strings.Contains(fmt.Sprintf("%+v", err), "wJalr") {
		t.Errorf("Check = %v, want ErrCredentials without the helper's output", err)
	}
	if c := fault.ClassOf(err); c != fault.Usage {
		t.Errorf("fault class %s, want usage", c)
	}
}
