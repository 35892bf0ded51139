package keeper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/messages"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/kdcops/keylogin"
)

func ticket(life time.Duration) *keylogin.Ticket {
	start := time.Unix(1_800_000_000, 0)
	return &keylogin.Ticket{Part: messages.EncKDCRepPart{AuthTime: start, EndTime: start.Add(life)}}
}

// The margin applies to tickets longer than it; a shorter ticket is
// refreshed at half its lifetime, not before every check.
func TestThreshold(t *testing.T) {
	k := New(Options{Margin: 10 * time.Minute})
	if got := k.threshold(ticket(10 * time.Hour)); got != 10*time.Minute {
		t.Errorf("10h ticket: %v", got)
	}
	if got := k.threshold(ticket(60 * time.Second)); got != 30*time.Second {
		t.Errorf("60s ticket: %v", got)
	}
}

// Start in a directory that is not there fails before any login.
func TestStartNeedsItsDirectory(t *testing.T) {
	k := New(Options{Dir: filepath.Join(t.TempDir(), "missing"), Margin: time.Minute})
	err := k.Start(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "ccache directory in ") {
		t.Fatalf("Start = %v", err)
	}
	if err := k.Close(); err != nil {
		t.Error(err)
	}
}

// In a directory others may write without the sticky bit another user
// could swap the private directory: Start refuses it before any login.
// A sticky one (like /tmp) and one only this user may write are fine.
func TestStartRefusesAnUntrustedDirectory(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o777, false}, {0o770, false}, {0o777 | os.ModeSticky, true}, {0o700, true}} {
		dir := filepath.Join(t.TempDir(), "cc")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		k := New(Options{Dir: dir, Margin: time.Minute, Login: noKeytab(t)})
		err := k.Start(context.Background())
		if untrusted := errors.Is(err, durable.ErrUntrusted); untrusted == tc.ok {
			t.Errorf("mode %v: Start = %v", tc.mode, err)
		}
		var le *keylogin.Error
		if tc.ok && !errors.As(err, &le) {
			t.Errorf("mode %v: Start = %v, want the login's error", tc.mode, err)
		}
		k.Close()
	}
}

// noKeytab is a Login whose keytab is missing: it fails without the network.
func noKeytab(t *testing.T) *keylogin.Login {
	cfg := config.New()
	cfg.LibDefaults.DefaultRealm = "KRBOPS.TEST"
	l, err := keylogin.New(keylogin.Options{Primary: keylogin.Identity{Principal: "svc", Keytab: filepath.Join(t.TempDir(), "missing.keytab")}, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return l
}
