// Package readcap reads the local files krbops is pointed at — krb5.conf
// and its includes, --targets, keytabs, credential caches, checkpoints,
// secret-store manifests — with a size cap and only when they are regular
// files. A FIFO named as a file would block a plain open or read forever
// (a hung on-call tool at 3 a.m.), a character device such as /dev/zero
// would be read until memory runs out, and a 10 GiB file named by mistake
// would be read whole before it is parsed. Start with [ReadFile]; [Open]
// is for callers that stream.
package readcap

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular and ErrTooLarge are what errors.Is finds in the errors
// of [Open] and [ReadFile].
var (
	ErrNotRegular = errors.New("not a regular file")
	ErrTooLarge   = errors.New("file too large")
)

// NotRegularError is a path that is not a regular file.
type NotRegularError struct{ Mode fs.FileMode }

func (e *NotRegularError) Error() string {
	return "it is a " + DescribeMode(e.Mode) + ", not a regular file"
}

// Is makes errors.Is(err, ErrNotRegular) true.
func (e *NotRegularError) Is(target error) bool { return target == ErrNotRegular }

// TooLargeError is a file over the cap its reader set. Size is what was
// seen: the size fstat reported, or limit+1 for a file that grew past the
// cap while it was read.
type TooLargeError struct{ Size, Limit int64 }

func (e *TooLargeError) Error() string {
	if size := Bytes(e.Size); size != Bytes(e.Limit) {
		return fmt.Sprintf("%s is larger than the %s limit", size, Bytes(e.Limit))
	}
	return fmt.Sprintf("larger than the %s limit", Bytes(e.Limit))
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// Open opens path for reading. It never blocks on a FIFO (the open is
// non-blocking and the file's type is checked before any read), and it
// refuses anything but a regular file (following symbolic links) and a
// file larger than limit bytes. Errors are *fs.PathError, so callers that
// print pe.Err name the problem without repeating the path; errors.Is
// finds [ErrNotRegular], [ErrTooLarge] and fs.ErrNotExist in them.
func Open(path string, limit int64) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|oNonBlock, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := Check(fi, limit); err != nil {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, fi, nil
}

// Check applies Open's rules to a file's FileInfo: a *NotRegularError or
// a *TooLargeError, or nil.
func Check(fi fs.FileInfo, limit int64) error {
	if !fi.Mode().IsRegular() {
		return &NotRegularError{Mode: fi.Mode()}
	}
	if fi.Size() > limit {
		return &TooLargeError{Size: fi.Size(), Limit: limit}
	}
	return nil
}

// ReadFile reads the regular file at path, at most limit bytes; see [Open]
// for what it refuses. A file that grows past limit while it is read is
// refused too.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, fi, err := Open(path, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, 0, fi.Size()+1)
	for {
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if int64(len(data)) > limit {
			return nil, &fs.PathError{Op: "read", Path: path, Err: &TooLargeError{Size: int64(len(data)), Limit: limit}}
		}
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
	}
}

// DescribeMode names a file type for an operator: "named pipe (FIFO)",
// "character device", "directory" ...
func DescribeMode(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// Bytes prints a size the way an operator reads it: "512 bytes", "64 KiB",
// "1.5 MiB".
func Bytes(n int64) string {
	const k = 1024
	switch {
	case n < k:
		return fmt.Sprintf("%d bytes", n)
	case n < k*k:
		return trim(float64(n)/k) + " KiB"
	case n < k*k*k:
		return trim(float64(n)/(k*k)) + " MiB"
	}
	return trim(float64(n)/(k*k*k)) + " GiB"
}

func trim(f float64) string {
	s := fmt.Sprintf("%.1f", f)
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	return s
}
