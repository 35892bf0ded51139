package dynamo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/krbops/krbops/internal/durable"
	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/internal/readcap"
)

// CheckpointVersion is the checkpoint file's format version. A reader
// refuses any other version rather than guess.
const CheckpointVersion = 1

// Binding is what a checkpoint was written for. Resuming with any field
// changed would read a different item set into the same output, so
// [Binding.Diff] refuses it.
type Binding struct {
	TableARN  string `json:"table_arn"`
	KeySchema string `json:"key_schema"` // e.g. "pk (S) HASH, sk (N) RANGE; index byStatus: status (S) HASH"
	Index     string `json:"index"`
	Operation string `json:"operation"` // Scan or Query
	// Expressions holds one hash per part (key_condition, filter,
	// projection, names, values) so a mismatch names the part;
	// ExpressionHash covers them all.
	Expressions    map[string]string `json:"expressions"`
	ExpressionHash string            `json:"expression_hash"`
	TotalSegments  int               `json:"total_segments"`
	ConsistentRead bool              `json:"consistent_read"`
	Format         Format            `json:"format"`
	Output         string            `json:"output"` // absolute path of the output file
}

// Difference is one field in which a resume differs from its checkpoint.
type Difference struct {
	// Field is the Config path of what differs ("Spec.Filter",
	// "Spec.Segments", "Out") or, for what the table decides, a Binding
	// field ("TableARN", "KeySchema", "Expressions").
	Field string
	Was   string
	Now   string
}

func (d Difference) String() string { return d.Render(FieldName) }

// Render spells the difference with name(Field).
func (d Difference) Render(name func(field string) string) string {
	f := name(d.Field)
	if d.Was == "" && d.Now == "" {
		return f + " differs"
	}
	return fmt.Sprintf("%s was %s, now %s", f, d.Was, d.Now)
}

// Diff lists how now differs from b (the checkpoint's), in a fixed order.
func (b Binding) Diff(now Binding) []Difference {
	var d []Difference
	add := func(field, was, is string) {
		if was != is {
			d = append(d, Difference{Field: field, Was: quoteOrNone(was), Now: quoteOrNone(is)})
		}
	}
	add("TableARN", b.TableARN, now.TableARN)
	add("KeySchema", b.KeySchema, now.KeySchema)
	add("Spec.Index", b.Index, now.Index)
	add("Operation", b.Operation, now.Operation)
	for _, part := range []string{partKeyCondition, partFilter, partProjection, partNames, partValues} {
		// Expression text is not in the checkpoint, only its hash: say
		// which part changed, not to what.
		if b.Expressions[part] != now.Expressions[part] {
			d = append(d, Difference{Field: partFields[part]})
		}
	}
	if len(d) == 0 && b.ExpressionHash != now.ExpressionHash {
		d = append(d, Difference{Field: "Expressions"})
	}
	if b.TotalSegments != now.TotalSegments {
		d = append(d, Difference{Field: "Spec.Segments", Was: fmt.Sprint(b.TotalSegments), Now: fmt.Sprint(now.TotalSegments)})
	}
	if b.ConsistentRead != now.ConsistentRead {
		d = append(d, Difference{Field: "Spec.Consistent", Was: fmt.Sprint(b.ConsistentRead), Now: fmt.Sprint(now.ConsistentRead)})
	}
	add("Format", string(b.Format), string(now.Format))
	add("Out", b.Output, now.Output)
	return d
}

func quoteOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// BindingError refuses a resume whose flags or table differ from the
// checkpoint's. Resuming anyway would mix two item sets in one output.
type BindingError struct {
	Checkpoint string
	Diffs      []Difference
}

func (e *BindingError) Error() string { return e.Render(FieldName) }

// Render spells the message with name(Field) for each difference.
func (e *BindingError) Render(name func(field string) string) string {
	parts := make([]string, len(e.Diffs))
	for i, d := range e.Diffs {
		parts[i] = d.Render(name)
	}
	return fmt.Sprintf("checkpoint %s was written for a different run: %s", e.Checkpoint, strings.Join(parts, "; "))
}

// Hint says what to do next.
func (e *BindingError) Hint() string {
	return "resume with the settings of the run that wrote the checkpoint, or start over: delete the checkpoint and the output, or use a new output file and checkpoint file"
}

// FaultClass: the invocation differs from the checkpoint's (fault.Usage).
func (e *BindingError) FaultClass() fault.Class { return fault.Usage }

// SegmentState is one segment's progress. Items, Scanned, Pages, Bytes and
// CapacityUnits are totals over every run that worked on the segment.
type SegmentState struct {
	Segment int `json:"segment"`
	// LastEvaluatedKey is attributevalue.MarshalMapJSON of the key to
	// continue from; absent before the first page and once Done. Done is
	// its own field because an empty key ({}) decodes to a non-nil empty
	// map and must not be mistaken for "finished".
	LastEvaluatedKey json.RawMessage `json:"last_evaluated_key,omitempty"`
	Done             bool            `json:"done"`
	Items            int64           `json:"items"`
	Scanned          int64           `json:"scanned"`
	Pages            int64           `json:"pages"`
	Bytes            int64           `json:"bytes"`  // output bytes this segment wrote
	Offset           int64           `json:"offset"` // end of this segment's last page in the output
	CapacityUnits    float64         `json:"capacity_units"`
}

// Key decodes LastEvaluatedKey; nil when the segment starts from the
// beginning.
func (s SegmentState) Key() (map[string]types.AttributeValue, error) {
	if len(s.LastEvaluatedKey) == 0 || bytes.Equal(s.LastEvaluatedKey, []byte("null")) {
		return nil, nil
	}
	m, err := attributevalue.UnmarshalMapJSON(s.LastEvaluatedKey)
	if err != nil {
		return nil, err
	}
	// Key attributes are scalars; anything else is a damaged file, and
	// sending it as ExclusiveStartKey would start from the wrong place.
	for k, v := range m {
		switch v.(type) {
		case *types.AttributeValueMemberS, *types.AttributeValueMemberN, *types.AttributeValueMemberB:
		default:
			return nil, fmt.Errorf("key attribute %q is not a string, number or binary", k)
		}
	}
	return m, nil
}

// Checkpoint is the checkpoint file: the binding, how many bytes
// of the output are committed, and every segment's state. It is replaced
// atomically after each page.
type Checkpoint struct {
	Version     int            `json:"version"`
	Binding     Binding        `json:"binding"`
	OutputBytes int64          `json:"output_bytes"` // the committed length of the output; anything after it is discarded on resume
	Segments    []SegmentState `json:"segments"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

// NewCheckpoint starts a checkpoint for b with every segment at its
// beginning.
func NewCheckpoint(b Binding) *Checkpoint {
	cp := &Checkpoint{Version: CheckpointVersion, Binding: b, Segments: make([]SegmentState, b.TotalSegments)}
	for i := range cp.Segments {
		cp.Segments[i].Segment = i
	}
	return cp
}

// Done reports whether every segment is finished.
func (cp *Checkpoint) Done() bool {
	for _, s := range cp.Segments {
		if !s.Done {
			return false
		}
	}
	return true
}

// CheckpointError is a checkpoint file krbops cannot trust: unreadable,
// malformed, or inconsistent with itself.
type CheckpointError struct {
	Path string
	Msg  string
}

func (e *CheckpointError) Error() string { return fmt.Sprintf("checkpoint %s: %s", e.Path, e.Msg) }

// Hint says what to do next.
func (e *CheckpointError) Hint() string {
	return "restore the checkpoint from the run that wrote it, or start over with a new output file and checkpoint file"
}

// FaultClass: a local file krbops was told to resume from is unusable
// (fault.Usage).
func (e *CheckpointError) FaultClass() fault.Class { return fault.Usage }

// maxCheckpoint bounds a checkpoint file. A checkpoint holds a few hundred
// bytes per segment and is rewritten whole after every page, so a real one
// stays far below this even at thousands of segments; a larger file is
// not a checkpoint (--checkpoint naming the output, say) and is refused
// before it is read.
const maxCheckpoint = 256 << 20

// LoadCheckpoint reads and checks a checkpoint. A missing file is returned
// as an error satisfying errors.Is(err, os.ErrNotExist); a FIFO, a device
// or a file over 256 MiB is a *CheckpointError.
func LoadCheckpoint(path string) (*Checkpoint, error) {
	b, err := readcap.ReadFile(path, maxCheckpoint)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, &CheckpointError{Path: path, Msg: describeFileErr(err)}
	}
	cp, err := DecodeCheckpoint(b)
	if err != nil {
		return nil, &CheckpointError{Path: path, Msg: err.Error()}
	}
	return cp, nil
}

// DecodeCheckpoint parses a checkpoint and checks that it is consistent:
// one state per segment in order, keys that decode, a finished segment
// without a key, and per-segment byte counts that add up to the committed
// output length.
func DecodeCheckpoint(b []byte) (*Checkpoint, error) {
	var cp Checkpoint
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cp); err != nil {
		return nil, fmt.Errorf("not a krbops checkpoint: %v", err)
	}
	if cp.Version != CheckpointVersion {
		return nil, fmt.Errorf("version %d, this krbops reads version %d", cp.Version, CheckpointVersion)
	}
	if cp.Binding.TotalSegments < 1 || len(cp.Segments) != cp.Binding.TotalSegments {
		return nil, fmt.Errorf("%d segment states for TotalSegments %d", len(cp.Segments), cp.Binding.TotalSegments)
	}
	if cp.OutputBytes < 0 {
		return nil, fmt.Errorf("negative output_bytes %d", cp.OutputBytes)
	}
	var sum int64
	for i, s := range cp.Segments {
		if s.Segment != i {
			return nil, fmt.Errorf("segment state %d is for segment %d", i, s.Segment)
		}
		if s.Items < 0 || s.Pages < 0 || s.Bytes < 0 || s.Scanned < 0 || s.Offset < 0 || s.Offset > cp.OutputBytes {
			return nil, fmt.Errorf("segment %d: counts out of range", i)
		}
		key, err := s.Key()
		if err != nil {
			return nil, fmt.Errorf("segment %d: last_evaluated_key does not decode: %v", i, err)
		}
		if s.Done && key != nil {
			return nil, fmt.Errorf("segment %d is done but still has a last_evaluated_key", i)
		}
		sum += s.Bytes
	}
	if sum != cp.OutputBytes {
		return nil, fmt.Errorf("segments wrote %d bytes but output_bytes is %d", sum, cp.OutputBytes)
	}
	return &cp, nil
}

// Encode renders the checkpoint for WriteFileAtomic.
func (cp *Checkpoint) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// WriteFileAtomic replaces path crash-safely (internal/durable): the one
// temp, fsync, rename, fsync-dir sequence every krbops file goes through.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return durable.WriteFile(path, data, perm, nil)
}

func describeFileErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
