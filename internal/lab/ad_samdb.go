package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/krbops/krbops/internal/spawn"
)

// sambaPython is the interpreter Samba's Python bindings are installed for
// (Debian's python3-samba); a pyenv or venv python3 on $PATH lacks them.
const sambaPython = "/usr/bin/python3"

// samdbScript changes and reads accounts in a Samba AD database directly
// with Samba's own bindings (what samba-tool does inside), so a password
// travels on stdin, never in argv: `samba-tool user create` and `user
// setpassword` take it as an argument or prompt on a terminal. A password
// is read as the first line of stdin. Errors are one line on stderr
// (exception type and message; ldb messages never carry the password).
//
// argv: smb.conf, op, args. Accounts are sAMAccountNames ("svc-web",
// "HOST1$") or, for setpassword and kvno, an SPN ("HTTP/web.ad.test"),
// which names the account holding it.
const samdbScript = `
import sys
def main():
    import ldb
    from samba.auth import system_session
    from samba.param import LoadParm
    from samba.samdb import SamDB
    conf, op, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    lp = LoadParm()
    lp.load(conf)
    db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)

    def password():
        pw = sys.stdin.readline().rstrip("\n")
        if not pw:
            raise ValueError("no password on stdin")
        return pw

    def find(name, attrs):
        if "/" in name:
            expr = "(servicePrincipalName=%s)" % ldb.binary_encode(name)
        else:
            expr = "(sAMAccountName=%s)" % ldb.binary_encode(name)
        res = db.search(base=db.domain_dn(), scope=ldb.SCOPE_SUBTREE, expression=expr, attrs=attrs)
        if len(res) != 1:
            raise LookupError("%d accounts match %s" % (len(res), name))
        return res[0]

    def by_name(name):
        return "(sAMAccountName=%s)" % ldb.binary_encode(str(find(name, ["sAMAccountName"])["sAMAccountName"][0]))

    if op == "user":
        db.newuser(args[0], password())
    elif op == "computer":
        # The SPNs a domain join (adcli, net ads join) registers.
        cn = args[0]
        db.newcomputer(cn, service_principal_name_list=["HOST/" + cn, "HOST/%s.%s" % (cn.lower(), db.domain_dns_name())])
        db.setpassword("(sAMAccountName=%s$)" % ldb.binary_encode(args[0]), password())
    elif op == "setpassword":
        db.setpassword(by_name(args[0]), password())
    elif op == "spn":
        m = ldb.Message()
        m.dn = find(args[0], []).dn
        m["servicePrincipalName"] = ldb.MessageElement(args[1], ldb.FLAG_MOD_ADD, "servicePrincipalName")
        db.modify(m)
    elif op == "spns":
        for spn in find(args[0], ["servicePrincipalName"]).get("servicePrincipalName", []):
            print(str(spn))
    elif op == "kvno":
        print(str(find(args[0], ["msDS-KeyVersionNumber"])["msDS-KeyVersionNumber"][0]))
    else:
        raise ValueError("unknown op " + op)
try:
    main()
except Exception as e:
    sys.stderr.write("%s: %s\n" % (type(e).__name__, " ".join(str(e).split())))
    sys.exit(1)
`

// samdb runs samdbScript's op on the database of the DC configured by conf,
// with password (may be "") as stdin, and returns its stdout.
func samdb(ctx context.Context, conf, password, op string, args ...string) (string, error) {
	if strings.ContainsAny(password, "\r\n") {
		return "", fmt.Errorf("lab: AD %s %s: password contains a newline", op, strings.Join(args, " "))
	}
	cmd := spawn.CommandContext(ctx, sambaPython, append([]string{"-c", samdbScript, conf, op}, args...)...)
	cmd.Env = labEnv()
	cmd.Stdin = strings.NewReader(password + "\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := spawn.StartCmd(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return "", fmt.Errorf("lab: AD %s %s: %w: %s", op, strings.Join(args, " "), err, lastLine(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// randomADPassword returns a random password that meets AD's complexity
// rule (upper, lower, digit and symbol) so it works with or without
// Options.ADComplexity.
func randomADPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b) + "Aa1!", nil
}
