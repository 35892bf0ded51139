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
	r, err := kdclog.Open(path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	var last int64
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return last, nil
		}
		if err != nil {
			return 0, err
		}
		// Only a TGT counts: kpasswd's AS ticket for kadmin/changepw
		// lets the client change its password, not log in to services.
		if ev.Kind == kdclog.AS && ev.OK() && ev.Time < cut && ev.Time > last && string(ev.Client) == principal && bytes.HasPrefix(ev.Service, krbtgtPrefix) {
			last = ev.Time
		}
	}
}
