package rotate

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/krbops/krbops/kdcops/kdclog"
)

// LastLogin returns the time of principal's last TGT issued before before,
// from KDC logs in any format kdclog reads (MIT krb5kdc, Heimdal kdc, a
// Samba AD DC's log, an AD 4768 export). Each path may be a live log, a rotated one (kdc.log.1)
// or a gzipped one (kdc.log.2.gz, recognised by its magic bytes, not its
// name); the newest login over all of them counts. Logins at or after
// before are krbops' own checks of this run, which give the service no
// ticket. found is false when no log has one: the caller fails closed.
func LastLogin(paths []string, principal string, before time.Time) (t time.Time, found bool, err error) {
	cut := before.Truncate(time.Second).Unix()
	var last int64
	for _, path := range paths {
		at, err := lastLoginIn(path, principal, cut)
		if err != nil {
			return time.Time{}, false, err
		}
		last = max(last, at)
	}
	if last == 0 {
		return time.Time{}, false, nil
	}
	return time.Unix(last, 0), true, nil
}

var krbtgtPrefix = []byte("krbtgt/")

// lastLoginIn returns the Unix time of principal's last login in one log
// before cut, 0 when none.
func lastLoginIn(path, principal string, cut int64) (int64, error) {
	var last int64
	err := scanLogins(path, cut, func(client []byte, at int64) {
		if at > last && string(client) == principal {
			last = at
		}
	})
	return last, err
}

// Logins is the last login of every principal in a set of KDC logs, read
// once: a batch asks it for each target instead of reading every log again
// per target (the logs grow with every rotation of the batch).
type Logins struct{ last map[string]int64 }

// IndexLogins reads paths as LastLogin does, keeping every principal's
// newest login before before.
func IndexLogins(paths []string, before time.Time) (*Logins, error) {
	l := &Logins{last: map[string]int64{}}
	cut := before.Truncate(time.Second).Unix()
	for _, path := range paths {
		err := scanLogins(path, cut, func(client []byte, at int64) {
			if at > l.last[string(client)] {
				l.last[string(client)] = at
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
	at, ok := l.last[principal]
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(at, 0), true
}

// scanLogins calls fn for every TGT one log records as issued before cut.
func scanLogins(path string, cut int64, fn func(client []byte, at int64)) error {
	r, err := kdclog.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// Only a TGT counts: kpasswd's AS ticket for kadmin/changepw
		// lets the client change its password, not log in to services.
		if ev.Kind == kdclog.AS && ev.OK() && ev.Time < cut && bytes.HasPrefix(ev.Service, krbtgtPrefix) {
			fn(ev.Client, ev.Time)
		}
	}
}
