package kdcops

import (
	"testing"
	"time"
)

func TestKeysFingerprint(t *testing.T) {
	a, err := DeriveKeytab("R", []string{"svc"}, []KDCKey{{Enctype: 18, Salt: "Rsvc"}, {Enctype: 17, Salt: "Rsvc"}}, "pw", 2, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := DeriveKeytab("R", []string{"svc"}, []KDCKey{{Enctype: 17, Salt: "Rsvc"}, {Enctype: 18, Salt: "Rsvc"}}, "pw", 2, time.Unix(99, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Order and timestamps do not matter; the bytes of a re-read file
	// give the same fingerprint.
	raw, _ := MarshalKeytab(a)
	kt, err := ParseKeytab(raw, KeytabOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fp := KeysFingerprint(a)
	if KeysFingerprint(b) != fp || KeysFingerprint(kt.Entries) != fp || len(fp) != 24 {
		t.Errorf("same keys, different fingerprints: %s %s %s", fp, KeysFingerprint(b), KeysFingerprint(kt.Entries))
	}
	other, _ := DeriveKeytab("R", []string{"svc"}, []KDCKey{{Enctype: 18, Salt: "Rsvc"}, {Enctype: 17, Salt: "Rsvc"}}, "pw2", 2, time.Unix(1, 0))
	next, _ := DeriveKeytab("R", []string{"svc"}, []KDCKey{{Enctype: 18, Salt: "Rsvc"}, {Enctype: 17, Salt: "Rsvc"}}, "pw", 3, time.Unix(1, 0))
	for name, es := range map[string][]KeytabEntry{"other key": other, "other kvno": next, "one key fewer": a[:1], "one key more": append(append([]KeytabEntry(nil), a...), next[0])} {
		if KeysFingerprint(es) == fp {
			t.Errorf("%s: same fingerprint", name)
		}
	}
}

func TestMatchPrincipal(t *testing.T) {
	e := KeytabEntry{Principal: "HTTP/web@R", Components: []string{"HTTP", "web"}}
	for p, want := range map[string]bool{"HTTP/web": true, "HTTP/web@R": true, "HTTP/web@S": false, "HTTP": false, "web": false} {
		if got := MatchPrincipal(e, p); got != want {
			t.Errorf("MatchPrincipal(%q) = %v, want %v", p, got, want)
		}
	}
}
