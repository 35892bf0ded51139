package output

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/krbops/krbops/runbook"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from current output")

// fixtureReport has one step of every status, evidence of every kind
// renderers must handle, a grouped step, and hints full of characters that
// break naive formats (|, <, &, backtick, tab, newline, ESC).
func fixtureReport() *runbook.Report {
	cet := time.FixedZone("CET", 3600)
	started := time.Date(2025, 3, 4, 5, 6, 7, 123456789, cet) // 04:06:07Z
	return &runbook.Report{
		Schema:        runbook.Schema,
		Command:       "clock",
		CorrelationID: "c0ffee-1234",
		StartedAt:     started,
		Duration:      7*time.Second + 512345*time.Microsecond,
		Steps: []runbook.StepResult{
			{
				ID: "config.load", Title: "load krb5.conf",
				Result: runbook.Result{
					Status:  runbook.Pass,
					Message: "loaded /etc/krb5.conf",
					Evidence: runbook.Evidence{
						"path":        "/etc/krb5.conf",
						"realms":      []string{"EXAMPLE.COM", "CORP.EXAMPLE.COM"},
						"realm_count": 2,
					},
				},
				Duration: 12345 * time.Microsecond,
			},
			{
				ID: "clock.kdc-offset", Title: "KDC clock offset", Group: "kdc1.example.com",
				Result: runbook.Result{
					Status:  runbook.Warn,
					Message: "offset 4.25s is above the 2s warning threshold",
					Hint:    "check chronyd | ntpd on <kdc> & this host",
					Evidence: runbook.Evidence{
						"offset_seconds": 4.25,
						"checked_at":     time.Date(2025, 3, 4, 5, 6, 8, 0, cet),
						"kdc":            "kdc1.example.com:88",
					},
				},
				Duration: 250 * time.Millisecond,
			},
			{
				ID: "keytab.kvno", Title: "keytab kvno matches KDC",
				Result: runbook.Result{
					Status:  runbook.Fail,
					Message: "kvno 3 in keytab, KDC has 4",
					Hint:    "re-export the keytab:\tktutil `wkt`\nthen restart sshd * now",
					Evidence: runbook.Evidence{
						"keytab_kvno": 3,
						"kdc_kvno":    4,
						"principal":   "host/web1.example.com@EXAMPLE.COM",
						"expires_at":  time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC),
						"lifetime":    10 * time.Hour,
						"note":        "a|b <c> & `d`",
					},
				},
				Duration: 1234567 * time.Microsecond,
			},
			{
				ID: "dns.srv", Title: "KDC SRV records",
				Result: runbook.Result{
					Status:  runbook.Error,
					Message: "lookup _kerberos._udp.EXAMPLE.COM: i/o timeout\x1b[31m",
					Hint:    "check the nameserver lines in /etc/resolv.conf",
				},
				Duration: 5 * time.Second,
			},
			{
				ID: "tgt.acquire", Title: "acquire a TGT",
				Result: runbook.Result{
					Status:  runbook.Skip,
					Message: "skipped: needs keytab.kvno (fail)",
				},
				Duration: 0,
			},
		},
		Summary:  runbook.Summary{Pass: 1, Warn: 1, Fail: 1, Skip: 1, Error: 1},
		Status:   "fail",
		ExitCode: 1,
	}
}

func render(t *testing.T, name string, rep *runbook.Report, opts Options) []byte {
	t.Helper()
	r, err := Get(name)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.Render(&buf, rep, opts); err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	return buf.Bytes()
}

func checkGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./output -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden (go test ./output -update to accept)\n--- got ---\n%s\n--- want ---\n%s", file, got, want)
	}
}

func TestGolden(t *testing.T) {
	cases := []struct {
		file, format string
		opts         Options
	}{
		{"table.golden", "table", Options{}},
		{"table_color.golden", "table", Options{Color: true}},
		{"table_width100.golden", "table", Options{Width: 100}},
		{"plain.golden", "plain", Options{}},
		{"json.golden", "json", Options{}},
		{"junit.golden", "junit", Options{}},
		{"markdown.golden", "markdown", Options{}},
		{"prometheus.golden", "prometheus", Options{}},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.format] = true
		t.Run(c.file, func(t *testing.T) {
			checkGolden(t, c.file, render(t, c.format, fixtureReport(), c.opts))
		})
	}
	// The lint fixture adds findings and metrics, which every format shows.
	for _, c := range cases {
		if c.opts.Color {
			continue
		}
		file := strings.TrimSuffix(c.file, ".golden") + "_lint.golden"
		t.Run(file, func(t *testing.T) {
			checkGolden(t, file, render(t, c.format, lintFixtureReport(), c.opts))
		})
	}
	for _, name := range Names() {
		if !covered[name] {
			t.Errorf("format %q has no golden test", name)
		}
	}
}

// Machine formats must not change with terminal settings, or a script's
// output would depend on where it ran.
func TestMachineFormatsIgnoreOptions(t *testing.T) {
	for _, name := range []string{"plain", "json", "junit", "markdown", "prometheus"} {
		a := render(t, name, lintFixtureReport(), Options{})
		b := render(t, name, lintFixtureReport(), Options{Color: true, Width: 20})
		if !bytes.Equal(a, b) {
			t.Errorf("%s output changes with Options", name)
		}
	}
}

func TestNoEscapesWithoutColor(t *testing.T) {
	for _, name := range Names() {
		out := render(t, name, fixtureReport(), Options{})
		if bytes.IndexByte(out, 0x1b) >= 0 {
			t.Errorf("%s output contains an ESC byte with color off", name)
		}
	}
	if out := render(t, "table", fixtureReport(), Options{Color: true}); bytes.IndexByte(out, 0x1b) < 0 {
		t.Error("table with Color: true has no ANSI escapes")
	}
}

func TestNilReport(t *testing.T) {
	for _, name := range Names() {
		r, _ := Get(name)
		if err := r.Render(&bytes.Buffer{}, nil, Options{}); err == nil {
			t.Errorf("%s: nil report rendered without error", name)
		}
	}
}

func TestEmptyReport(t *testing.T) {
	rep := &runbook.Report{Command: "clock", Status: "pass"}
	for _, name := range Names() {
		if out := render(t, name, rep, Options{}); len(out) == 0 {
			t.Errorf("%s: empty report rendered nothing", name)
		}
	}
}

func TestRegistry(t *testing.T) {
	want := []string{"json", "junit", "markdown", "plain", "prometheus", "table"}
	if got := Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	_, err := Get("xml")
	if err == nil {
		t.Fatal("Get(xml) succeeded")
	}
	if !strings.Contains(err.Error(), "json, junit, markdown, plain, prometheus, table") {
		t.Errorf("error does not list valid formats: %v", err)
	}
	for _, bad := range []struct {
		name string
		r    Renderer
	}{{"", RendererFunc(renderPlain)}, {"x-nil", nil}, {"plain", RendererFunc(renderPlain)}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", bad.name)
				}
			}()
			Register(bad.name, bad.r)
		}()
	}
}

func TestDefaultFormat(t *testing.T) {
	if got := DefaultFormat(true); got != "table" {
		t.Errorf("DefaultFormat(true) = %q", got)
	}
	if got := DefaultFormat(false); got != "plain" {
		t.Errorf("DefaultFormat(false) = %q", got)
	}
	for _, f := range []string{DefaultFormat(true), DefaultFormat(false)} {
		if _, err := Get(f); err != nil {
			t.Errorf("default format %q is not registered", f)
		}
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is a terminal")
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                         "0s",
		400 * time.Microsecond:    "<1ms",
		12345 * time.Microsecond:  "12ms",
		999600 * time.Microsecond: "1.0s",
		4250 * time.Millisecond:   "4.2s",
		59960 * time.Millisecond:  "1m0s",
		65 * time.Second:          "1m5s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTableFitsWidth(t *testing.T) {
	ungrouped := fixtureReport()
	for i := range ungrouped.Steps {
		ungrouped.Steps[i].Group = ""
	}
	for _, width := range []int{72, 90, 100, 140} {
		for _, rep := range []*runbook.Report{fixtureReport(), ungrouped} {
			out := render(t, "table", rep, Options{Width: width, Color: true})
			if width < 90 && rep != ungrouped {
				continue // grouped fixture cannot fit: message keeps its minimum width
			}
			for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
				if w := lipgloss.Width(line); w > width {
					t.Errorf("width %d: line is %d wide: %q", width, w, line)
				}
			}
		}
	}
}
