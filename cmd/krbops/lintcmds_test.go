package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/krbops/krbops/internal/lab"
)

// Testscript commands for the klist-lint scripts. Fixtures are made in the
// scripts themselves with the real MIT tools of the lab realm, so each
// script shows how its keytab or cache came to be.

// labCmds returns the commands bound to realm r:
//
//	lab-kadmin QUERY...            one kadmin.local query (addprinc, cpw, ktadd ...)
//	lab-kadmin-repeat N QUERY...   the query N times in one kadmin.local session
//	lab-tool [-stdin FILE] [-env K=V]... NAME ARGS...
//	                               an MIT tool (kinit, ktutil, klist) with the
//	                               realm's environment (plus -env), in $WORK
func labCmds(r *lab.Realm) map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 30*time.Second)
	}
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"lab-kadmin": func(ts *testscript.TestScript, neg bool, args []string) {
			if len(args) == 0 || neg {
				ts.Fatalf("usage: lab-kadmin QUERY...")
			}
			c, cancel := ctx()
			defer cancel()
			out, err := r.Kadmin(c, strings.Join(args, " "))
			ts.Logf("%s", out)
			ts.Check(err)
		},
		"lab-kadmin-repeat": func(ts *testscript.TestScript, neg bool, args []string) {
			n, err := strconv.Atoi(firstOr(args, ""))
			if len(args) < 2 || err != nil || neg {
				ts.Fatalf("usage: lab-kadmin-repeat N QUERY...")
			}
			c, cancel := ctx()
			defer cancel()
			q := make([]string, n)
			for i := range q {
				q[i] = strings.Join(args[1:], " ")
			}
			if err := r.KadminBatch(c, q); err != nil {
				ts.Fatalf("%v", err)
			}
		},
		"lab-tool": func(ts *testscript.TestScript, neg bool, args []string) {
			stdin := ""
			var env []string
			for len(args) > 2 && (args[0] == "-stdin" || args[0] == "-env") {
				if args[0] == "-stdin" {
					stdin = ts.ReadFile(args[1])
				} else {
					env = append(env, args[1])
				}
				args = args[2:]
			}
			if len(args) == 0 {
				ts.Fatalf("usage: lab-tool [-stdin FILE] [-env K=V]... NAME ARGS...")
			}
			c, cancel := ctx()
			defer cancel()
			cmd := r.Command(c, args[0], args[1:]...)
			cmd.Dir = ts.Getenv("WORK")
			cmd.Env = append(cmd.Env, env...) // later entries win
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			ts.Logf("%s", out)
			if (err != nil) != neg {
				ts.Fatalf("%s: %v", args[0], err)
			}
		},
	}
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// cmdGenCorrupt writes N damaged keytabs into DIR, from the real keytab
// SRC: half are SRC cut inside an entry (never at an entry boundary, where
// the rest would be a valid shorter keytab), half are the keytab header
// followed by random bytes. The seed is fixed, so every run sees the same
// files.
//
//	gen-corrupt SRC DIR N
func cmdGenCorrupt(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || neg {
		ts.Fatalf("usage: gen-corrupt SRC DIR N")
	}
	src := []byte(ts.ReadFile(args[0]))
	dir := ts.MkAbs(args[1])
	n, err := strconv.Atoi(args[2])
	ts.Check(err)
	ts.Check(os.MkdirAll(dir, 0o755))
	boundary := map[int]bool{}
	for off := 2; off+4 <= len(src); {
		boundary[off] = true
		off += 4 + int(int32(binary.BigEndian.Uint32(src[off:])))
	}
	boundary[len(src)] = true
	var cuts []int
	for c := 3; c < len(src); c++ {
		if !boundary[c] {
			cuts = append(cuts, c)
		}
	}
	rng := rand.New(rand.NewPCG(3, 7))
	for i := range n {
		var data []byte
		if i%2 == 0 {
			data = src[:cuts[rng.IntN(len(cuts))]]
		} else {
			data = make([]byte, 2+rng.IntN(600))
			data[0], data[1] = 0x05, 0x02
			for j := 2; j < len(data); j++ {
				data[j] = byte(rng.Uint32())
			}
		}
		ts.Check(os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), data, 0o600))
	}
}

// cmdFindings counts the findings of a krbops JSON report:
//
//	findings FILE count N [KEY=VALUE...]   N findings match every filter
//	findings FILE files N [KEY=VALUE...]   they name N distinct files
//
// Filters compare a finding's top-level field (rule, severity, file,
// principal) with VALUE.
func cmdFindings(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 3 || (args[1] != "count" && args[1] != "files") {
		ts.Fatalf("usage: findings FILE (count|files) N [KEY=VALUE...]")
	}
	var doc struct {
		Findings []map[string]any `json:"findings"`
	}
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("%s is not JSON: %v", args[0], err)
	}
	matched, files := 0, map[string]bool{}
	for _, f := range doc.Findings {
		ok := true
		for _, kv := range args[3:] {
			k, v, _ := strings.Cut(kv, "=")
			ok = ok && fmt.Sprint(f[k]) == v
		}
		if ok {
			matched++
			files[fmt.Sprint(f["file"])] = true
		}
	}
	got := matched
	if args[1] == "files" {
		got = len(files)
	}
	if (strconv.Itoa(got) == args[2]) == neg {
		ts.Fatalf("findings %s %s: got %d, want %s", args[1], strings.Join(args[3:], " "), got, args[2])
	}
}

// cmdTruncate cuts FILE to N bytes: a cache or keytab cut short by a full
// disk or a killed writer.
//
//	truncate FILE N
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: truncate FILE N")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	ts.Check(os.Truncate(ts.MkAbs(args[0]), n))
}
