package rotate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"time"
)

// asReqIssue matches an MIT krb5kdc line for a TGT issued to a client:
//
//	... AS_REQ (2 etypes {...}) 127.0.0.1: ISSUE: authtime 1763900000, etypes {...}, alice@R for krbtgt/R@R
var asReqIssue = regexp.MustCompile(`AS_REQ .*ISSUE: authtime (\d+), .*\}, (\S+) for krbtgt/`)

// asReq is the cheap test before the regexp: most lines of a KDC log are
// TGS_REQ.
var asReq = []byte("AS_REQ")

// maxLogLine bounds one log line; a longer one is not a KDC's and is
// passed over, not buffered without end.
const maxLogLine = 1 << 20

// LastLogin returns the authtime of principal's last TGT in MIT KDC logs
// issued before before. Each path may be a live log, a rotated one
// (kdc.log.1) or a gzipped one (kdc.log.2.gz, recognised by its magic
// bytes, not its name); the newest login over all of them counts. Logins
// at or after before are krbops' own checks of this run, which give the
// service no ticket. found is false when no log has one.
func LastLogin(paths []string, principal string, before time.Time) (t time.Time, found bool, err error) {
	cut := before.Truncate(time.Second)
	for _, path := range paths {
		at, ok, err := lastLoginIn(path, principal, cut)
		if err != nil {
			return time.Time{}, false, err
		}
		if ok && (!found || at.After(t)) {
			t, found = at, true
		}
	}
	return t, found, nil
}

func lastLoginIn(path, principal string, cut time.Time) (t time.Time, found bool, err error) {
	err = scanLogins(path, cut, func(p string, at time.Time) {
		if p == principal && (!found || at.After(t)) {
			t, found = at, true
		}
	})
	if err != nil {
		return time.Time{}, false, err
	}
	return t, found, nil
}

// Logins is the last login of every principal in a set of KDC logs, read
// once: a batch asks it for each target instead of reading every log again
// per target (the logs grow with every rotation of the batch).
type Logins struct{ last map[string]time.Time }

// IndexLogins reads paths as LastLogin does, keeping every principal's
// newest login before before.
func IndexLogins(paths []string, before time.Time) (*Logins, error) {
	l := &Logins{last: map[string]time.Time{}}
	cut := before.Truncate(time.Second)
	for _, path := range paths {
		err := scanLogins(path, cut, func(p string, at time.Time) {
			if t, ok := l.last[p]; !ok || at.After(t) {
				l.last[p] = at
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Last is principal's newest login in the index.
func (l *Logins) Last(principal string) (time.Time, bool) {
	t, ok := l.last[principal]
	return t, ok
}

// scanLogins calls fn for every TGT issued before cut in one KDC log.
func scanLogins(path string, cut time.Time, fn func(principal string, at time.Time)) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		// A FIFO would block the read for ever; a device has no end.
		return fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLogLine)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, asReq) {
			continue
		}
		m := asReqIssue.FindSubmatch(line)
		if m == nil {
			continue
		}
		sec, err := strconv.ParseInt(string(m[1]), 10, 64)
		if err != nil {
			continue
		}
		if at := time.Unix(sec, 0); at.Before(cut) {
			fn(string(m[2]), at)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s has a line longer than %d bytes: not a KDC log", path, maxLogLine)
		}
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
