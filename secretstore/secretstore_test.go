package secretstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// keytab returns fake keytab bytes carrying a marker that must never show
// up in an error, a log line or a printed Version.
func keytab(marker string) []byte {
	return append([]byte{0x05, 0x02}, []byte("KEYMATERIAL-"+marker+"-KEYMATERIAL")...)
}

func TestOpenURLs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, raw := range []string{dir, "file://" + dir} {
		st, err := Open(ctx, raw, Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", raw, err)
		}
		fs, ok := st.(*fileStore)
		if !ok || fs.root != dir {
			t.Errorf("Open(%q) = %T root %v, want file store at %s", raw, st, fs, dir)
		}
	}
	rel, err := Open(ctx, "file://relative/store", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if root := rel.(*fileStore).root; !filepath.IsAbs(root) || !strings.HasSuffix(root, filepath.Join("relative", "store")) {
		t.Errorf("relative path resolved to %q, want an absolute path ending in relative/store", root)
	}

	noRegion := &aws.Config{}
	st, err := Open(ctx, "awssm://krbops/prod?region=eu-west-1&endpoint=http://127.0.0.1:9", Options{AWS: noRegion})
	if err != nil {
		t.Fatal(err)
	}
	if id := st.(*awsStore).id("HTTP/web01@EXAMPLE.COM"); id != "krbops/prod/HTTP/web01@EXAMPLE.COM" {
		t.Errorf("prefixed id = %q", id)
	}
	st, err = Open(ctx, "awssm://?region=eu-west-1", Options{AWS: noRegion})
	if err != nil {
		t.Fatal(err)
	}
	if id := st.(*awsStore).id("svc"); id != "svc" {
		t.Errorf("unprefixed id = %q", id)
	}

	for raw, want := range map[string]string{
		"":                                  "empty store URL",
		"vault://kv/krbops":                 `unsupported store URL scheme "vault"`,
		"file://":                           "names no directory",
		"awssm://p?region=r&regoin=x":       `unknown parameter "regoin"`,
		"awssm://p":                         "no AWS region",
		"awssm://AKIA:secretkey@p?region=r": "credentials do not belong",
		"awssm://p?region=r&endpoint=127.0.0.1:80":  "not an http(s) URL",
		"awssm://ok/bad*prefix?region=r":            "bad name prefix",
		"file://" + filepath.Join(dir, "afile.txt"): "", // not existing yet: fine
	} {
		_, err := Open(ctx, raw, Options{AWS: noRegion})
		if want == "" {
			if err != nil {
				t.Errorf("Open(%q): %v", raw, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secretkey") {
			t.Errorf("Open(%q) error repeats the URL's credentials: %v", raw, err)
		}
	}
}

func TestValidNameAndToken(t *testing.T) {
	for _, ok := range []string{"alice@EXAMPLE.COM", "HTTP/web01.example.com@EXAMPLE.COM", "krbtgt/A.B@A.B", "x+y=z_1-2", "HOST1$@AD.TEST"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a b", "a:b", "é", strings.Repeat("a", 513)} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
	if err := ValidAWSName("HOST1$@AD.TEST"); err == nil || fault.ClassOf(err) != fault.Usage || fault.HintOf(err) == "" {
		t.Errorf("ValidAWSName accepts '$' or gives no usage error with a hint: %v", err)
	}
	if err := ValidAWSName("alice@EXAMPLE.COM"); err != nil {
		t.Errorf("ValidAWSName(alice@EXAMPLE.COM) = %v", err)
	}
	seen := map[string]bool{}
	for range 100 {
		tok := NewToken()
		if err := ValidToken(tok); err != nil {
			t.Fatalf("NewToken() = %q: %v", tok, err)
		}
		if seen[tok] {
			t.Fatalf("NewToken repeated %q", tok)
		}
		seen[tok] = true
	}
	for _, bad := range []string{"short", strings.Repeat("a", 65), strings.Repeat("a", 31) + "/", strings.Repeat("a", 32) + " "} {
		if err := ValidToken(bad); err == nil {
			t.Errorf("ValidToken(%q) accepted", bad)
		}
	}
	if s, err := ParseStage("pending"); err != nil || s != StagePending {
		t.Errorf("ParseStage(pending) = %q, %v", s, err)
	}
	if _, err := ParseStage("AWSCURRENT"); err == nil {
		t.Error("ParseStage accepted a Secrets Manager label")
	}
}

func TestVersionNeverPrintsData(t *testing.T) {
	v := Version{ID: "00000007", Stages: []Stage{StageCurrent}, Data: keytab("print")}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("stored", "version", v)
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	outs := map[string]string{
		"%v":   fmt.Sprintf("%v", v),
		"%+v":  fmt.Sprintf("%+v", v),
		"%#v":  fmt.Sprintf("%#v", v),
		"%s":   fmt.Sprintf("%s", v),
		"slog": logged.String(),
		"json": string(js),
	}
	for how, out := range outs {
		if strings.Contains(out, "KEYMATERIAL") || strings.Contains(out, "S0VZTUFURVJJQUw") /* base64 */ {
			t.Errorf("%s prints key material: %s", how, out)
		}
		if !strings.Contains(out, "00000007") {
			t.Errorf("%s lost the version id: %s", how, out)
		}
	}
}

func TestErrorMatchingAndMessage(t *testing.T) {
	cause := failf(ErrConflict, "token t already stored other data").withHint("a new keytab needs a new token")
	s := &fileStore{url: "file:///store"}
	err := s.wrap("put-pending", "svc@R", cause)
	if !errors.Is(err, ErrConflict) || errors.Is(err, ErrTransient) || IsTransient(err) {
		t.Errorf("kinds of %v wrong", err)
	}
	want := "secretstore: put-pending svc@R in file:///store: token t already stored other data"
	if err.Error() != want {
		t.Errorf("message\n got %q\nwant %q", err.Error(), want)
	}
	if HintOf(err) != "a new keytab needs a new token" {
		t.Errorf("HintOf = %q", HintOf(err))
	}
	var se *Error
	if !errors.As(err, &se) || se.Op != "put-pending" || se.Secret != "svc@R" {
		t.Errorf("errors.As *Error = %+v", se)
	}
}
