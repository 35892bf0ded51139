package kdcops

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"sync"
)

// KeytabFile is the outcome of linting one file found by [LintDir].
type KeytabFile struct {
	Path     string
	IsKeytab bool // false: no keytab header, skipped
	Entries  int
	Findings []Finding

	dirError bool // a directory LintDir could not read
}

// LintKeytabFile reads and lints one file in a single pass: access rules,
// then the entries (one in memory at a time while reading), then the
// content rules. A file without the keytab header is skipped, whatever its
// name: a keytab directory also holds READMEs and lock files.
func LintKeytabFile(path string, o LintOptions) KeytabFile {
	out := KeytabFile{Path: path}
	f, err := openNoBlock(path)
	if err != nil {
		out.IsKeytab = true // it might be one; the operator must know it could not be read
		out.Findings = ReadErrorFinding("keytab", path, &FileError{Kind: "keytab", Path: path, Err: err}, o.Rules)
		return out
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return out
	}
	// One read takes a whole keytab (they are a few hundred bytes): on a
	// tree of 100,000 files the syscalls are most of the cost. A large
	// non-keytab file costs one bounded read for its header.
	head := make([]byte, min(fi.Size(), firstRead))
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if !IsKeytabHeader(head) {
		return out
	}
	out.IsKeytab = true
	out.Findings = KeytabAccessFindings(path, fi, o)
	if fi.Size() > maxKeytabFile {
		err := &FileError{Kind: "keytab", Path: path, Err: checkRegular(fi)}
		out.Findings = append(out.Findings, ReadErrorFinding("keytab", path, err, o.Rules)...)
		return out
	}
	var r io.Reader = bytes.NewReader(head)
	if int64(n) < fi.Size() {
		r = io.MultiReader(r, f)
	}
	kr, err := NewKeytabReader(r, fi.Size(), KeytabOptions{})
	var entries []KeytabEntry
	for err == nil {
		var e KeytabEntry
		e, err = kr.Next()
		if err == nil {
			entries = append(entries, e)
		}
	}
	out.Entries = len(entries)
	if err != io.EOF {
		// A corrupt keytab gets KT001 alone: rules over a partial read would
		// report what is missing because of the damage, not in the keytab.
		out.Findings = append(out.Findings, ReadErrorFinding("keytab", path, &FileError{Kind: "keytab", Path: path, Err: err}, o.Rules)...)
		return out
	}
	out.Findings = append(out.Findings, LintKeytab(path, entries, o)...)
	return out
}

// firstRead is how much of a file --dir reads at once.
const firstRead = 64 << 10

// DirStats counts what a walk saw.
type DirStats struct {
	Files    int // regular files examined
	Keytabs  int // files with a keytab header (linted)
	Skipped  int // regular files without a keytab header
	Special  int // symlinks, FIFOs, sockets, devices: never opened
	Entries  int // keytab entries read
	DirError int // directories that could not be read
}

// LintDir lints every keytab under root. Files are read by a bounded pool
// of workers and each file's result is handed to emit as soon as it is
// done, so memory holds a few files at a time, however large the tree.
// emit is never called concurrently. Symlinks are not followed: a link
// into another tree would lint that tree too, and a link to a file in
// this tree would lint it twice.
func LintDir(ctx context.Context, root string, o LintOptions, workers int, emit func(KeytabFile)) (DirStats, error) {
	if workers <= 0 {
		// Reading small files is mostly waiting on syscalls; a few more
		// workers than CPUs keeps the CPUs busy.
		workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	var st DirStats
	paths := make(chan string, 4*workers)
	results := make(chan KeytabFile, 4*workers)

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for p := range paths {
				results <- LintKeytabFile(p, o)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range results {
			if r.dirError {
				emit(r)
				continue
			}
			st.Files++
			if !r.IsKeytab {
				st.Skipped++
				continue
			}
			st.Keytabs++
			st.Entries += r.Entries
			emit(r)
		}
	}()

	walkErr := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if path == root {
				return err
			}
			// An unreadable subdirectory may hide keytabs: report it and go on.
			st.DirError++
			results <- KeytabFile{Path: path, Findings: dirErrorFinding(path, err, o.Rules), dirError: true}
			return nil
		}
		switch {
		case d.IsDir():
			return nil
		case d.Type().IsRegular():
			select {
			case paths <- path:
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			st.Special++
		}
		return nil
	})
	close(paths)
	wg.Wait()
	close(results)
	<-done
	if walkErr != nil {
		if errors.Is(walkErr, context.Canceled) || errors.Is(walkErr, context.DeadlineExceeded) {
			return st, walkErr
		}
		return st, &FileError{Kind: "directory", Path: root, Err: walkErr}
	}
	return st, nil
}

func dirErrorFinding(path string, err error, rules RuleSet) []Finding {
	f := findings{rules: rules, file: path}
	f.add("KT001", "", "make the directory readable by the user running krbops (or run it as the keytabs' owner)",
		map[string]any{"error": describeOpenError(err)},
		"cannot read directory: %s", describeOpenError(err))
	return f.list
}
