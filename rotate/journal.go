package rotate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/kdcops"
)

// State is how far a rotation got; the journal records it after each step
// so --resume knows what is done. The order matters: a later state implies
// every earlier one.
type State int

// States in the order a rotation passes them.
const (
	StateLocked    State = iota + 1 // ledger lock and rotation record taken
	StateCreated                    // password, pending keytab and tokens journaled
	StateStored                     // pending version in the secret store
	StateSetting                    // the key change may have reached the KDC
	StateSet                        // the KDC confirmed the key change
	StateTested                     // the pending keytab works
	StatePromoted                   // pending is current in the secret store
	StatePublished                  // --keytab holds the pending keytab
)

var stateNames = map[State]string{
	StateLocked: "locked", StateCreated: "created", StateStored: "stored", StateSetting: "setting",
	StateSet: "set", StateTested: "tested", StatePromoted: "promoted", StatePublished: "published",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Journal is the local record of one rotation in progress. It holds the
// new password (until the key change is tested) and the pending keytab,
// so the file is 0600 in a 0700 directory and never printed.
type Journal struct {
	Format        int    `json:"format"`
	ID            string `json:"id"` // names the ledger lock holder across processes
	Principal     string `json:"principal"`
	Role          Role   `json:"role"`
	Backend       string `json:"backend"`
	Cluster       string `json:"cluster"`
	Tier          string `json:"tier,omitempty"`
	Keytab        string `json:"keytab"`
	Secret        string `json:"secret"`
	LedgerID      string `json:"ledger_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	OldKVNO       uint32 `json:"old_kvno"`
	NewKVNO       uint32 `json:"new_kvno"`
	// KDCKeys are the enctypes and salts the KDC reported before the
	// change: the new keys are derived with them.
	KDCKeys []kdcops.KDCKey `json:"kdc_keys"`
	// Token and SeedToken are the secret store's idempotency tokens,
	// persisted before the calls that use them.
	Token     string `json:"token,omitempty"`
	SeedToken string `json:"seed_token,omitempty"`
	// Password is needed to repeat the key change after a crash; it is
	// dropped once the change is tested.
	Password       string    `json:"password,omitempty"`
	Pending        []byte    `json:"pending,omitempty"` // the pending keytab
	PendingVersion string    `json:"pending_version,omitempty"`
	State          State     `json:"state"`
	Started        time.Time `json:"started"`
	Updated        time.Time `json:"updated"`
}

// String keeps the password and keytab out of fmt and loggers.
func (j *Journal) String() string {
	return fmt.Sprintf("journal %s of %s (%s)", j.ID, j.Principal, j.State)
}

const journalFormat = 1

// ErrNoJournal: no rotation of the principal is in progress on this host.
var ErrNoJournal = errors.New("no rotation in progress")

// JournalPath is where the journal of principal lives under dir.
func JournalPath(dir, principal string) string {
	return filepath.Join(dir, url.PathEscape(principal)+".json")
}

// LoadJournal reads the journal of principal; ErrNoJournal when none.
func LoadJournal(dir, principal string) (*Journal, error) {
	b, err := os.ReadFile(JournalPath(dir, principal))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoJournal
	}
	if err != nil {
		return nil, fmt.Errorf("read the rotation journal: %w", err)
	}
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("rotation journal %s is corrupt: %s", JournalPath(dir, principal), firstWords(err.Error()))
	}
	if j.Format != journalFormat {
		return nil, fmt.Errorf("rotation journal %s has format %d, this krbops reads %d", JournalPath(dir, principal), j.Format, journalFormat)
	}
	return &j, nil
}

// ListJournals returns every journal in dir.
func ListJournals(dir string) ([]*Journal, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Journal
	for _, e := range ents {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		name, err := url.PathUnescape(e.Name()[:len(e.Name())-len(".json")])
		if err != nil {
			continue
		}
		j, err := LoadJournal(dir, name)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// save writes the journal so that a crash leaves either the old or the
// new file, never a torn one.
func (j *Journal) save(dir string, now time.Time) error {
	j.Format = journalFormat
	j.Updated = now
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the journal directory: %w", err)
	}
	return durable.WriteFile(JournalPath(dir, j.Principal), b, 0o600, nil)
}

func removeJournal(dir, principal string) error {
	if err := os.Remove(JournalPath(dir, principal)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return durable.SyncDir(dir)
}

func firstWords(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}
