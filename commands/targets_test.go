package commands

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTargets(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "targets")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTargets(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []Target
	}{
		{"csv with header", "principal,keytab,service\nhost/a@R,/k/a.kt,\nhost/b@R,/k/b.kt,HTTP/b@R\n",
			[]Target{{"host/a@R", "/k/a.kt", ""}, {"host/b@R", "/k/b.kt", "HTTP/b@R"}}},
		{"csv no header, comments, two fields", "# fleet\nhost/a@R, /k/a.kt\n\n",
			[]Target{{"host/a@R", "/k/a.kt", ""}}},
		{"jsonl", "{\"principal\":\"host/a@R\",\"keytab\":\"/k/a.kt\"}\n\n{\"principal\":\"host/b@R\",\"keytab\":\"/k/b.kt\",\"service\":\"HTTP/b@R\"}\n",
			[]Target{{"host/a@R", "/k/a.kt", ""}, {"host/b@R", "/k/b.kt", "HTTP/b@R"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadTargets(writeTargets(t, tc.body))
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

func TestReadTargetsErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"too many fields", "host/a@R,/k/a.kt\nhost/b@R,/k/b.kt,svc,extra\n", "line 2: want principal,keytab[,service], got 4 fields"},
		{"one field", "host/a@R\n", "line 1: want principal,keytab[,service], got 1 fields"},
		{"empty keytab", "host/a@R,\n", "line 1: principal host/a@R: empty keytab path"},
		{"bad json", "{\"principal\":\"a\",\"keytab\":\"k\"}\n{\"principal\":\n", "line 2: not valid JSON"},
		{"unknown json field", "{\"principal\":\"a\",\"keytab\":\"k\",\"kvno\":3}\n", `line 1: unknown field "kvno"`},
		{"empty", "\n# nothing\n", "no targets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTargets(t, tc.body)
			_, err := ReadTargets(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "--targets "+p+": ") {
				t.Fatalf("error %v, want --targets %s: …%s", err, p, tc.want)
			}
		})
	}
	if _, err := ReadTargets("/nonexistent/targets.csv"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}
