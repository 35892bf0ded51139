package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteKrb5ConfWithServers(t *testing.T) {
	r := &Realm{Name: "EX.TEST", Dir: t.TempDir(), KadminAddr: "127.0.0.1:7001", KpasswdAddr: "127.0.0.1:7002"}
	path := filepath.Join(r.Dir, "krb5.conf")
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if err := r.WriteKrb5ConfWith(path, Krb5ConfOptions{KDCs: []string{"127.0.0.1:88"}, KpasswdServer: "127.0.0.1:9464"}); err != nil {
		t.Fatal(err)
	}
	if c := read(); !strings.Contains(c, "kpasswd_server = 127.0.0.1:9464\n") || !strings.Contains(c, "admin_server = 127.0.0.1:7001\n") {
		t.Errorf("kpasswd_server not replaced, or admin_server not kept:\n%s", c)
	}
	if err := r.WriteKrb5ConfWith(path, Krb5ConfOptions{KDCs: []string{"127.0.0.1:88"}, AdminServer: "127.0.0.1:9749"}); err != nil {
		t.Fatal(err)
	}
	if c := read(); !strings.Contains(c, "admin_server = 127.0.0.1:9749\n") || !strings.Contains(c, "kpasswd_server = 127.0.0.1:7002\n") {
		t.Errorf("admin_server not replaced, or kpasswd_server not kept:\n%s", c)
	}
	if err := r.WriteKrb5Conf(path, "127.0.0.1:88"); err != nil {
		t.Fatal(err)
	}
	if c := read(); !strings.Contains(c, "admin_server = 127.0.0.1:7001\n") || !strings.Contains(c, "kpasswd_server = 127.0.0.1:7002\n") {
		t.Errorf("WriteKrb5Conf changed the servers:\n%s", c)
	}
	for _, o := range []Krb5ConfOptions{{}, {KDCs: []string{""}}, {KDCs: []string{"a:1"}, KpasswdServer: "x }"}} {
		if err := r.WriteKrb5ConfWith(path, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
