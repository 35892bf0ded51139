package rotate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fakekdc"
	"github.com/krbops/krbops/kdcops"
)

// finish.keytab takes the keytab's lock, the one keytab pull and prune
// hold from their read to their rename, so neither rewrites the file from
// a read older than the published kvno. A cancelled run (SIGINT) does not
// wait for the lock: it tries once.
func TestPublishTakesTheKeytabLock(t *testing.T) {
	k := fakekdc.New("R")
	if err := k.Put(fakekdc.Principal{Name: "svc", Password: "pw", KVNO: 2}); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, kvno uint32) []byte {
		ents, err := kdcops.DeriveKeytab("R", []string{name}, k.KDCKeys(name), "pw", kvno, time.Unix(1e9, 0))
		if err != nil {
			t.Fatal(err)
		}
		b, err := kdcops.MarshalKeytab(ents)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	path := filepath.Join(t.TempDir(), "svc.keytab")
	old := mk("svc", 2)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	unlock, err := durable.Lock(context.Background(), durable.LockPath(path), "krbops keytab pull", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish(cancelled, path, "svc@R", mk("svc", 3), path+".bak", "", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("publish with the lock held: %v, want it to wait (cancelled)", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, old) {
		t.Error("publish wrote the keytab while another krbops held its lock")
	}
	unlock()
	if _, err := publish(cancelled, path, "svc@R", mk("svc", 3), path+".bak", "", nil); err != nil {
		t.Fatalf("publish with the lock free: %v", err)
	}
	kt, err := kdcops.ReadKeytabFile(path, kdcops.KeytabOptions{})
	if got := kdcops.KVNOs(kt.Entries); err != nil || len(got) != 1 || got[0] != 3 {
		t.Errorf("published kvnos %v %v, want [3]", got, err)
	}
}
