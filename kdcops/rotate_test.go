package kdcops

import (
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
)

// The KDC's salt, not the default one, and the 32-bit kvno survive into
// the keytab bytes (gokrb5's AddEntry would lose both).
func TestDeriveKeytabSaltAndKVNO(t *testing.T) {
	keys := []KDCKey{{Enctype: 18, Salt: "OLD.REALMrenamed"}, {Enctype: 17, Salt: "RALICE", DefaultSalt: true}}
	ents, err := DeriveKeytab("R", []string{"alice"}, keys, "pw-1", 300, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	et, _ := crypto.GetEtype(18)
	want, _ := et.StringToKey("pw-1", "OLD.REALMrenamed", et.GetDefaultStringToKeyParams())
	def, _ := et.StringToKey("pw-1", "Ralice", et.GetDefaultStringToKeyParams())
	if string(ents[0].key) != string(want) || string(ents[0].key) == string(def) {
		t.Error("aes256 key not derived with the KDC's salt")
	}
	raw, err := MarshalKeytab(ents)
	if err != nil {
		t.Fatal(err)
	}
	kt, err := ParseKeytab(raw, KeytabOptions{KeepKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range kt.Entries {
		if e.KVNO != 300 || e.KVNO8 != 44 || e.Principal != "alice@R" {
			t.Errorf("entry %s kvno %d/%d, want alice@R kvno 300 (8-bit 44)", e.Principal, e.KVNO, e.KVNO8)
		}
	}
	if got := KVNOs(AtKVNO(kt.Entries, 300)); len(got) != 1 || got[0] != 300 {
		t.Errorf("AtKVNO/KVNOs = %v", got)
	}
}

func TestDeriveKeytabRefusesUnderivableEnctype(t *testing.T) {
	_, err := DeriveKeytab("R", []string{"a"}, []KDCKey{{Enctype: 3, Salt: "Ra"}}, "pw", 2, time.Now())
	if err == nil || !strings.Contains(err.Error(), "cannot derive") {
		t.Errorf("single DES: %v", err)
	}
	if _, err := DeriveKeytab("R", []string{"a"}, nil, "pw", 2, time.Now()); err == nil {
		t.Error("no keys: no error")
	}
}
