// Package benchlab is the lab the rotation benchmarks share: one MIT
// realm, principals created in one kadmin.local batch with a keytab each,
// the files krbops rotate needs, and the `k5srvutil change` loop every
// rotation benchmark measures krbops against.
package benchlab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/krbops/krbops/internal/lab"
)

// Lab is a started realm and the state directory of a benchmark; cluster
// "bench" is allowlisted.
type Lab struct {
	R                                  *lab.Realm
	Dir, Allow, Store, Ledger, Journal string
}

// Start starts the realm; Close stops it.
func Start(ctx context.Context) (*Lab, error) {
	if miss := lab.Missing(); len(miss) > 0 {
		return nil, fmt.Errorf("missing %v: %s", miss, lab.InstallCommand)
	}
	r, err := lab.Start(ctx, lab.Options{})
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.Dir, "bench")
	l := &Lab{R: r, Dir: dir, Allow: filepath.Join(dir, "allow.txt"), Store: "file://" + filepath.Join(dir, "store"),
		Ledger: filepath.Join(dir, "ledger.db"), Journal: filepath.Join(dir, "journal")}
	for _, d := range []string{dir, filepath.Join(dir, "store")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			r.Close()
			return nil, err
		}
	}
	if err := os.WriteFile(l.Allow, []byte("bench\n"), 0o644); err != nil {
		r.Close()
		return nil, err
	}
	return l, nil
}

// Close stops the realm.
func (l *Lab) Close() { l.R.Close() }

// Principal is the i-th principal of tool.
func (l *Lab) Principal(tool string, i int) string {
	return fmt.Sprintf("%s%d/bench.krbops.test", tool, i)
}

// Keytab is the keytab file of the i-th principal of tool.
func (l *Lab) Keytab(tool string, i int) string {
	return filepath.Join(l.Dir, fmt.Sprintf("%s%d.keytab", tool, i))
}

// Create makes n principals per tool with random keys, each exported to
// its own keytab, in one kadmin.local process: one per principal would
// dominate the set-up time.
func (l *Lab) Create(ctx context.Context, n int, tools ...string) error {
	var q []string
	for _, tool := range tools {
		for i := range n {
			q = append(q, "addprinc -randkey "+l.Principal(tool, i), "ktadd -k "+l.Keytab(tool, i)+" "+l.Principal(tool, i))
		}
	}
	return l.R.KadminBatch(ctx, q)
}

// K5srvutilLoop changes the keys of n principals of tool one after another
// with MIT's k5srvutil change (kadmin -k -t KEYTAB "ktadd -k KEYTAB PRINC":
// the principal changing its own key) and returns the time it took.
func (l *Lab) K5srvutilLoop(ctx context.Context, tool string, n int) (time.Duration, error) {
	begin := time.Now()
	for i := range n {
		c := l.R.Command(ctx, "k5srvutil", "-f", l.Keytab(tool, i), "change")
		if out, err := c.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("k5srvutil change %d: %v\n%s", i, err, out)
		}
	}
	return time.Since(begin), nil
}
