package commands

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krbops/krbops/internal/fault"
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
	garbage := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct{ name, body, want string }{
		{"too many fields", "host/a@R,/k/a.kt\nhost/b@R,/k/b.kt,svc,extra\n", "line 2: want principal,keytab[,service], got 4 fields"},
		{"one field", "host/a@R\n", "line 1: want principal,keytab[,service], got 1 fields"},
		{"empty keytab", "host/a@R,\n", `line 1: principal "host/a@R": empty keytab path`},
		{"bad json", "{\"principal\":\"a\",\"keytab\":\"k\"}\n{\"principal\":\n", "line 2: not valid JSON"},
		{"two json objects on a line", "{\"principal\":\"a\",\"keytab\":\"k\"} {\"principal\":\"b\",\"keytab\":\"k\"}\n", "line 1: more than one JSON object"},
		{"unknown json field", "{\"principal\":\"a\",\"keytab\":\"k\",\"kvno\":3}\n", `line 1: unknown field "kvno"`},
		{"empty", "\n# nothing\n", "no targets"},
		// A stray quote used to panic: FieldPos was called on the
		// failed record.
		{"stray quote", "host/a@R,/k/a.kt\nhost/b@R,/k/\"b.kt\n", `line 2, column 13: bare " in non-quoted-field`},
		{"quote left open", "host/a@R,\"/k/a.kt\nhost/b@R,/k/b.kt\n", "(in the record that starts on line 1: a quote left open?)"},
		{"quote then text", "host/a@R,\"/k/a\"x.kt\n", `line 1, column 15: extraneous or missing " in quoted-field`},
		{"NUL byte csv", "host/a@R,/k/a.kt\nhost/b@R,/k/\x00b.kt\n", "line 2: NUL byte at column 13: a binary file, not a targets file"},
		{"NUL byte json", "{\"principal\":\"a\x00\",\"keytab\":\"k\"}\n", "line 1: NUL byte at column 16"},
		{"control character", "host/a\x1b[31m@R,/k/a.kt\n", `line 1: principal "host/a\x1b[31m@R" has control character 0x1b at byte 7`},
		{"control character in path", "host/a@R,/k/a\x07.kt\n", `keytab path "/k/a\a.kt" has control character 0x07`},
		{"invalid utf-8 principal", "host/\xff@R,/k/a.kt\n", `principal "host/\xff@R" is not valid UTF-8`},
		{"huge line csv", "host/a@R,/k/a.kt\nhost/b@R," + strings.Repeat("x", 70<<10) + "\n", "line 2: longer than 64 KiB: not a targets file"},
		{"huge line json", "{\"principal\":\"" + strings.Repeat("x", 70<<10) + "\"}", "line 1: longer than 64 KiB"},
		{"no newline at all", strings.Repeat("a,", 40<<10), "line 1: longer than 64 KiB"},
		{"binary garbage", string(garbage), "line "},
		{"json garbage", "{" + string(garbage), "line "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTargets(t, tc.body)
			_, err := ReadTargets(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "--targets "+p+": ") {
				t.Fatalf("error %v, want --targets %s: …%s", err, p, tc.want)
			}
			if fault.ClassOf(err) != fault.Usage || fault.HintOf(err) == "" {
				t.Errorf("class %s, hint %q: want a usage error with a hint", fault.ClassOf(err), fault.HintOf(err))
			}
		})
	}
	if _, err := ReadTargets("/nonexistent/targets.csv"); err == nil || !strings.Contains(err.Error(), "no such file") || fault.ClassOf(err) != fault.Usage {
		t.Fatalf("missing file: %v", err)
	}
}

// A file over the cap is refused from its size, before it is read.
func TestReadTargetsSizeCap(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.csv")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxTargetsFile + 1); err != nil { // sparse: no 64 MiB written
		t.Fatal(err)
	}
	f.Close()
	_, err = ReadTargets(p)
	if err == nil || err.Error() != "--targets "+p+": larger than the 64 MiB limit" {
		t.Fatalf("error %v", err)
	}
	if fault.ClassOf(err) != fault.Usage || !strings.Contains(fault.HintOf(err), "split the fleet") {
		t.Errorf("class %s, hint %q", fault.ClassOf(err), fault.HintOf(err))
	}
}
