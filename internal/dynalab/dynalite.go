// Package dynalab is krbops' DynamoDB test harness, the one behind the
// resume-query tests, end-to-end scripts and benchmark. There is no other
// copy; extend this one.
//
//   - [Start] / [ForTest] run dynalite (npm) on a free loopback port, in
//     memory, in its own process group with a parent-death signal (Linux).
//     [Server.CreateTable] and [Server.Load] set up tables; [Server.ScanAll]
//     is the plain scan a resumed run's output is compared with.
//   - [NewProxy] is a fault-injecting reverse proxy in front of it that
//     answers in DynamoDB's real JSON error wire format: ExpiredTokenException
//     once an access key is past its expiry, AccessDeniedException (or
//     moto's HTTP 403 XML) for configured tables, and
//     ProvisionedThroughputExceededException and HTTP 500 at configured
//     rates.
//   - [NewBroker] is a credential broker behind SPNEGO (gokrb5's server
//     handler and a service keytab from the lab realm, internal/lab) that
//     mints access keys and registers their expiry with the proxy.
package dynalab

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
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/krbops/krbops/internal/spawn"
)

// DynaliteVersion is the dynalite release the Makefile installs.
const DynaliteVersion = "4.0.0"

// NPMPrefix is where `make deps` installs dynalite, relative to the
// repository root (gitignored).
const NPMPrefix = ".cache/npm"

// InstallCommand installs dynalite where Bin finds it.
const InstallCommand = "npm install --prefix " + NPMPrefix + " dynalite@" + DynaliteVersion + "  (or: make deps)"

// Region and the static credentials of Server.Client: dynalite checks
// neither, and fixed dummies make sure no real credentials from the
// environment are ever sent to a test server.
const (
	Region          = "us-east-1"
	AccessKeyID     = "AKIAKRBOPSDYNALAB000"
	SecretAccessKey = "krbops-dynalab-dummy-secret-key"
)

var errMissing = errors.New("dynalab: dynalite not found")

// Bin finds the dynalite executable: $KRBOPS_DYNALITE, then the
// repository's .cache/npm install, then $PATH.
func Bin() (string, error) {
	if p := os.Getenv("KRBOPS_DYNALITE"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: KRBOPS_DYNALITE=%s: %v", errMissing, p, err)
		}
		return p, nil
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, NPMPrefix, "node_modules", ".bin", "dynalite")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("dynalite"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w; install with: %s", errMissing, InstallCommand)
}

// Missing reports whether dynalite (or node, which runs it) is missing.
func Missing() error {
	if _, err := Bin(); err != nil {
		return err
	}
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("%w: node is not installed (apt-get install -y nodejs npm)", errMissing)
	}
	return nil
}

// repoRoot walks up from the working directory to the krbops module root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/krbops/krbops") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("dynalab: not inside the krbops repository")
		}
		dir = parent
	}
}

// Options configure Start.
type Options struct {
	// Dir receives dynalite's output (dynalite.log); a temporary directory
	// removed by Close when empty.
	Dir string
	// Logf, when set, receives the harness's progress messages.
	Logf func(format string, a ...any)
}

// Server is a running dynalite.
type Server struct {
	Endpoint string // http://127.0.0.1:port
	Log      string // dynalite's stdout/stderr
	Client   *dynamodb.Client

	proc     *spawn.Process
	ownDir   string
	once     sync.Once
	closeErr error
}

// readyTimeout bounds dynalite's start-up (node loads in well under a
// second; a loaded CI machine gets slack).
const readyTimeout = 20 * time.Second

// Start runs dynalite in memory on a free loopback port and waits until it
// answers.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Server{}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "krbops-dynalab-"); err != nil {
			return nil, err
		}
		s.ownDir = dir
	}
	s.Log = filepath.Join(dir, "dynalite.log")
	for attempt := 1; ; attempt++ {
		port, err := spawn.FreePort()
		if err != nil {
			return nil, err
		}
		s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
		err = s.start(ctx, bin, port)
		if err == nil {
			break
		}
		if s.proc != nil {
			_ = s.proc.Stop()
		}
		if attempt < 3 && strings.Contains(spawn.Tail(s.Log, 2048), "EADDRINUSE") {
			logf("dynalab: port %d taken meanwhile, retrying", port)
			continue
		}
		s.removeDir()
		return nil, err
	}
	s.Client = dynamodb.New(dynamodb.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
	})
	logf("dynalab: dynalite %s (pid %d)", s.Endpoint, s.proc.PID())
	return s, nil
}

func (s *Server) start(ctx context.Context, bin string, port int) error {
	// Tables are ACTIVE at once: the harness never waits for CREATING.
	p, err := spawn.Start(spawn.Command{Name: "dynalite", Path: bin,
		Args: []string{"--host", "127.0.0.1", "--port", strconv.Itoa(port),
			"--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"},
		Log: s.Log})
	if err != nil {
		s.proc = nil
		return fmt.Errorf("dynalab: %w", err)
	}
	s.proc = p
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err = p.WaitReady(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	})
	if err != nil {
		return fmt.Errorf("dynalab: dynalite on %s: %w", s.Endpoint, err)
	}
	return nil
}

// PID is dynalite's process id.
func (s *Server) PID() int { return s.proc.PID() }

// Running reports whether dynalite has not exited (it exits when a
// request reaches it aborted, which the proxy prevents).
func (s *Server) Running() bool { return s.proc != nil && !s.proc.Exited() }

// Close stops dynalite (spawn.Process.Stop: SIGTERM to its group, then
// SIGKILL) and removes the directory Start created. Calling it twice is
// fine.
func (s *Server) Close() error {
	s.once.Do(func() {
		if s.proc != nil {
			s.closeErr = s.proc.Stop()
		}
		s.removeDir()
	})
	return s.closeErr
}

func (s *Server) removeDir() {
	if s.ownDir != "" {
		os.RemoveAll(s.ownDir)
	}
}
