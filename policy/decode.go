package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/krbops/krbops/rotate"
)

// decoder walks the YAML tree by hand: yaml.v3's struct decoding loses
// the line of a key and ignores unknown keys, and a misspelt key must
// not silently loosen a rule. It keeps the first error.
type decoder struct {
	file string
	err  *Error
}

func (d *decoder) fail(n *yaml.Node, key, hint, format string, a ...any) {
	if d.err != nil {
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	d.err = &Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, a...), Hint: hint}
}

// pair is one key of a mapping with its value.
type pair struct {
	name  string
	key   *yaml.Node
	value *yaml.Node
}

// fields returns the pairs of mapping n, refusing keys not in allowed
// (nil: any key) and keys given twice.
func (d *decoder) fields(n *yaml.Node, path string, allowed ...string) []pair {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		d.fail(n, orTop(path), "write it as a mapping of keys (key: value)", "must be a mapping, not %s", kindName(n))
		return nil
	}
	var out []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		full := join(path, name)
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			d.fail(k, orTop(path), "keys are plain names", "unsupported key %s", kindName(k))
			return nil
		}
		if allowed != nil && !contains(allowed, name) {
			d.fail(k, full, "valid keys here: "+strings.Join(allowed, ", ")+"; a misspelt key is refused so that it cannot loosen a rule", "unknown key")
			return nil
		}
		if prev, dup := seen[name]; dup {
			d.fail(k, full, "keep one of them", "given twice (first on line %d)", prev)
			return nil
		}
		seen[name] = k.Line
		out = append(out, pair{name, k, v})
	}
	return out
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func orTop(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

func (d *decoder) scalar(n *yaml.Node, key, tag, hint string) (string, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != tag {
		d.fail(n, key, hint, "must be %s, not %s", tagName[tag], kindName(n))
		return "", false
	}
	return n.Value, true
}

var tagName = map[string]string{"!!str": "a string", "!!int": "a whole number", "!!bool": "true or false"}

func (d *decoder) str(n *yaml.Node, key, hint string) Setting[string] {
	v, ok := d.scalar(n, key, "!!str", hint)
	if ok && strings.TrimSpace(v) == "" {
		d.fail(n, key, hint, "must not be empty")
		ok = false
	}
	return Setting[string]{V: v, Set: ok, Line: n.Line, Key: key}
}

func (d *decoder) boolean(n *yaml.Node, key string) Setting[bool] {
	v, ok := d.scalar(n, key, "!!bool", "write true or false (yes/no/on/off are strings in YAML 1.2)")
	return Setting[bool]{V: v == "true", Set: ok, Line: n.Line, Key: key}
}

func (d *decoder) positive(n *yaml.Node, key string) Setting[int] {
	const hint = "a whole number of rotations, at least 1"
	v, ok := d.scalar(n, key, "!!int", hint)
	if !ok {
		return Setting[int]{}
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 1 {
		d.fail(n, key, hint, "must be at least 1, not %s", v)
		return Setting[int]{}
	}
	return Setting[int]{V: i, Set: true, Line: n.Line, Key: key}
}

// duration takes Go's duration syntax as a string: a bare number has no
// unit, and guessing seconds where hours were meant would open a window
// 3600 times too wide.
func (d *decoder) duration(n *yaml.Node, key string, zeroOK bool) Setting[time.Duration] {
	const hint = "a duration with its unit, such as 6h, 30m or 1h30m"
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.fail(n, key, hint, "must be a duration with a unit, not %s", kindName(n))
		return Setting[time.Duration]{}
	}
	v, err := time.ParseDuration(n.Value)
	switch {
	case err != nil:
		d.fail(n, key, hint, "%q is not a duration", n.Value)
		return Setting[time.Duration]{}
	case v < 0 || v == 0 && !zeroOK:
		d.fail(n, key, hint, "must be greater than zero, not %s", n.Value)
		return Setting[time.Duration]{}
	}
	return Setting[time.Duration]{V: v, Set: true, Line: n.Line, Key: key}
}

func (d *decoder) list(n *yaml.Node, key, hint string) []*yaml.Node {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		d.fail(n, key, hint, "must be a list, not %s", kindName(n))
		return nil
	}
	return n.Content
}

func (d *decoder) patterns(n *yaml.Node, key string) []Pattern {
	const hint = "a list of quoted path.Match patterns, e.g. [\"kdc/*\", \"svc-idp-*@EXAMPLE.COM\"]"
	var out []Pattern
	for i, it := range d.list(n, key, hint) {
		k := fmt.Sprintf("%s[%d]", key, i)
		s := d.str(it, k, hint)
		if !s.Set {
			return nil
		}
		if err := rotate.ValidDenyPattern(s.V); err != nil {
			d.fail(it, k, hint, "%q is not a valid pattern: %s", s.V, err)
			return nil
		}
		out = append(out, Pattern{Text: s.V, Line: s.Line, Key: k})
	}
	return out
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (d *decoder) name(pr pair, key string) bool {
	if !nameRE.MatchString(pr.name) {
		d.fail(pr.key, key, "letters, digits, '.', '_' and '-'", "%q is not a valid name", pr.name)
		return false
	}
	return true
}

func (d *decoder) top(p *Policy, root *yaml.Node) {
	for _, pr := range d.fields(root, "", "version", "clusters", "tiers", "deny", "last-login", "phase2", "defaults") {
		switch pr.name {
		case "version":
			if v, ok := d.scalar(pr.value, "version", "!!int", "version: 1"); ok && v != "1" {
				d.fail(pr.value, "version", "this krbops reads policy version 1", "unsupported version %s", v)
			}
		case "clusters":
			p.hasClusters = true
			d.clusters(p, pr.value)
		case "tiers":
			d.tiers(p, pr.value)
		case "deny":
			p.Deny = d.patterns(pr.value, "deny")
		case "last-login":
			for _, f := range d.fields(pr.value, "last-login", "kdc-logs", "no-login-record-ok", "min-tgt-remaining") {
				key := "last-login." + f.name
				switch f.name {
				case "kdc-logs":
					var logs []string
					for i, it := range d.list(f.value, key, "a list of KDC log paths") {
						logs = append(logs, d.str(it, fmt.Sprintf("%s[%d]", key, i), "a KDC log path").V)
					}
					p.KDCLogs = Setting[[]string]{V: logs, Set: true, Line: f.value.Line, Key: key}
				case "no-login-record-ok":
					p.NoLoginRecordOK = d.boolean(f.value, key)
				case "min-tgt-remaining":
					p.MinTGTRemaining = d.duration(f.value, key, true)
				}
			}
		case "phase2":
			for _, f := range d.fields(pr.value, "phase2", "ticket-lifetime") {
				p.TicketLifetime = d.duration(f.value, "phase2."+f.name, false)
			}
		case "defaults":
			for _, f := range d.fields(pr.value, "defaults", "backend", "ledger", "secret-store") {
				key := "defaults." + f.name
				switch f.name {
				case "backend":
					p.Backend = d.str(f.value, key, "kpasswd, kpasswd-admin or kadmin")
					if b := p.Backend.V; p.Backend.Set && b != rotate.BackendKpasswd && b != rotate.BackendKpasswdAdmin && b != rotate.BackendKadmin {
						d.fail(f.value, key, "kpasswd, kpasswd-admin or kadmin", "unknown backend %q", b)
					}
				case "ledger":
					p.Ledger = d.str(f.value, key, "the ledger's path")
				case "secret-store":
					p.SecretStore = d.str(f.value, key, "file://DIR or awssm://PREFIX?region=R")
				}
			}
		}
	}
	if d.err == nil {
		d.checkOverrides(p)
	}
}

func (d *decoder) limits(n *yaml.Node, path string, extra ...string) (Limits, []pair) {
	var l Limits
	var rest []pair
	for _, f := range d.fields(n, path, append([]string{"limit", "window", "min-gap"}, extra...)...) {
		key := path + "." + f.name
		switch f.name {
		case "limit":
			l.Limit = d.positive(f.value, key)
		case "window":
			l.Window = d.duration(f.value, key, false)
		case "min-gap":
			l.MinGap = d.duration(f.value, key, true)
		default:
			rest = append(rest, f)
		}
	}
	return l, rest
}

func (d *decoder) tiers(p *Policy, n *yaml.Node) {
	for _, pr := range d.fields(n, "tiers") {
		key := "tiers." + pr.name
		if !d.name(pr, key) {
			return
		}
		t := Tier{Name: pr.name, Line: pr.key.Line}
		var rest []pair
		t.Limits, rest = d.limits(pr.value, key, "principals")
		for _, f := range rest {
			t.Principals = d.patterns(f.value, key+".principals")
		}
		// A tier krbops has no defaults for must say its whole rule:
		// a missing limit would otherwise fall back to nothing.
		if _, known := rotate.TierLimit(rotate.Tier(t.Name)); !known && d.err == nil && (!t.Limit.Set || !t.Window.Set) {
			d.fail(pr.key, key, "give limit and window (built-in defaults exist only for standard and control-plane)", "needs limit and window")
		}
		p.Tiers = append(p.Tiers, t)
	}
}

func (d *decoder) clusters(p *Policy, n *yaml.Node) {
	for _, pr := range d.fields(n, "clusters") {
		key := "clusters." + pr.name
		if !d.name(pr, key) {
			return
		}
		c := Cluster{Name: pr.name, Line: pr.key.Line}
		for _, f := range d.fields(pr.value, key, "allowlisted", "tiers") {
			switch f.name {
			case "allowlisted":
				c.Allowlisted = d.boolean(f.value, key+".allowlisted")
			case "tiers":
				c.Tiers = map[string]Limits{}
				for _, t := range d.fields(f.value, key+".tiers") {
					tk := key + ".tiers." + t.name
					l, _ := d.limits(t.value, tk)
					c.Tiers[t.name] = l
				}
			}
		}
		// Silence is not consent: a cluster is cleared only by saying so.
		if !c.Allowlisted.Set && d.err == nil {
			d.fail(pr.key, key+".allowlisted", "write allowlisted: true to clear the cluster for rotation, false to hold it back", "is required")
		}
		p.Clusters = append(p.Clusters, c)
	}
}

// checkOverrides refuses a cluster override of a tier that does not
// exist: it would never apply, and whoever wrote it meant something.
func (d *decoder) checkOverrides(p *Policy) {
	for _, c := range p.Clusters {
		names := make([]string, 0, len(c.Tiers))
		for name := range c.Tiers {
			names = append(names, name)
		}
		slices.Sort(names) // the same error every run
		for _, name := range names {
			l := c.Tiers[name]
			if p.tier(name) != nil {
				continue
			}
			if _, known := rotate.TierLimit(rotate.Tier(name)); known {
				continue
			}
			line := c.Line
			for _, s := range []int{l.Limit.Line, l.Window.Line, l.MinGap.Line} {
				if s > 0 {
					line = s
					break
				}
			}
			d.err = &Error{File: d.file, Line: line, Key: "clusters." + c.Name + ".tiers." + name,
				Msg: "no such tier", Hint: "name a tier under tiers: (or standard, control-plane)"}
			return
		}
	}
}

func (p *Policy) tier(name string) *Tier {
	for i := range p.Tiers {
		if p.Tiers[i].Name == name {
			return &p.Tiers[i]
		}
	}
	return nil
}

func (p *Policy) cluster(name string) *Cluster {
	for i := range p.Clusters {
		if p.Clusters[i].Name == name {
			return &p.Clusters[i]
		}
	}
	return nil
}
