//go:build windows

package durable

import "os"

// Windows has no Unix owner or mode to keep; its ACLs are inherited from
// the directory.
func ownerGroupOf(os.FileInfo) (int, int, bool)    { return 0, 0, false }
func readXattrs(string) (map[string][]byte, error) { return nil, nil }
func canReproduce(Attrs) error                     { return nil }
func applyAttrs(f *os.File, a *Attrs) error {
	if a == nil || a.Mode == 0 {
		return nil
	}
	return f.Chmod(a.Mode)
}

func dirWritable(string) error { return nil }
