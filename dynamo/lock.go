package dynamo

import (
	"fmt"
	"os"

	"github.com/krbops/krbops/internal/durable"
)

// lockFile takes an exclusive, non-blocking lock on path (created 0600),
// so two krbops processes never resume the same checkpoint at once. The
// lock dies with its holder, even by SIGKILL.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	busy, err := durable.TryLock(f)
	if err != nil || busy {
		f.Close()
		if busy {
			return nil, errLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
