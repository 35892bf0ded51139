package keeper

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/messages"

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
