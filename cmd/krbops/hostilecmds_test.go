package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// Testscript commands for hostile_input.txtar.

// cmdGenKeytab writes a version 2 keytab with one AES-256 entry (a fixed
// key: no KDC will accept it) for a principal that MIT's tools will not
// create, such as one with control characters. PRINCIPAL is Go-unquoted
// first, so "svc/a\x1b[31mb" holds a real ESC byte.
//
//	gen-keytab FILE 'PRINCIPAL' REALM
func cmdGenKeytab(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || neg {
		ts.Fatalf("usage: gen-keytab FILE PRINCIPAL REALM")
	}
	name, err := strconv.Unquote(`"` + args[1] + `"`)
	ts.Check(err)
	comps, realm := strings.Split(name, "/"), args[2]
	be := binary.BigEndian
	str := func(b []byte, s string) []byte { return append(be.AppendUint16(b, uint16(len(s))), s...) }
	var e []byte
	e = be.AppendUint16(e, uint16(len(comps)))
	e = str(e, realm)
	for _, c := range comps {
		e = str(e, c)
	}
	e = be.AppendUint32(e, 1)          // KRB5_NT_PRINCIPAL
	e = be.AppendUint32(e, 1767225600) // 2026-01-01
	e = append(e, 2)                   // kvno
	e = be.AppendUint16(e, 18)         // aes256-cts-hmac-sha1-96
	e = str(e, strings.Repeat("k", 32))
	e = be.AppendUint32(e, 2)
	kt := be.AppendUint32([]byte{0x05, 0x02}, uint32(len(e)))
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), append(kt, e...), 0o600))
}

// cmdHintScript turns the kadmin command at the end of a report's hint
// into a shell script that runs it against the lab realm's database with
// kadmin.local, so a script can prove that the hint, pasted into a shell,
// names exactly the principal it is about and runs nothing else:
//
//	hint-script REPORT.json STEP-ID OUT.sh
//
// The script writes kadmin.local's output to OUT.sh.out.
func cmdHintScript(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || neg {
		ts.Fatalf("usage: hint-script REPORT.json STEP-ID OUT.sh")
	}
	var rep struct {
		Steps []struct{ ID, Hint string } `json:"steps"`
	}
	ts.Check(json.Unmarshal([]byte(ts.ReadFile(args[0])), &rep))
	for _, s := range rep.Steps {
		if s.ID != args[1] {
			continue
		}
		i := strings.Index(s.Hint, "kadmin -q ")
		if i < 0 {
			ts.Fatalf("hint of %s has no kadmin command: %q", s.ID, s.Hint)
		}
		cmd := strings.Replace(s.Hint[i:], "kadmin -q ", `kadmin.local -r "$LAB_REALM" -q `, 1)
		script := cmd + " >" + args[2] + ".out 2>&1\n"
		ts.Logf("hint script: %s", script)
		ts.Check(os.WriteFile(ts.MkAbs(args[2]), []byte(script), 0o700))
		return
	}
	ts.Fatalf("no step %s in %s", args[1], args[0])
}
