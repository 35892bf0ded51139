package dynamo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A file far larger than any checkpoint is refused from its size, before
// it is read.
func TestLoadCheckpointSizeCap(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.checkpoint")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(maxCheckpoint + 1) // sparse
	fh.Close()
	_, err = LoadCheckpoint(p)
	var ce *CheckpointError
	if !errors.As(err, &ce) || err.Error() != "checkpoint "+p+": larger than the 256 MiB limit" {
		t.Errorf("oversized checkpoint: %v", err)
	}
}
