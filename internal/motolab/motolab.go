// Package motolab runs a throwaway moto_server on loopback: the one harness
// behind every krbops test that talks to AWS (Secrets Manager, DynamoDB,
// STS, IAM). There is no other copy; extend this one.
//
// Start with [ForTest] in a test, or [Start] elsewhere. The server listens
// on a free 127.0.0.1 port, runs in its own process group with a
// parent-death signal (Linux), so a test binary that panics or is killed
// leaves no server behind; [Server.Close] stops it with SIGTERM, then
// SIGKILL.
//
// moto accepts any credentials until IAM enforcement is switched on with
// [Options.EnforceIAM]: then the harness creates an admin user before the
// first test request and every later request must be signed by a known
// user whose policy allows the action ([Server.CreateUser]). moto answers
// a denial with HTTP 403 and a query-protocol XML body even for JSON
// services (Secrets Manager, DynamoDB), which the SDK cannot decode: code
// under test must classify by status or read the body itself.
package motolab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/krbops/krbops/internal/spawn"
)

// DefaultRegion is the region of Server.Config when Options.Region is empty.
const DefaultRegion = "us-east-1"

// DummyAccessKeyID and DummySecretAccessKey are the static credentials of
// Server.Config when IAM is not enforced: moto accepts any key then, and
// fixed dummies make sure no real credentials from the environment are
// ever sent to the test server.
const (
	DummyAccessKeyID     = "AKIAKRBOPSMOTOLAB000"
	DummySecretAccessKey = "krbops-motolab-dummy-secret-key"
)

// InstallHint tells how to get moto_server when it is missing.
const InstallHint = "pip install 'moto[server]' (or set KRBOPS_MOTO_SERVER to its path)"

// readyTimeout bounds how long moto_server may take to answer after it
// starts: its Python imports alone take about a second.
const readyTimeout = 30 * time.Second

// Options configure Start.
type Options struct {
	// Region is the region of Config; DefaultRegion when empty.
	Region string
	// EnforceIAM makes moto check signatures and IAM policies. The harness
	// then creates an admin user (all actions allowed) whose keys sign
	// Config's requests; use CreateUser for restricted users.
	EnforceIAM bool
	// Dir receives moto_server's output (moto.log). A temporary directory
	// removed by Close when empty.
	Dir string
	// Logf, when set, receives the harness's progress messages.
	Logf func(format string, a ...any)
}

// Server is a running moto_server. Its fields are read-only for callers.
type Server struct {
	// Endpoint is the base URL of every service, e.g. "http://127.0.0.1:5123".
	Endpoint string
	// Region is the region Config uses.
	Region string
	// Log is moto_server's stdout and stderr.
	Log string
	// Admin holds the credentials Config signs with: the dummy keys, or,
	// with EnforceIAM, the admin user's keys.
	Admin aws.Credentials

	dir       string
	ownDir    bool
	proc      *spawn.Process
	closeOnce sync.Once
	closeErr  error
}

// Bin returns the path of moto_server: $KRBOPS_MOTO_SERVER, then $PATH,
// then the pyenv shim where the development machines install it.
func Bin() (string, error) {
	if p := os.Getenv("KRBOPS_MOTO_SERVER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("motolab: KRBOPS_MOTO_SERVER=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("moto_server"); err == nil {
		return p, nil
	}
	for _, c := range fallbackBins() {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w; install with: %s", errMissing, InstallHint)
}

// fallbackBins are searched after $PATH: a non-login shell (CI, make)
// often lacks pyenv's shims or pip's user directory in $PATH.
var fallbackBins = func() []string {
	cands := []string{"/root/.pyenv/shims/moto_server", "/usr/local/bin/moto_server"}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".pyenv", "shims", "moto_server"), filepath.Join(home, ".local", "bin", "moto_server"))
	}
	return cands
}

// Start runs moto_server on a free loopback port and returns once it
// answers HTTP. ctx bounds start-up only; the server runs until Close.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Server{Region: opts.Region}
	if s.Region == "" {
		s.Region = DefaultRegion
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "krbops-moto-")
		if err != nil {
			return nil, err
		}
		s.dir, s.ownDir = d, true
	} else {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, err
		}
		s.dir = opts.Dir
	}
	s.Log = filepath.Join(s.dir, "moto.log")
	defer func() {
		if err != nil {
			if out := spawn.Tail(s.Log, 2048); out != "" {
				logf("motolab: %s (tail):\n%s", s.Log, out)
			}
			s.Close()
		}
	}()

	// The port is picked by binding :0 and closing it, so another process
	// may take it before moto binds; moto then exits at once and we try a
	// new port.
	const attempts = 3
	for i := 1; ; i++ {
		port, perr := spawn.FreePort()
		if perr != nil {
			return nil, perr
		}
		began := time.Now()
		if err = s.spawn(bin, port, opts.EnforceIAM); err != nil {
			return nil, err
		}
		err = s.waitReady(ctx)
		if err == nil {
			logf("motolab: moto_server pid %d on %s, ready in %s", s.proc.PID(), s.Endpoint, time.Since(began).Round(time.Millisecond))
			break
		}
		if !s.proc.Exited() || i == attempts || ctx.Err() != nil {
			return nil, err
		}
		_ = s.proc.Stop() // reaped already; takes any straggler of its group
		logf("motolab: moto_server on port %d exited early, retrying: %v", port, err)
	}

	if opts.EnforceIAM {
		if err := s.createAdmin(ctx); err != nil {
			return nil, err
		}
	} else {
		s.Admin = aws.Credentials{AccessKeyID: DummyAccessKeyID, SecretAccessKey: DummySecretAccessKey, Source: "motolab"}
	}
	return s, nil
}

// adminNoAuthActions is how many requests moto serves without checking
// credentials when IAM is enforced: exactly the ones createAdmin makes
// (CreateUser, PutUserPolicy, CreateAccessKey).
const adminNoAuthActions = 3

func (s *Server) spawn(bin string, port int, enforceIAM bool) error {
	p, err := spawn.Start(spawn.Command{Name: "moto_server", Path: bin,
		Args: []string{"-H", "127.0.0.1", "-p", strconv.Itoa(port)},
		Env:  motoEnv(enforceIAM), Dir: s.dir, Log: s.Log})
	if err != nil {
		return fmt.Errorf("motolab: %w", err)
	}
	s.proc = p
	s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
	return nil
}

// motoEnv is the caller's environment without AWS settings (a developer's
// real profile or keys must never reach the test server or leak into its
// log), plus moto's own switches.
func motoEnv(enforceIAM bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "MOTO_") || k == "INITIAL_NO_AUTH_ACTION_COUNT" {
			continue
		}
		env = append(env, kv)
	}
	if enforceIAM {
		env = append(env, "INITIAL_NO_AUTH_ACTION_COUNT="+strconv.Itoa(adminNoAuthActions))
	}
	// Python buffers stdout when it is a file; unbuffered output puts a
	// crash's traceback in moto.log even when the process is SIGKILLed.
	return append(env, "PYTHONUNBUFFERED=1")
}

// waitReady polls moto's own API until it answers or the process exits.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	err := s.proc.WaitReady(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/moto-api/data.json", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("motolab: moto_server on %s: %w", s.Endpoint, err)
	}
	return nil
}

// Config returns an AWS config for the server: its region, the Admin
// credentials, every service's endpoint pointed at it, and a few fast
// retries so a test fails in seconds, not minutes.
func (s *Server) Config() aws.Config {
	return s.ConfigFor(s.Admin)
}

// ConfigFor is Config signed with creds, e.g. a user from CreateUser.
func (s *Server) ConfigFor(creds aws.Credentials) aws.Config {
	return aws.Config{
		Region:           s.Region,
		Credentials:      credentials.StaticCredentialsProvider{Value: creds},
		BaseEndpoint:     aws.String(s.Endpoint),
		RetryMaxAttempts: 2,
	}
}

// Reset drops every resource moto holds (secrets, tables, users): POST
// /moto-api/reset. With EnforceIAM it also drops the admin user, so call
// it only on servers that do not enforce IAM.
func (s *Server) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint+"/moto-api/reset", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("motolab: reset: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("motolab: reset: HTTP %d", resp.StatusCode)
	}
	return nil
}

// PID is moto_server's process id.
func (s *Server) PID() int { return s.proc.PID() }

// Running reports whether moto_server has not exited.
func (s *Server) Running() bool { return s.proc != nil && !s.proc.Exited() }

// Close stops moto_server (spawn.Process.Stop: SIGTERM to its process
// group, then SIGKILL) and removes the directory Start created. Calling it
// twice is fine.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.proc != nil {
			s.closeErr = s.proc.Stop()
		}
		if s.ownDir && s.closeErr == nil {
			s.closeErr = os.RemoveAll(s.dir)
		}
	})
	return s.closeErr
}

// errMissing marks Bin's failure so ForTest can tell "not installed" (a
// skip outside CI) from "installed but broken" (always a failure).
var errMissing = errors.New("motolab: moto_server not found")
