package rotate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	Password       string `json:"password,omitempty"`
	Pending        []byte `json:"pending,omitempty"` // the pending keytab
	PendingVersion string `json:"pending_version,omitempty"`
	// CreatedSHA is the SHA-256 of the pending keytab as create.keys made
	// it, also in the ledger record: the two must agree on resume.
	CreatedSHA string `json:"created_sha256,omitempty"`
	// Rekeyed: after the key change the KDC reported other enctypes or
	// salts than before, and the pending keytab was derived again.
	Rekeyed bool `json:"rekeyed,omitempty"`
	// Backup is the file finish.keytab saved the old keytab to, once made.
	Backup string `json:"backup,omitempty"`
	// Phase2Wait is how long phase 2 must wait (see Rotation.Phase2Wait).
	Phase2Wait time.Duration `json:"phase2_wait_ns,omitempty"`
	State      State         `json:"state"`
	Started    time.Time     `json:"started"`
	Updated    time.Time     `json:"updated"`
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

// maxJournalSize bounds what LoadJournal reads: a journal holds one
// pending keytab (at most secretstore.MaxDataSize) and a few fields.
const maxJournalSize = 1 << 20

// LoadJournal reads the journal of principal; ErrNoJournal when none. The
// directory and the file must be this user's and private (see
// durable.TrustDir, TrustFile): a journal steers a key change, so one that
// another user could have written is refused (an error wrapping
// durable.ErrUntrusted), never read.
func LoadJournal(dir, principal string) (*Journal, error) {
	path := JournalPath(dir, principal)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoJournal
	}
	if err := CheckJournalDir(dir); err != nil {
		return nil, err
	}
	if err := durable.TrustFile(path, true); err != nil {
		return nil, fmt.Errorf("rotation journal %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the rotation journal: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJournalSize+1))
	if err != nil {
		return nil, fmt.Errorf("read the rotation journal: %w", err)
	}
	if len(b) > maxJournalSize {
		return nil, fmt.Errorf("rotation journal %s is larger than %d bytes: not a krbops journal", path, maxJournalSize)
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

// CheckJournalDir refuses a journal directory another user could write
// to. A missing directory is fine: save creates it 0700.
func CheckJournalDir(dir string) error {
	if err := durable.TrustDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal directory %w", err)
	}
	return nil
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
	if err := CheckJournalDir(dir); err != nil {
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
	if err := CheckJournalDir(dir); err != nil {
		return err
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

// keytabSHA is the fingerprint of a pending keytab that binds journal,
// ledger record and store version together.
func keytabSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
