// Package packaging holds what the release packages install besides the
// binary (systemd units, an example config); its test checks them against
// goreleaser.yaml and the command tree, as part of make man-check.
package packaging

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/krbops/krbops/commands"
)

type nfpmContent struct {
	Src      string `yaml:"src"`
	Dst      string `yaml:"dst"`
	Type     string `yaml:"type"`
	Packager string `yaml:"packager"` // empty: both
}

type goreleaser struct {
	Before struct {
		Hooks []any `yaml:"hooks"`
	} `yaml:"before"`
	NFPMs []struct {
		Formats  []string      `yaml:"formats"`
		Contents []nfpmContent `yaml:"contents"`
	} `yaml:"nfpms"`
}

// TestPackageContents: every file the .deb and .rpm take exists once
// gendocs has run (the before hook), and the packages carry the units,
// man pages and completions.
func TestPackageContents(t *testing.T) {
	raw, err := os.ReadFile("../goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var g goreleaser
	if err := yaml.Unmarshal(raw, &g); err != nil {
		t.Fatalf("goreleaser.yaml: %v", err)
	}
	if len(g.NFPMs) != 1 || strings.Join(g.NFPMs[0].Formats, ",") != "deb,rpm" {
		t.Fatalf("nfpms: want one entry building deb and rpm, got %+v", g.NFPMs)
	}
	if !strings.Contains(string(raw), "go run ./internal/gendocs -out build/docs") {
		t.Error("the before hooks do not generate build/docs")
	}
	// The hook's output, generated here as goreleaser would.
	root := t.TempDir()
	for _, d := range []string{"packaging", "docs"} {
		if err := os.Symlink(filepath.Join(mustAbs(t, ".."), d), filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	gen := exec.Command("go", "run", "./internal/gendocs", "-out", filepath.Join(root, "build", "docs"))
	gen.Dir = ".."
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("gendocs: %v\n%s", err, out)
	}
	dsts := map[string][]string{} // packager -> destinations
	for _, c := range g.NFPMs[0].Contents {
		for _, pk := range []string{"deb", "rpm"} {
			if c.Packager == "" || c.Packager == pk {
				dsts[pk] = append(dsts[pk], c.Dst)
			}
		}
		if c.Type == "dir" {
			continue
		}
		matches, err := filepath.Glob(filepath.Join(root, c.Src))
		if err != nil || len(matches) == 0 {
			t.Errorf("nfpms src %s matches no file", c.Src)
		}
	}
	common := []string{"/usr/share/man/man1/", "/usr/share/bash-completion/completions/krbops",
		"/usr/share/fish/vendor_completions.d/krbops.fish", "/usr/lib/systemd/system/krbops-keytab-pull@.service", "/usr/lib/systemd/system/krbops-keytab-pull@.timer"}
	for pk, zsh := range map[string]string{"deb": "/usr/share/zsh/vendor-completions/_krbops", "rpm": "/usr/share/zsh/site-functions/_krbops"} {
		all := strings.Join(dsts[pk], "\n")
		for _, want := range append(common, zsh) {
			if !strings.Contains(all, want) {
				t.Errorf("the %s package does not install %s", pk, want)
			}
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var envLine = regexp.MustCompile(`(?m)^([A-Z_]+)=(.*)$`)

// TestKeytabPullUnits: the timer fires every 30 s; the service runs
// keytab pull with flags the command has, from the instance's env file;
// the example env file's flags exist too; systemd accepts both units.
func TestKeytabPullUnits(t *testing.T) {
	service := readFile(t, "systemd/krbops-keytab-pull@.service")
	timer := readFile(t, "systemd/krbops-keytab-pull@.timer")
	example := readFile(t, "systemd/keytab-pull.env.example")

	if !regexp.MustCompile(`(?m)^OnUnitActiveSec=30s$`).MatchString(timer) || !strings.Contains(timer, "Unit=krbops-keytab-pull@%i.service") {
		t.Errorf("timer does not start the instance's service every 30 s:\n%s", timer)
	}
	if !strings.Contains(service, "EnvironmentFile=/etc/krbops/keytab-pull/%i.env") {
		t.Error("service does not read the instance's env file")
	}
	exec1 := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(service)
	if exec1 == nil {
		t.Fatal("service has no ExecStart")
	}
	vars := map[string]string{}
	for _, m := range envLine.FindAllStringSubmatch(example, -1) {
		vars[m[1]] = m[2]
	}
	// Expand as systemd would: ${X} one word, $X split on spaces.
	var argv []string
	for _, w := range strings.Fields(exec1[1]) {
		switch {
		case strings.HasPrefix(w, "${"):
			argv = append(argv, vars[strings.Trim(w, "${}")])
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(vars[w[1:]])...)
		default:
			argv = append(argv, w)
		}
	}
	if len(argv) < 3 || argv[0] != "/usr/bin/krbops" || argv[1] != "keytab" || argv[2] != "pull" {
		t.Fatalf("ExecStart runs %v, want /usr/bin/krbops keytab pull ...", argv)
	}
	cmd := commands.NewRootCmd(&commands.IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}, Getenv: func(string) string { return "" }}, commands.BuildInfo{})
	pull, _, err := cmd.Find([]string{"keytab", "pull"})
	if err != nil {
		t.Fatal(err)
	}
	// The example's owner may not exist on this machine: parse the flags
	// only, as pflag does before the command validates them.
	if err := pull.ParseFlags(argv[3:]); err != nil {
		t.Errorf("keytab pull does not take the unit's arguments %v: %v", argv[3:], err)
	}
	for _, f := range []string{"secret-store", "secret", "keytab"} {
		if v, _ := pull.Flags().GetString(f); v == "" {
			t.Errorf("the unit leaves --%s empty", f)
		}
	}

	sa, err := exec.LookPath("systemd-analyze")
	if errors.Is(err, exec.ErrNotFound) {
		t.Log("systemd-analyze not installed: units not verified by systemd")
		return
	}
	// systemd-analyze verify checks ExecStart's binary exists: point it at
	// a stand-in in a copy of the units.
	dir := t.TempDir()
	bin := filepath.Join(dir, "krbops")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	svc := filepath.Join(dir, "krbops-keytab-pull@check.service")
	tmr := filepath.Join(dir, "krbops-keytab-pull@check.timer")
	os.WriteFile(svc, []byte(strings.ReplaceAll(service, "/usr/bin/krbops", bin)), 0o644)
	os.WriteFile(tmr, []byte(timer), 0o644)
	out, err := exec.Command(sa, "verify", "--man=no", tmr, svc).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
