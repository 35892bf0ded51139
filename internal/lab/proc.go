package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/krbops/krbops/internal/spawn"
)

// InstallCommand installs every binary the lab needs on Debian and Ubuntu.
const InstallCommand = "apt-get install -y krb5-kdc krb5-admin-server krb5-user faketime"

var requiredBins = []string{"krb5kdc", "kadmind", "kdb5_util", "kadmin.local", "kinit", "klist", "kvno", "kadmin"}

// sbinDirs are searched after $PATH: non-root PATHs often lack the sbin
// directories where krb5kdc, kadmind and kdb5_util live.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"}

// lookBin finds an MIT tool by name.
func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("lab: %s not found (install: %s)", name, InstallCommand)
}

// LibFaketime returns the path of libfaketime.so.1, or "" when it is not
// installed. $KRBOPS_LIBFAKETIME overrides the search.
func LibFaketime() string {
	if p := os.Getenv("KRBOPS_LIBFAKETIME"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return ""
		}
		return p
	}
	cands := []string{
		"/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
		"/usr/lib/faketime/libfaketime.so.1",
		"/usr/lib64/faketime/libfaketime.so.1",
		"/usr/local/lib/faketime/libfaketime.so.1",
	}
	if m, _ := filepath.Glob("/usr/lib/*/faketime/libfaketime.so.1"); len(m) > 0 {
		cands = append(cands, m...)
	}
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}

// Missing reports which of the lab's required programs are not installed
// (the MIT KDC, admin server and client tools, and libfaketime). Print
// InstallCommand when it is not empty.
func Missing() []string {
	var miss []string
	for _, b := range requiredBins {
		if _, err := lookBin(b); err != nil {
			miss = append(miss, b)
		}
	}
	if LibFaketime() == "" {
		miss = append(miss, "libfaketime.so.1")
	}
	return miss
}

// labEnv returns the environment for every MIT tool the lab runs: the
// caller's environment without any Kerberos settings, plus extra, so the
// host's /etc/krb5.conf, /etc/krb5kdc and default keytab are never used.
func labEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "KRB5"), k == "KPROP_PORT",
			k == "LD_PRELOAD", strings.HasPrefix(k, "FAKETIME"), k == "DONT_FAKE_MONOTONIC":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runTool runs a short-lived MIT tool to completion. stdin may be nil. The
// tool is killed (with its process group) when ctx ends.
func runTool(ctx context.Context, env []string, dir string, stdin string, name string, args ...string) (stdout, stderr string, err error) {
	bin, err := lookBin(name)
	if err != nil {
		return "", "", err
	}
	return runPath(ctx, env, dir, stdin, bin, name, args...)
}

// runPath is runTool for the program at bin, named name in errors.
func runPath(ctx context.Context, env []string, dir string, stdin string, bin, name string, args ...string) (stdout, stderr string, err error) {
	cmd := spawn.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = dir
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout = &o
	cmd.Stderr = &e
	err = spawn.StartCmd(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		err = fmt.Errorf("lab: %s %s: %w: %s", name, strings.Join(redactArgs(args), " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), e.String(), err
}

// redactArgs hides the value after -P/-pw in error messages.
func redactArgs(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-P" || out[i] == "-pw" {
			out[i+1] = "<redacted>"
		}
	}
	return out
}
