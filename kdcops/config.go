// Package kdcops holds krbops' Kerberos operations: loading krb5.conf,
// resolving a realm's KDCs, talking to a KDC over its own small UDP/TCP
// transport (gokrb5 exports none), and the clock probe. Start with
// [LoadConfig] and [ProbeClock].
//
// Nothing here prints or reads flags; callers get results and typed errors.
package kdcops

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/krbops/krbops/internal/readcap"
)

// DefaultConfigPath is where MIT and Heimdal look when KRB5_CONFIG is unset.
const DefaultConfigPath = "/etc/krb5.conf"

// ConfigPath returns the krb5.conf to use: the flag value, then
// $KRB5_CONFIG (its first entry: MIT allows a colon-separated list), then
// /etc/krb5.conf.
func ConfigPath(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := getenv("KRB5_CONFIG"); env != "" {
		return strings.Split(env, ":")[0]
	}
	return DefaultConfigPath
}

// ConfigError is a krb5.conf that cannot be used. Line is 1-based, 0 when
// the problem is not tied to a line.
type ConfigError struct {
	Path string
	Line int
	Msg  string
	Err  error // the cause, when a file could not be read; nil otherwise
}

// Unwrap makes errors.Is find the cause: fs.ErrNotExist,
// readcap.ErrNotRegular, readcap.ErrTooLarge.
func (e *ConfigError) Unwrap() error { return e.Err }

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("krb5.conf %s: line %d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("krb5.conf %s: %s", e.Path, e.Msg)
}

// Config is a parsed krb5.conf with the facts gokrb5 does not keep.
type Config struct {
	*config.Config
	Path string
	// Warnings are directives gokrb5 does not support; MIT tools would still
	// honour them, so they are reported, not fatal.
	Warnings []string
	// text is the expanded, validated profile, kept so each goroutine can
	// parse its own gokrb5 config (GetKDCs shuffles a config in place).
	text string
}

// Clone parses a fresh gokrb5 config from the same text, for a gokrb5
// client that must not share its config with another goroutine.
func (c *Config) Clone() (*config.Config, error) {
	cfg, err := config.NewFromString(c.text)
	if err != nil {
		var unsupported config.UnsupportedDirective
		if !errors.As(err, &unsupported) {
			return nil, &ConfigError{Path: c.Path, Msg: lowerFirst(err.Error())}
		}
	}
	return cfg, nil
}

// maxConfigFile bounds krb5.conf and each file it includes: real ones are
// a few KiB. maxConfigTotal bounds them all together (an includedir of
// many files). Past either it is not a krb5.conf, and nothing more is read.
const (
	maxConfigFile  = 1 << 20
	maxConfigTotal = 4 << 20
)

// LoadConfig reads and validates krb5.conf at path, following include and
// includedir directives as MIT does. Each file must be a regular file of
// at most 1 MiB (a FIFO is refused, never waited on), 4 MiB in all.
//
// gokrb5's parser accepts almost anything (an unclosed section header or a
// stray line is silently dropped), which would let a broken file look like
// "no KDCs". So the profile syntax is checked here first, with line numbers.
func LoadConfig(path string) (*Config, error) {
	var buf bytes.Buffer
	read := 0
	if err := expandProfile(path, &buf, 0, &read); err != nil {
		return nil, err
	}
	text := mergeSections(buf.String())
	cfg, err := config.NewFromString(text)
	var warnings []string
	if err != nil {
		var unsupported config.UnsupportedDirective
		if !errors.As(err, &unsupported) {
			return nil, &ConfigError{Path: path, Msg: lowerFirst(err.Error())}
		}
		warnings = append(warnings, unsupported.Error())
	}
	return &Config{Config: cfg, Path: path, Warnings: warnings, text: text}, nil
}

// expandProfile appends the file's lines to out after validating them and
// splicing include/includedir targets in place. read counts the bytes of
// every file read so far, against maxConfigTotal.
func expandProfile(path string, out *bytes.Buffer, depth int, read *int) error {
	if depth > 8 {
		return &ConfigError{Path: path, Msg: "include nesting deeper than 8 (an include loop?)"}
	}
	data, err := readcap.ReadFile(path, maxConfigFile)
	if err != nil {
		return &ConfigError{Path: path, Msg: describeOpenError(err), Err: err}
	}
	if *read += len(data); *read > maxConfigTotal {
		return &ConfigError{Path: path, Msg: fmt.Sprintf("krb5.conf and its includes exceed %s together", readcap.Bytes(maxConfigTotal)), Err: readcap.ErrTooLarge}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), maxConfigFile+1)
	inSection := false
	section := "" // the current section header, re-emitted after an include
	depthBraces := 0
	lineNo := 0
	for sc.Scan() {
		lineNo++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasPrefix(line, "include ") || strings.HasPrefix(line, "includedir "):
			if depthBraces > 0 {
				return &ConfigError{Path: path, Line: lineNo, Msg: "include inside a { } block"}
			}
			fields := strings.Fields(line)
			if len(fields) != 2 {
				return &ConfigError{Path: path, Line: lineNo, Msg: fmt.Sprintf("%s needs exactly one path", fields[0])}
			}
			if err := expandInclude(path, lineNo, fields[0], fields[1], out, depth, read); err != nil {
				return err
			}
			// MIT parses an included file on its own, and the including
			// file stays in its section; repeating the header keeps the
			// lines that follow in it once the texts are spliced.
			if section != "" {
				out.WriteString(section)
				out.WriteByte('\n')
			}
			continue
		case strings.HasPrefix(line, "["):
			if !strings.HasSuffix(strings.TrimRight(line, "*"), "]") || len(line) < 3 {
				return &ConfigError{Path: path, Line: lineNo, Msg: fmt.Sprintf("malformed section header %q", line)}
			}
			if depthBraces > 0 {
				return &ConfigError{Path: path, Line: lineNo, Msg: fmt.Sprintf("section %s starts before the previous { was closed", line)}
			}
			inSection = true
			section = line
		case line == "}":
			if depthBraces == 0 {
				return &ConfigError{Path: path, Line: lineNo, Msg: "} without a matching {"}
			}
			depthBraces--
		default:
			if !inSection {
				return &ConfigError{Path: path, Line: lineNo, Msg: fmt.Sprintf("%q is outside any [section]", truncate(line, 40))}
			}
			tag, value, ok := strings.Cut(line, "=")
			if !ok || strings.TrimSpace(tag) == "" {
				return &ConfigError{Path: path, Line: lineNo, Msg: fmt.Sprintf("expected \"name = value\", got %q", truncate(line, 40))}
			}
			if strings.TrimSpace(value) == "{" {
				depthBraces++
			}
		}
		out.WriteString(raw)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return &ConfigError{Path: path, Line: lineNo + 1, Msg: "line too long or unreadable: " + err.Error()}
	}
	if depthBraces > 0 {
		return &ConfigError{Path: path, Line: lineNo, Msg: fmt.Sprintf("%d unclosed { at end of file", depthBraces)}
	}
	return nil
}

func expandInclude(from string, lineNo int, directive, target string, out *bytes.Buffer, depth int, read *int) error {
	if !filepath.IsAbs(target) {
		return &ConfigError{Path: from, Line: lineNo, Msg: directive + " path must be absolute: " + target}
	}
	if directive == "include" {
		// A missing target is a problem of this line, not of that file.
		if _, err := os.Stat(target); err != nil {
			return &ConfigError{Path: from, Line: lineNo, Msg: "include " + target + ": " + describeOpenError(err), Err: err}
		}
		return expandProfile(target, out, depth+1, read)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return &ConfigError{Path: from, Line: lineNo, Msg: "includedir " + target + ": " + describeOpenError(err), Err: err}
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		// MIT reads only names made of alphanumerics, dashes and
		// underscores, or ending in .conf; editor backups are skipped.
		if e.IsDir() || !includedirName(e.Name()) {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		if err := expandProfile(filepath.Join(target, n), out, depth+1, read); err != nil {
			return err
		}
	}
	return nil
}

// mergeSections puts all lines of a section under its first header, in
// order of first appearance. MIT merges a section that appears more than
// once (krb5.conf and each includedir file with its own [realms]); gokrb5
// keeps only the last [realms], so the other realms would vanish. The text
// is already validated: every line after the first header is in a section.
func mergeSections(text string) string {
	var order []string
	bodies := map[string]*strings.Builder{}
	cur := ""
	for _, line := range strings.SplitAfter(text, "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "[") {
			cur, _, _ = strings.Cut(t[1:], "]")
			if bodies[cur] == nil {
				order = append(order, cur)
				bodies[cur] = &strings.Builder{}
			}
			continue
		}
		if b := bodies[cur]; b != nil {
			b.WriteString(line)
		}
	}
	var out strings.Builder
	for _, name := range order {
		out.WriteString("[" + name + "]\n")
		out.WriteString(bodies[name].String())
	}
	return out.String()
}

func includedirName(name string) bool {
	if strings.HasSuffix(name, ".conf") {
		return true
	}
	for _, r := range name {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return name != ""
}

func describeOpenError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return "no such file"
		case errors.Is(err, os.ErrPermission):
			return "permission denied"
		}
		return pe.Err.Error()
	}
	return err.Error()
}

// DefaultRealm returns the realm to use: the flag, then default_realm.
func (c *Config) DefaultRealm(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if c.LibDefaults.DefaultRealm != "" {
		return c.LibDefaults.DefaultRealm, nil
	}
	return "", &ConfigError{Path: c.Path, Msg: "no default_realm in [libdefaults] and no --realm given"}
}

// ClockSkew is the tolerance the KDC and clients apply (libdefaults
// clockskew, default 300 s).
func (c *Config) ClockSkew() time.Duration {
	if c.LibDefaults.Clockskew <= 0 {
		return 300 * time.Second
	}
	return c.LibDefaults.Clockskew
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
