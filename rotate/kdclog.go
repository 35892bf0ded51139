package rotate

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
)

// asReqIssue matches an MIT krb5kdc line for a TGT issued to a client:
//
//	... AS_REQ (2 etypes {...}) 127.0.0.1: ISSUE: authtime 1763900000, etypes {...}, alice@R for krbtgt/R@R
var asReqIssue = regexp.MustCompile(`AS_REQ .*ISSUE: authtime (\d+), .*\}, (\S+) for krbtgt/`)

// LastLogin returns the authtime of principal's last TGT in an MIT KDC
// log issued before before. Logins at or after before are krbops' own
// checks of this run, which give the service no ticket. found is false
// when the log has none.
func LastLogin(path, principal string, before time.Time) (t time.Time, found bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	cut := before.Truncate(time.Second)
	for sc.Scan() {
		m := asReqIssue.FindSubmatch(sc.Bytes())
		if m == nil || string(m[2]) != principal {
			continue
		}
		sec, err := strconv.ParseInt(string(m[1]), 10, 64)
		if err != nil {
			continue
		}
		at := time.Unix(sec, 0)
		if !at.Before(cut) {
			continue
		}
		if !found || at.After(t) {
			t, found = at, true
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	return t, found, nil
}
