package dynamo

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func testBinding() Binding {
	spec := Spec{Table: "t", Scan: true, Segments: 2, Filter: "a = :a",
		Values: map[string]types.AttributeValue{":a": &types.AttributeValueMemberS{Value: "x"}}}
	exprs, all := spec.expressionHashes()
	return Binding{TableARN: "arn:aws:dynamodb:eu-west-1:1:table/t", KeySchema: "pk (S) HASH", Operation: "Scan",
		Expressions: exprs, ExpressionHash: all, TotalSegments: 2, Format: FormatJSON, Output: "/data/t.jsonl"}
}

func TestCheckpointRoundTrip(t *testing.T) {
	cp := NewCheckpoint(testBinding())
	key := map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "user-1"},
		"sk": &types.AttributeValueMemberN{Value: "12345678901234567890.5"},
		"b":  &types.AttributeValueMemberB{Value: []byte{0, 0xff}},
	}
	lek, err := attributevalue.MarshalMapJSON(key)
	if err != nil {
		t.Fatal(err)
	}
	cp.Segments[0] = SegmentState{Segment: 0, LastEvaluatedKey: lek, Items: 3, Scanned: 5, Pages: 1, Bytes: 40, Offset: 40, CapacityUnits: 0.5}
	cp.Segments[1] = SegmentState{Segment: 1, Done: true, Items: 2, Pages: 2, Bytes: 20, Offset: 60}
	cp.OutputBytes = 60
	b, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeCheckpoint(b)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	got, err := back.Segments[0].Key()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := AppendItem(nil, got, FormatDynamoDBJSON)
	want, _ := AppendItem(nil, key, FormatDynamoDBJSON)
	if string(again) != string(want) {
		t.Errorf("key changed: %s, want %s", again, want)
	}
	if k, _ := back.Segments[1].Key(); k != nil || !back.Segments[1].Done {
		t.Errorf("finished segment: key %v done %v", k, back.Segments[1].Done)
	}
	if back.Done() {
		t.Error("a checkpoint with an unfinished segment reports Done")
	}
}

// An empty key ({}) decodes to a non-nil empty map: it must not read as
// "finished", which only the done flag says.
func TestEmptyKeyIsNotDone(t *testing.T) {
	m, err := attributevalue.UnmarshalMapJSON([]byte(`{}`))
	if err != nil || m == nil {
		t.Fatalf("UnmarshalMapJSON({}) = %v, %v; the premise changed", m, err)
	}
	cp := NewCheckpoint(testBinding())
	cp.Segments[0].LastEvaluatedKey = json.RawMessage(`{}`)
	b, _ := cp.Encode()
	back, err := DecodeCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Segments[0].Done || back.Done() {
		t.Error("an empty key was taken for a finished segment")
	}
}

func TestDecodeCheckpointRejectsInconsistentFiles(t *testing.T) {
	good := NewCheckpoint(testBinding())
	good.Segments[0].Bytes, good.Segments[0].Offset, good.OutputBytes = 10, 10, 10
	cases := map[string]func(cp *Checkpoint){
		"version 2":                             func(cp *Checkpoint) { cp.Version = 2 },
		"3 segment states for":                  func(cp *Checkpoint) { cp.Segments = append(cp.Segments, SegmentState{Segment: 2}) },
		"is for segment":                        func(cp *Checkpoint) { cp.Segments[1].Segment = 0 },
		"wrote 10 bytes but output_bytes is 11": func(cp *Checkpoint) { cp.OutputBytes = 11 },
		"done but still has": func(cp *Checkpoint) {
			cp.Segments[1].Done, cp.Segments[1].LastEvaluatedKey = true, json.RawMessage(`{"pk":{"S":"a"}}`)
		},
		"does not decode":     func(cp *Checkpoint) { cp.Segments[1].LastEvaluatedKey = json.RawMessage(`{"pk":{"Q":1}}`) },
		"counts out of range": func(cp *Checkpoint) { cp.Segments[0].Offset = 99 },
	}
	for want, mod := range cases {
		cp := cloneCheckpoint(good)
		mod(cp)
		b, _ := json.Marshal(cp)
		if _, err := DecodeCheckpoint(b); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
	if _, err := DecodeCheckpoint([]byte(`{"version":1,"surprise":true}`)); err == nil || !strings.Contains(err.Error(), "not a krbops checkpoint") {
		t.Errorf("unknown field: %v", err)
	}
	if _, err := DecodeCheckpoint([]byte(`{"vers`)); err == nil {
		t.Error("truncated file accepted")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cp.json")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if string(b) != content {
			t.Errorf("read %q, want %q", b, content)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}
	// A failed write leaves the old file and no temp file.
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "cp.json"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a failed write left %d entries", len(entries))
	}
}

func TestBindingDiffNamesEachDifference(t *testing.T) {
	b := testBinding()
	now := testBinding()
	now.TableARN = "arn:aws:dynamodb:eu-west-1:1:table/u"
	now.TotalSegments = 4
	spec := Spec{Table: "t", Scan: true, Segments: 4, Filter: "a = :b",
		Values: map[string]types.AttributeValue{":a": &types.AttributeValueMemberS{Value: "x"}}}
	now.Expressions, now.ExpressionHash = spec.expressionHashes()
	err := &BindingError{Checkpoint: "/data/t.jsonl.checkpoint", Diffs: b.Diff(now)}
	want := "checkpoint /data/t.jsonl.checkpoint was written for a different run: table ARN was arn:aws:dynamodb:eu-west-1:1:table/t, now arn:aws:dynamodb:eu-west-1:1:table/u; FilterExpression differs; TotalSegments was 2, now 4"
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	// A caller spells the fields its own way.
	flags := func(f string) string {
		return map[string]string{"Spec.Filter": "--filter", "TableARN": "table ARN"}[f] + "!"
	}
	if got := err.Render(flags); !strings.Contains(got, "table ARN! was arn:aws:dynamodb:eu-west-1:1:table/t") || !strings.Contains(got, "; --filter! differs; ") {
		t.Errorf("rendered %s", got)
	}
	if d := b.Diff(testBinding()); len(d) != 0 {
		t.Errorf("identical bindings differ: %v", d)
	}
	// Value maps hash the same whatever their order of insertion.
	a := Spec{Values: map[string]types.AttributeValue{":a": &types.AttributeValueMemberN{Value: "1"}, ":b": &types.AttributeValueMemberS{Value: "2"}}}
	c := Spec{Values: map[string]types.AttributeValue{":b": &types.AttributeValueMemberS{Value: "2"}, ":a": &types.AttributeValueMemberN{Value: "1"}}}
	_, ha := a.expressionHashes()
	_, hc := c.expressionHashes()
	if ha != hc {
		t.Error("the same values hash differently")
	}
	// A number and a string with the same digits are different values.
	d := Spec{Values: map[string]types.AttributeValue{":a": &types.AttributeValueMemberS{Value: "1"}, ":b": &types.AttributeValueMemberS{Value: "2"}}}
	if _, hd := d.expressionHashes(); hd == ha {
		t.Error("N 1 and S 1 hash the same")
	}
}
