package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/krbops/krbops/commands"
	"github.com/krbops/krbops/internal/lab"
)

// TestMain lets testscript run this test binary as the real krbops: the
// same run() that main calls, in its own process.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"krbops": func() { os.Exit(run(os.Args[1:], commands.System())) },
		// krbops-exit runs krbops and then prints its exact exit status to
		// stderr and succeeds, so scripts can assert "exit status 3"
		// rather than just "failed".
		"krbops-exit": func() {
			code := run(os.Args[1:], commands.System())
			fmt.Fprintf(os.Stderr, "exit status %d\n", code)
			os.Exit(0)
		},
	})
}

// TestScript runs testdata/script/*.txtar against one lab realm with a
// normal KDC, a KDC 420 s ahead (libfaketime), a refused address, and a
// silent one of each script's own.
func TestScript(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	skewed, err := r.StartKDC(ctx, lab.KDCOptions{FakeTime: "+420s"})
	if err != nil {
		t.Fatalf("start skewed KDC: %v", err)
	}
	if err := r.AddPrincipal(ctx, "host/e2e.krbops.test", ""); err != nil {
		t.Fatal(err)
	}
	down := r.DownAddr()
	normal := r.KDCs[0].Addr

	confs := map[string][]string{
		"normal.conf":    {normal},
		"skewed.conf":    {skewed.Addr},
		"downfirst.conf": {down, normal},
		"alldown.conf":   {down},
		"both.conf":      {normal, skewed.Addr},
	}
	confDir := t.TempDir()
	for name, kdcs := range confs {
		if err := r.WriteKrb5Conf(filepath.Join(confDir, name), kdcs...); err != nil {
			t.Fatal(err)
		}
	}

	ql := newQueryLab(r)
	t.Cleanup(ql.close)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			if err := ql.setup(env); err != nil {
				return err
			}
			env.Setenv("LAB_REALM", r.Name)
			env.Setenv("LAB_KDC", normal)
			env.Setenv("LAB_SKEWED_KDC", skewed.Addr)
			env.Setenv("LAB_DOWN_KDC", down)
			silent, err := newSilentKDC()
			if err != nil {
				return err
			}
			env.Defer(silent.close)
			env.Values[silentKDCKey{}] = silent
			env.Setenv("LAB_SILENT_KDC", silent.addr)
			env.Setenv("LAB_CONF", confDir)
			env.Setenv("LAB_KDC_LOG", r.KDCs[0].Log)
			env.Setenv("KRB5_CONFIG", filepath.Join(confDir, "normal.conf"))
			// A stray ccache of the developer must not pick the principal.
			env.Setenv("KRB5CCNAME", "FILE:"+filepath.Join(env.WorkDir, "no-ccache"))
			for _, k := range []string{"NO_COLOR", "CLICOLOR_FORCE"} {
				env.Setenv(k, "")
			}
			env.Setenv("TERM", "xterm-256color")
			return nil
		},
		Cmds: func() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
			cmds := map[string]func(ts *testscript.TestScript, neg bool, args []string){
				"json":              cmdJSON,
				"junit":             cmdJUnit,
				"await-silent-kdc":  cmdAwaitSilentKDC,
				"await-next-second": cmdAwaitNextSecond,
				"gen-corrupt":       cmdGenCorrupt,
				"findings":          cmdFindings,
				"truncate":          cmdTruncate,
				"tls-proxy":         cmdTLSProxy,
				"gen-keytab":        cmdGenKeytab,
				"hint-script":       cmdHintScript,
				"grep-lines":        cmdGrepLines,
			}
			for name, c := range labCmds(r) {
				cmds[name] = c
			}
			for name, c := range ql.cmds() {
				cmds[name] = c
			}
			return cmds
		}(),
		UpdateScripts: os.Getenv("UPDATE_GOLDEN") == "1",
	})
}

// silentKDC listens on UDP and TCP and never answers: a KDC that hangs,
// unlike DownAddr, which refuses at once. heard is closed when the first
// request reaches it.
type silentKDC struct {
	addr  string
	heard chan struct{}
	once  sync.Once
	ln    net.Listener
	pc    net.PacketConn
	wg    sync.WaitGroup
	mu    sync.Mutex
	held  []net.Conn
}

// silentKDCKey keys a script's silent KDC in testscript's Values.
type silentKDCKey struct{}

func newSilentKDC() (*silentKDC, error) {
	s := &silentKDC{heard: make(chan struct{})}
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil { // that UDP port is taken: another one
			ln.Close()
			continue
		}
		s.ln, s.pc, s.addr = ln, pc, ln.Addr().String()
		break
	}
	if s.ln == nil {
		return nil, errors.New("silent KDC: no port free for both udp and tcp")
	}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.held = append(s.held, c)
			s.mu.Unlock()
			s.once.Do(func() { close(s.heard) })
		}
	})
	s.wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := s.pc.ReadFrom(buf); err != nil {
				return
			}
			s.once.Do(func() { close(s.heard) })
		}
	})
	return s, nil
}

func (s *silentKDC) close() {
	s.ln.Close()
	s.pc.Close()
	s.wg.Wait()
	s.mu.Lock()
	for _, c := range s.held {
		c.Close()
	}
	s.mu.Unlock()
}

// cmdAwaitSilentKDC waits until a request reaches this script's silent KDC
// ($LAB_SILENT_KDC): a krbops started in the background is then running
// (past its signal set-up) and blocked waiting for the reply. Scripts wait
// for that instead of sleeping.
// cmdAwaitNextSecond waits until the clock's second has changed: rotate
// ignores logins in its own first second (MIT logs whole seconds, and its
// own pre-check logins come then), so a login a script wants it to see
// must be a second older. It orders events; it asserts nothing.
func cmdAwaitNextSecond(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 0 || neg {
		ts.Fatalf("usage: await-next-second")
	}
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second).Sub(now))
}

func cmdAwaitSilentKDC(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 0 || neg {
		ts.Fatalf("usage: await-silent-kdc")
	}
	s, ok := ts.Value(silentKDCKey{}).(*silentKDC)
	if !ok {
		ts.Fatalf("no silent KDC in this script's setup")
	}
	select {
	case <-s.heard:
	case <-time.After(time.Minute): // a hang guard, not a timing check
		ts.Fatalf("no request reached the silent KDC %s in a minute", s.addr)
	}
}

// cmdJSON checks one value of a JSON document:
//
//	json FILE PATH == VALUE        string or number equality
//	json FILE PATH within X TOL    |value - X| <= TOL
//	json FILE PATH abs< X          |value| < X
//	json FILE PATH len N           array length
//
// PATH is dotted; numeric parts index arrays; a part "KEY=X" picks the
// first array element whose field KEY is X (e.g. id=clock.verdict,
// rule=ON001).
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 4 {
		ts.Fatalf("usage: json FILE PATH (==|within|abs<|len) VALUE [TOL]")
	}
	var doc any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("%s is not JSON: %v", args[0], err)
	}
	v := doc
	for _, part := range strings.Split(args[1], ".") {
		switch cur := v.(type) {
		case map[string]any:
			v = cur[part]
		case []any:
			if key, want, ok := strings.Cut(part, "="); ok {
				v = nil
				for _, el := range cur {
					if m, ok := el.(map[string]any); ok && m[key] == want {
						v = m
						break
					}
				}
				break
			}
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(cur) {
				ts.Fatalf("%s: no element %q", args[1], part)
			}
			v = cur[i]
		default:
			ts.Fatalf("%s: cannot descend into %v at %q", args[1], v, part)
		}
	}
	num := func(s string) float64 {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			ts.Fatalf("%q is not a number", s)
		}
		return f
	}
	var ok bool
	switch args[2] {
	case "==":
		ok = fmt.Sprint(v) == args[3]
	case "within":
		f, isNum := v.(float64)
		ok = isNum && len(args) == 5 && math.Abs(f-num(args[3])) <= num(args[4])
	case "abs<":
		f, isNum := v.(float64)
		ok = isNum && math.Abs(f) < num(args[3])
	case "len":
		a, isArr := v.([]any)
		ok = isArr && strconv.Itoa(len(a)) == args[3]
	default:
		ts.Fatalf("unknown operator %q", args[2])
	}
	if ok == neg {
		ts.Fatalf("json %s: got %v, want %s %s", args[1], v, args[2], strings.Join(args[3:], " "))
	}
}

// cmdJUnit checks that FILE parses as JUnit XML with N testcases, each with
// a non-empty classname and name.
func cmdJUnit(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: junit FILE TESTCASES")
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Classname string `xml:"classname,attr"`
				Name      string `xml:"name,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("%s is not XML: %v", args[0], err)
	}
	n := 0
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			if c.Classname == "" || c.Name == "" {
				ts.Fatalf("testcase without classname or name: %+v", c)
			}
			n++
		}
	}
	if strconv.Itoa(n) != args[1] {
		ts.Fatalf("got %d testcases, want %s", n, args[1])
	}
}
