package zzscratch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/lab"
)

func run(t *testing.T, r *lab.Realm, stdin string, name string, args ...string) string {
	ctx := context.Background()
	c := r.Command(ctx, name, args...)
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	out, err := c.CombinedOutput()
	t.Logf("%s %v: err=%v\n%s", name, args, err, out)
	return string(out)
}

func TestScratch(t *testing.T) {
	r := lab.ForTest(t, lab.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	p := "svc/a.krbops.test@" + r.Name
	if err := r.AddPrincipal(ctx, p, ""); err != nil {
		t.Fatal(err)
	}
	kt := filepath.Join(dir, "a.keytab")
	if err := r.Keytab(ctx, p, kt); err != nil {
		t.Fatal(err)
	}
	run(t, r, "", "kinit", "-k", "-t", kt, "-l", "10m", "-c", "FILE:"+dir+"/cc", p)
	run(t, r, "", "klist", "-e", "-f", "-c", "FILE:"+dir+"/cc")
	// ktutil
	kt2 := filepath.Join(dir, "k2.keytab")
	run(t, r, "addent -password -p "+p+" -k 1 -e rc4-hmac\nsecretpw\naddent -password -p "+p+" -k 2 -e des3-cbc-sha1\nsecretpw\naddent -password -p "+p+" -k 3 -e aes256-cts-hmac-sha1-96\nsecretpw\nwkt "+kt2+"\nquit\n", "ktutil")
	run(t, r, "", "klist", "-k", "-t", "-e", kt2)
	start := time.Now()
	var b strings.Builder
	for i := 0; i < 256; i++ {
		b.WriteString("cpw -randkey " + p + "\n")
	}
	run(t, r, b.String(), "kadmin.local", "-r", r.Name)
	t.Logf("256 cpw took %v", time.Since(start))
	run(t, r, "", "kadmin.local", "-r", r.Name, "-q", "getprinc "+p)
	kt3 := filepath.Join(dir, "k3.keytab")
	r.Keytab(ctx, p, kt3)
	run(t, r, "", "klist", "-k", "-t", "-e", kt3)
	data, _ := os.ReadFile(kt3)
	t.Logf("%x", data)
}
