package ledger

import (
	"context"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// List by principal finds exactly that principal's records, newest
// first, among names that are prefixes of one another or need JSON
// escaping, and still reports a record that does not parse instead of
// skipping it.
func TestFileListByPrincipal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := open(t, path, nil)
	names := []string{"svc/a@R", "svc/a@R2", "svc/<a>&\"b\"@R", "svc/a@R", "x\\svc/a@R"}
	var ids []string
	for _, n := range names {
		r, err := l.Start(ctx, rot(n, "c1", "client"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
		// Closed, so that the principal can be started again.
		if _, err := l.Update(ctx, r.ID, func(r *Rotation) error { r.Outcome = Failed; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		principal string
		want      []string
	}{
		{"svc/a@R", []string{ids[3], ids[0]}},
		{"svc/a@R2", []string{ids[1]}},
		{"svc/<a>&\"b\"@R", []string{ids[2]}},
		{"x\\svc/a@R", []string{ids[4]}},
		{"svc/a", nil},
	} {
		got, err := l.List(ctx, Filter{Principal: tc.principal})
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs []string
		for _, r := range got {
			gotIDs = append(gotIDs, r.ID)
		}
		if len(gotIDs) != len(tc.want) || (len(gotIDs) > 0 && gotIDs[0] != tc.want[0]) || (len(gotIDs) > 1 && gotIDs[1] != tc.want[1]) {
			t.Errorf("List(%q) = %v, want %v", tc.principal, gotIDs, tc.want)
		}
	}
	l.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRotations).Put([]byte{0xff, 0, 0, 0, 0, 0, 0, 0}, []byte("{not json"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l = open(t, path, nil)
	if _, err := l.List(ctx, Filter{Principal: "svc/a@R2"}); err == nil {
		t.Fatal("a record that does not parse was skipped")
	}
}
