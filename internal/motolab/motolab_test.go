package motolab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
)

func TestServerAnswersAndCloseLeavesNoProcess(t *testing.T) {
	t.Parallel()
	s := ForTest(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	c := iam.NewFromConfig(s.Config())
	if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("probe")}); err != nil {
		t.Fatalf("CreateUser against %s: %v", s.Endpoint, err)
	}
	out, err := c.ListUsers(ctx, &iam.ListUsersInput{})
	if err != nil || len(out.Users) != 1 || aws.ToString(out.Users[0].UserName) != "probe" {
		t.Fatalf("ListUsers = %+v, %v; want the one user just created", out, err)
	}
	if err := s.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := c.ListUsers(ctx, &iam.ListUsersInput{}); err != nil || len(out.Users) != 0 {
		t.Fatalf("after Reset: ListUsers = %+v, %v; want none", out, err)
	}

	pid := s.PID()
	addr := strings.TrimPrefix(s.Endpoint, "http://")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !gone(pid) {
		t.Errorf("moto_server pid %d still running after Close", pid)
	}
	if s.Running() {
		t.Error("Running() after Close")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

func TestEnforceIAM(t *testing.T) {
	t.Parallel()
	s := ForTest(t, Options{EnforceIAM: true})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	if s.Admin.AccessKeyID == DummyAccessKeyID || s.Admin.AccessKeyID == "" {
		t.Fatalf("admin credentials %q are not a created user's", s.Admin.AccessKeyID)
	}
	reader, err := s.CreateUser(ctx, "reader", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	rc := iam.NewFromConfig(s.ConfigFor(reader))
	if _, err := rc.ListUsers(ctx, &iam.ListUsersInput{}); err != nil {
		t.Fatalf("reader ListUsers (allowed): %v", err)
	}
	// moto wraps its IAM denials in <ErrorResponse><Errors><Error>, which
	// the SDK's query-protocol parser does not read: only the status and
	// moto's log tell a denial from bad keys.
	_, err = rc.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("intruder")})
	if code := httpStatus(err); code != 403 {
		t.Errorf("reader CreateUser (not allowed): error %v (HTTP %d), want 403", err, code)
	}
	if _, err := iam.NewFromConfig(s.Config()).GetUser(ctx, &iam.GetUserInput{UserName: aws.String("intruder")}); apiCode(err) != "NoSuchEntity" {
		t.Errorf("the denied CreateUser created the user anyway: GetUser = %v", err)
	}
	unknown := iam.NewFromConfig(s.ConfigFor(aws.Credentials{AccessKeyID: DummyAccessKeyID, SecretAccessKey: DummySecretAccessKey}))
	_, err = unknown.ListUsers(ctx, &iam.ListUsersInput{})
	if code := httpStatus(err); code != 403 {
		t.Errorf("unknown key: error %v (HTTP %d), want 403", err, code)
	}
	if log, _ := os.ReadFile(s.Log); strings.Count(string(log), `" 403 -`) != 2 {
		t.Errorf("moto logged %d denials, want 2:\n%s", strings.Count(string(log), `" 403 -`), log)
	}
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// fakeTB records how ForTest gives up; Skip and Fatalf unwind with a panic
// as the real ones would with runtime.Goexit.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	panic(f)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}
func (f *fakeTB) Fatal(args ...any) {
	f.failed = fmt.Sprint(args...)
	panic(f)
}

func forTestGivesUp(t *testing.T) (f *fakeTB) {
	f = &fakeTB{TB: t}
	defer func() {
		if v := recover(); v != f {
			t.Fatalf("ForTest did not give up (recovered %v)", v)
		}
	}()
	ForTest(f, Options{})
	return f
}

func TestForTestMissingServer(t *testing.T) {
	saved := fallbackBins
	t.Cleanup(func() { fallbackBins = saved })
	fallbackBins = func() []string { return []string{filepath.Join(t.TempDir(), "no-moto_server")} }
	t.Setenv("PATH", t.TempDir())
	t.Setenv("KRBOPS_MOTO_SERVER", "")

	t.Setenv("CI", "")
	f := forTestGivesUp(t)
	if f.skipped == "" || f.failed != "" || !strings.Contains(f.skipped, InstallHint) {
		t.Errorf("outside CI: skipped=%q failed=%q, want a skip with the install hint", f.skipped, f.failed)
	}

	t.Setenv("CI", "true")
	f = forTestGivesUp(t)
	if f.failed == "" || f.skipped != "" || !strings.Contains(f.failed, InstallHint) {
		t.Errorf("CI=true: skipped=%q failed=%q, want a failure with the install hint", f.skipped, f.failed)
	}

	// A path named explicitly but absent is a broken setup, never a skip.
	t.Setenv("CI", "")
	t.Setenv("KRBOPS_MOTO_SERVER", filepath.Join(t.TempDir(), "gone"))
	f = forTestGivesUp(t)
	if f.failed == "" || f.skipped != "" {
		t.Errorf("KRBOPS_MOTO_SERVER missing: skipped=%q failed=%q, want a failure", f.skipped, f.failed)
	}
}

// TestCrashedTestLeavesNoServer re-runs this test binary as a "test" that
// starts a server and panics without Close: Pdeathsig must take moto_server
// down with it.
func TestCrashedTestLeavesNoServer(t *testing.T) {
	if os.Getenv("KRBOPS_MOTOLAB_CRASH_HELPER") == "1" {
		s, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("START-ERROR", err)
			os.Exit(3)
		}
		fmt.Printf("DIR %s\nPID %d\n", s.dir, s.PID())
		panic("simulated crash of a test holding a moto_server")
	}
	if _, err := Bin(); err != nil {
		ForTest(t, Options{}) // skips, or fails under CI
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashedTestLeavesNoServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KRBOPS_MOTOLAB_CRASH_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "simulated crash") {
		t.Fatalf("helper did not crash: %v\n%s", err, out)
	}
	pid := 0
	for _, line := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(line, "DIR "); ok {
			t.Cleanup(func() { os.RemoveAll(d) }) // the crash leaked it
		}
		if p, ok := strings.CutPrefix(line, "PID "); ok {
			if pid, err = strconv.Atoi(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if pid == 0 {
		t.Fatalf("helper reported no pid:\n%s", out)
	}
	// A hang guard, not a timing check: the kernel kills them at once.
	deadline := time.Now().Add(30 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("moto_server pid %d outlived the crashed test binary", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gone reports whether pid has exited (a zombie counts as exited).
func gone(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	s := string(st)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
