package kdcops

import (
	"os"
	"path/filepath"
	"testing"
)

// MIT keeps the including file in its current section after an include;
// lines after the include directive must not be lost or rejected.
func TestLoadConfigSectionContinuesAfterInclude(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "realms.conf")
	main := filepath.Join(dir, "krb5.conf")
	os.WriteFile(inc, []byte("[realms]\n A.TEST = {\n  kdc = a.test:88\n }\n"), 0o644)
	os.WriteFile(main, []byte("[libdefaults]\ninclude "+inc+"\n default_realm = A.TEST\n clockskew = 120\n"), 0o644)
	cfg, err := LoadConfig(main)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LibDefaults.DefaultRealm != "A.TEST" || cfg.ClockSkew().Seconds() != 120 {
		t.Fatalf("libdefaults after include lost: realm %q clockskew %v", cfg.LibDefaults.DefaultRealm, cfg.ClockSkew())
	}
	if _, err := cfg.ResolveKDCs(t.Context(), "A.TEST", nil); err != nil {
		t.Fatalf("included realm lost: %v", err)
	}
}
