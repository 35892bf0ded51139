package commands

import (
	"os"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"
)

func TestReadRotateTargets(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []RotateTarget
	}{
		{"csv, columns in any order, optional ones", "# fleet of eu1\ncluster,principal,role,keytab,backend\neu1,svc-a,client,/k/a.kt,\neu1,HTTP/web@R,server,/k/web.kt,kadmin\n",
			[]RotateTarget{{Principal: "svc-a", Keytab: "/k/a.kt", Role: "client", Cluster: "eu1", Line: 3},
				{Principal: "HTTP/web@R", Keytab: "/k/web.kt", Role: "server", Cluster: "eu1", Backend: "kadmin", Line: 4}}},
		{"jsonl", "{\"principal\":\"svc-a\",\"keytab\":\"/k/a.kt\",\"role\":\"both\",\"cluster\":\"c1\",\"secret\":\"s/a\"}\n\n{\"principal\":\"svc-b\",\"keytab\":\"/k/b.kt\",\"role\":\"client\",\"cluster\":\"c2\"}\n",
			[]RotateTarget{{Principal: "svc-a", Keytab: "/k/a.kt", Role: "both", Cluster: "c1", Secret: "s/a", Line: 1},
				{Principal: "svc-b", Keytab: "/k/b.kt", Role: "client", Cluster: "c2", Line: 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadRotateTargets(writeTargets(t, tc.body), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d targets, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("target %d: %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// Every error is exit 2 and names the file, the line and the field.
func TestReadRotateTargetsErrorsNameFileLineAndField(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"no header", "svc-a,/k/a.kt,client,c1\n", `:1: header: unknown column "svc-a" (a header row naming the columns comes first)`},
		{"missing column", "principal,keytab,role\nsvc-a,/k/a.kt,client\n", ":1: header: no cluster column"},
		{"column twice", "principal,keytab,role,cluster,role\n", ":1: header: column role twice"},
		{"bad role", "principal,keytab,role,cluster\nsvc-a,/k/a.kt,client\nsvc-b,/k/b.kt,admin,c1\n", ":2: 3 fields, the header has 4 (principal,keytab,role,cluster)"},
		{"bad role value", "principal,keytab,role,cluster\nsvc-b,/k/b.kt,admin,c1\n", `:2: field role: "admin" is not client, server or both`},
		{"empty cluster", "principal,keytab,role,cluster\nsvc-b,/k/b.kt,client,\n", ":2: field cluster: empty"},
		{"bad backend", "principal,keytab,role,cluster,backend\nsvc-b,/k/b.kt,client,c1,ssh\n", `:2: field backend: "ssh" is not kpasswd, kpasswd-admin or kadmin`},
		{"duplicate", "principal,keytab,role,cluster\nsvc-a,/k/a.kt,client,c1\nsvc-a,/k/a2.kt,client,c2\n", `:3: field principal: "svc-a" is already on line 2`},
		{"json unknown field", "{\"principal\":\"a\",\"keytab\":\"/k\",\"role\":\"client\",\"cluster\":\"c\",\"tier\":\"x\"}\n", `:1: unknown field "tier"`},
		{"json missing role", "{\"principal\":\"a\",\"keytab\":\"/k\",\"cluster\":\"c\"}\n", ":1: field role: empty"},
		{"control character", "principal,keytab,role,cluster\n\"svc\x1b[2Ja\",/k/a.kt,client,c1\n", `:2: field principal: "svc\x1b[2Ja" has control character 0x1b at byte 4`},
		{"empty", "# nothing\n", ": no targets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTargets(t, tc.body)
			_, err := ReadRotateTargets(p, "")
			if err == nil || err.Error() != "--targets "+p+tc.want {
				t.Fatalf("error %v\nwant  --targets %s%s", err, p, tc.want)
			}
			if fault.ClassOf(err) != fault.Usage || fault.HintOf(err) == "" {
				t.Errorf("class %s, hint %q", fault.ClassOf(err), fault.HintOf(err))
			}
		})
	}
}

// The file decides which keys change: one another user could write is
// refused before it is read.
func TestReadRotateTargetsRefusesWritableByOthers(t *testing.T) {
	p := writeTargets(t, "principal,keytab,role,cluster\nsvc-a,/k/a.kt,client,c1\n")
	if err := os.Chmod(p, 0o664); err != nil {
		t.Fatal(err)
	}
	_, err := ReadRotateTargets(p, "")
	if err == nil || !strings.Contains(err.Error(), "not trusted: its mode 0664 lets other users write it") || fault.ClassOf(err) != fault.Usage {
		t.Fatalf("error %v (class %s)", err, fault.ClassOf(err))
	}
	link := p + ".link"
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRotateTargets(link, ""); err == nil || !strings.Contains(err.Error(), "not trusted: it is a symbolic link") {
		t.Fatalf("symlink: error %v", err)
	}
}

// A principal without a realm is the same as the one with the default
// realm: listing both would rotate it twice.
func TestReadRotateTargetsDuplicateAfterQualifying(t *testing.T) {
	p := writeTargets(t, "principal,keytab,role,cluster\nsvc,/k/a.kt,client,c1\nsvc@EXAMPLE.COM,/k/b.kt,client,c2\n")
	_, err := ReadRotateTargets(p, "EXAMPLE.COM")
	if want := "--targets " + p + `:3: field principal: "svc@EXAMPLE.COM" is already on line 2`; err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant  %s", err, want)
	}
	if _, err := ReadRotateTargets(p, "OTHER.ORG"); err != nil {
		t.Fatalf("different realms: %v", err)
	}
}

// A JSON-lines file may open with a comment: the format comes from the
// first line that is neither blank nor a comment.
func TestReadRotateTargetsJSONLinesAfterComment(t *testing.T) {
	ts, err := ReadRotateTargets(writeTargets(t, "\n# fleet eu1\n{\"principal\":\"svc-a\",\"keytab\":\"/k/a.kt\",\"role\":\"client\",\"cluster\":\"c1\"}\n"), "")
	if err != nil || len(ts) != 1 || ts[0].Principal != "svc-a" || ts[0].Line != 3 {
		t.Fatalf("targets %+v, error %v", ts, err)
	}
}

// Batch IDs depend on the targets, not on comments or blank lines: the
// same fleet run again is the same batch.
func TestBatchIDIgnoresComments(t *testing.T) {
	a, err := ReadRotateTargets(writeTargets(t, "principal,keytab,role,cluster\nsvc-a,/k/a.kt,client,c1\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadRotateTargets(writeTargets(t, "# rerun\nprincipal,keytab,role,cluster\n\nsvc-a,/k/a.kt,client,c1\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReadRotateTargets(writeTargets(t, "principal,keytab,role,cluster\nsvc-a,/k/a.kt,client,c2\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if batchID(a) != batchID(b) || batchID(a) == batchID(c) {
		t.Errorf("ids %s %s %s: want the first two equal, the third different", batchID(a), batchID(b), batchID(c))
	}
}

// rotate --targets checks every line before anything starts: a line the
// single rotation would refuse is exit 2 naming file and line, and the
// run function is never called.
func TestRotateTargetsValidatedBeforeStart(t *testing.T) {
	p := writeTargets(t, "principal,keytab,role,cluster\nsvc-a,/k/a.kt,client,c1\nkrbtgt/R,/k/t.kt,server,c1\n")
	batchBase := []string{"--targets", p, "--secret-store", "file:///s", "--allowlist", "a", "--kdc-log", "l", "--yes", "--no-policy"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{batchBase, "--targets " + p + ":3: field principal: refusing to rotate krbtgt/R: it matches the deny pattern krbtgt/*"},
		{append(batchBase, "--principal", "x"), "--principal and --targets exclude each other"},
		{append(batchBase, "--concurrency", "0"), "--concurrency must be at least 1"},
		{append(batchBase, "--max-failures-per-cluster", "0"), "--max-failures-per-cluster must be at least 1"},
		{[]string{"--targets", p, "--secret-store", "file:///s", "--allowlist", "a", "--yes", "--no-policy"}, "--targets " + p + ":2 (svc-a): --role client needs --kdc-log"},
	} {
		o, _, err := parseRotate(t, tc.args...)
		if fault.ExitCode(fault.ClassOf(err)) != fault.ExitUsage || err == nil || !strings.Contains(err.Error(), tc.want) || o != nil {
			t.Errorf("%v: %v (exit %d, started %v), want exit 2 with %q", tc.args, err, fault.ExitCode(fault.ClassOf(err)), o != nil, tc.want)
		}
	}
	ok := writeTargets(t, "principal,keytab,role,cluster,backend\nsvc-a,/k/a.kt,client,c1,\nHTTP/web,/k/w.kt,server,c2,kpasswd\n")
	o, which, err := parseRotate(t, append([]string{"--targets", ok}, batchBase[2:]...)...)
	if err != nil || which != "rotate" || len(o.batch) != 2 || o.batch[1].Role != "server" || o.batch[1].Cluster != "c2" || o.batch[0].MaxPerWindow != 20 {
		t.Fatalf("valid batch: %v %s %+v", err, which, o)
	}
}
