// Package secretstore keeps versioned keytabs with the stages a rotation
// needs: current (what services use), pending (the next key, written before
// the KDC changes) and previous (the key before current).
//
// Start with [Open]: a URL picks the backend, and every backend serves the
// same [Store] interface with the same rules:
//
//   - file://DIR (or a bare path): the default; one directory per secret,
//     one file per version, a JSON stage manifest replaced atomically.
//   - awssm://PREFIX?region=R&endpoint=URL: AWS Secrets Manager, one binary
//     secret per name, stages mapped to AWSCURRENT/AWSPENDING/AWSPREVIOUS.
//
// A rotation writes the new keytab with [Store.PutPending] under a token it
// persisted first, changes the key at the KDC, then calls [Store.Promote].
// Both are safe to repeat after a crash: the same token finds the same
// version, and promoting a version that is already current only finishes
// the bookkeeping. A secret gets its first version through [Store.Seed],
// which is current at once (Secrets Manager makes a secret's first version
// current whatever stage was asked for, so every backend does).
//
// Keytab bytes never appear in an error, a log line or a [Version]'s
// String: errors name the store, the secret and the version only.
package secretstore

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/krbops/krbops/internal/fault"
)

// Stage is the role a version plays for its secret. A stage is on at most
// one version of a secret at a time; a version may carry several stages or
// none (a displaced pending version keeps its data and ID but no stage).
type Stage string

// The stages every backend keeps.
const (
	StageCurrent  Stage = "current"
	StagePending  Stage = "pending"
	StagePrevious Stage = "previous"
)

// Stages lists the stages in the order a status display shows them.
var Stages = []Stage{StageCurrent, StagePending, StagePrevious}

// ParseStage accepts "current", "pending" or "previous".
func ParseStage(s string) (Stage, error) {
	for _, st := range Stages {
		if s == string(st) {
			return st, nil
		}
	}
	return "", fmt.Errorf("secretstore: unknown stage %q (want current, pending or previous)", s)
}

// Version is one stored keytab. Versions returns them without Data.
type Version struct {
	// ID names the version within its secret. For awssm it is the
	// ClientRequestToken the version was written with.
	ID string `json:"id"`
	// Stages this version carries, in the order of Stages.
	Stages []Stage `json:"stages"`
	// Created is when the backend stored the version; zero when the
	// backend does not report it (awssm's PutPending and Seed answers).
	Created time.Time `json:"created,omitzero"`
	// Data is the keytab. It is never marshalled, printed or logged.
	Data []byte `json:"-"`
}

// Has reports whether v carries stage s.
func (v Version) Has(s Stage) bool {
	for _, st := range v.Stages {
		if st == s {
			return true
		}
	}
	return false
}

// String describes v without its data, so a version passed to fmt or a
// logger by mistake never prints key material.
func (v Version) String() string {
	return fmt.Sprintf("version %s %v (%d bytes)", v.ID, v.Stages, len(v.Data))
}

// GoString keeps %#v from dumping Data.
func (v Version) GoString() string { return "secretstore.Version{" + v.String() + "}" }

// LogValue keeps log/slog from dumping Data.
func (v Version) LogValue() slog.Value {
	stages := make([]string, len(v.Stages))
	for i, s := range v.Stages {
		stages[i] = string(s)
	}
	return slog.GroupValue(
		slog.String("id", v.ID),
		slog.String("stages", strings.Join(stages, ",")),
		slog.Int("bytes", len(v.Data)),
	)
}

// Store is a versioned keytab store. Every method takes the secret's name
// (e.g. a principal, "HTTP/web01.example.com@EXAMPLE.COM"; see ValidName).
// Methods are safe for concurrent use; writers to one secret are
// serialized by the backend (a file lock, or the service).
type Store interface {
	// Get returns the version carrying stage, with its data. ErrNotFound
	// when the secret does not exist or no version carries stage.
	Get(ctx context.Context, name string, stage Stage) (Version, error)
	// GetVersion returns one version by ID, with its data, whatever its
	// stages: rotate --resume reads back the version its journal names.
	GetVersion(ctx context.Context, name, versionID string) (Version, error)
	// Versions lists every version the backend still holds, oldest first,
	// without data.
	Versions(ctx context.Context, name string) ([]Version, error)
	// Seed stores data as the first, current version of a secret that has
	// no current version yet (the file backend creates the secret; awssm
	// needs it to exist). Idempotent on token like PutPending; ErrConflict
	// when the secret already has a current version.
	Seed(ctx context.Context, name string, data []byte, token string) (Version, error)
	// PutPending stores data as a new version carrying the pending stage,
	// taking the stage from any other version; current does not move.
	// token (see NewToken) makes it idempotent: persist the token before
	// the call, and a repeat with the same token and data returns the
	// version the first call made, whatever stages it has since gained.
	// The same token with other data is ErrConflict, and so is a secret
	// without a current version (Seed it first); a secret that does not
	// exist is ErrNotFound.
	PutPending(ctx context.Context, name string, data []byte, token string) (Version, error)
	// Promote makes the pending version versionID current, the old current
	// previous, and drops the old previous's stage, as atomically as the
	// backend allows. Promoting a version that is already current is a
	// no-op apart from removing a pending stage a crash left on it, so a
	// repeat after a crash is safe. ErrConflict when versionID is neither
	// pending nor current; ErrNotFound when it does not exist.
	Promote(ctx context.Context, name, versionID string) error
	// Discard takes the pending stage off version versionID, so an
	// aborted rotation leaves nothing pending; current does not move. A
	// version that is not pending is left as it is (a repeat is safe);
	// one that is current is ErrConflict; ErrNotFound when it does not
	// exist.
	Discard(ctx context.Context, name, versionID string) error
	// Check verifies, without changing any version, that the secret can be
	// written now: the backend answers, credentials and permissions work
	// as far as can be told without a write, and nothing else (another
	// krbops holding the file lock, a Secrets Manager rotation Lambda)
	// would fight over its stages. A secret that does not exist yet is
	// fine where Seed can create it (file backend).
	Check(ctx context.Context, name string) error
}

// Options configure Open. The zero value works.
type Options struct {
	// AWS is the base configuration of the awssm backend (credentials,
	// HTTP client, retryer). Nil loads the default chain (environment,
	// shared config, instance role). The URL's region and endpoint
	// override its Region and BaseEndpoint.
	AWS *aws.Config
	// TLS, when set, is the trust of the awssm backend's HTTPS client
	// (--ca-bundle) where AWS is nil.
	TLS *tls.Config
	// LockTimeout bounds how long a file-store write waits while another
	// process holds the secret's lock; DefaultLockTimeout when zero.
	LockTimeout time.Duration
	// Holder is recorded in the file lock so a refused operator learns who
	// holds it; "user@host pid N" when empty.
	Holder string
	// Now stamps file-store versions; time.Now when nil.
	Now func() time.Time
}

// DefaultLockTimeout is how long a file-store write waits for the lock.
const DefaultLockTimeout = 10 * time.Second

// MaxDataSize is the largest keytab a store takes: Secrets Manager's limit
// for SecretBinary, applied to every backend so a keytab that fits one fits
// all.
const MaxDataSize = 65536

// Open returns the store a URL names:
//
//	file:///var/lib/krbops/keytabs   a directory (created on first Seed)
//	/var/lib/krbops/keytabs          the same: a bare path means file://
//	awssm://krbops/prod?region=eu-west-1
//	                                 Secrets Manager; the host and path are
//	                                 a name prefix ("krbops/prod/<name>"),
//	                                 empty for bare names
//	awssm://?region=us-east-1&endpoint=http://127.0.0.1:5000
//	                                 endpoint overrides the service URL
//
// ctx bounds loading AWS credentials configuration; no request is sent.
func Open(ctx context.Context, rawURL string, opts Options) (Store, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("secretstore: empty store URL (want file://DIR or awssm://PREFIX?region=R)")
	}
	scheme, rest, hasScheme := strings.Cut(rawURL, "://")
	if !hasScheme {
		return openFile(rawURL, opts)
	}
	switch scheme {
	case "file":
		return openFile(rest, opts)
	case "awssm":
		return openAWSSM(ctx, rawURL, opts)
	default:
		return nil, fmt.Errorf("secretstore: unsupported store URL scheme %q (supported: file, awssm)", scheme)
	}
}

// maxNameLen is Secrets Manager's limit on a secret name.
const maxNameLen = 512

// ValidName reports whether name can name a secret: 1 to 512 characters
// from Secrets Manager's set (letters, digits and /_+=.@-) plus '$', and
// not "." or "..". Kerberos principals fit, Active Directory computer
// accounts ("HOST1$@AD.EXAMPLE.COM") included; the awssm backend refuses
// '$' itself (ValidAWSName), since Secrets Manager does.
func ValidName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("secretstore: secret name must be 1 to %d characters, got %d", maxNameLen, len(name))
	}
	if name == "." || name == ".." {
		return fmt.Errorf("secretstore: secret name %q is reserved", name)
	}
	for _, r := range name {
		if !nameRune(r) && r != '$' {
			return fmt.Errorf("secretstore: secret name %q has %q (allowed: letters, digits and /_+=.@-$)", name, r)
		}
	}
	return nil
}

// ValidAWSName is ValidName for Secrets Manager, whose names cannot hold
// '$'. The error says how to name such a principal's secret.
func ValidAWSName(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if strings.ContainsRune(name, '$') {
		return &NameError{Name: name, Msg: "Secrets Manager names cannot hold '$' (allowed: letters, digits and /_+=.@-)",
			HintText: "name the secret with --secret, e.g. " + strings.ReplaceAll(name, "$", "-computer")}
	}
	return nil
}

// NameError is a secret name a backend cannot store; Hint says what to
// pass instead.
type NameError struct {
	Name, Msg, HintText string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("secretstore: secret name %q: %s", e.Name, e.Msg)
}
func (e *NameError) Hint() string            { return e.HintText }
func (e *NameError) FaultClass() fault.Class { return fault.Usage }

func nameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_+=.@-", r)
}

// NewToken returns a fresh idempotency token for PutPending or Seed: a
// random UUID, the form Secrets Manager itself uses.
func NewToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ValidToken reports whether token can serve as an idempotency token in
// every backend: 32 to 64 letters, digits or hyphens (Secrets Manager's
// ClientRequestToken length, and safe in a file name).
func ValidToken(token string) error {
	if len(token) < 32 || len(token) > 64 {
		return fmt.Errorf("secretstore: token must be 32 to 64 characters, got %d", len(token))
	}
	for _, r := range token {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("secretstore: token %q has %q (allowed: letters, digits and -)", token, r)
		}
	}
	return nil
}

// checkData validates a keytab about to be stored without looking inside:
// the store does not parse keytabs, the rotation does.
func checkData(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("secretstore: empty keytab")
	}
	if len(data) > MaxDataSize {
		return fmt.Errorf("secretstore: keytab of %d bytes exceeds the %d-byte limit", len(data), MaxDataSize)
	}
	return nil
}

// redactURL returns u without user info, for error messages.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
