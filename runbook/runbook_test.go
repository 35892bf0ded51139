package runbook_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/runbook"
)

// step returns a step that records its id in *order and returns res.
func step(id string, order *[]string, res runbook.Result, needs ...string) runbook.Step {
	return runbook.Step{
		ID:    id,
		Title: "title of " + id,
		Needs: needs,
		Run: func(context.Context, *runbook.State) runbook.Result {
			*order = append(*order, id)
			return res
		},
	}
}

func stepResult(t *testing.T, rep *runbook.Report, id string) runbook.StepResult {
	t.Helper()
	for _, sr := range rep.Steps {
		if sr.ID == id {
			return sr
		}
	}
	t.Fatalf("no step %q in report (steps: %v)", id, ids(rep))
	return runbook.StepResult{}
}

func ids(rep *runbook.Report) []string {
	var out []string
	for _, sr := range rep.Steps {
		out = append(out, sr.ID)
	}
	return out
}

func TestRunExecutesStepsInOrderAndCallsOnStep(t *testing.T) {
	var order, seen []string
	rb := runbook.Runbook{Command: "demo", Steps: []runbook.Step{
		step("c", &order, runbook.Passf("c ok")),
		step("a", &order, runbook.Passf("a ok")),
		step("b", &order, runbook.Passf("b ok")),
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{
		CorrelationID: "corr-1",
		OnStep:        func(sr runbook.StepResult) { seen = append(seen, sr.ID+"="+string(sr.Status)) },
	})
	if want := []string{"c", "a", "b"}; !reflect.DeepEqual(order, want) {
		t.Errorf("run order %v, want %v", order, want)
	}
	if want := []string{"c", "a", "b"}; !reflect.DeepEqual(ids(rep), want) {
		t.Errorf("report order %v, want %v", ids(rep), want)
	}
	if want := []string{"c=pass", "a=pass", "b=pass"}; !reflect.DeepEqual(seen, want) {
		t.Errorf("OnStep calls %v, want %v", seen, want)
	}
	if rep.Schema != "krbops/v1" {
		t.Errorf("schema %q", rep.Schema)
	}
	if rep.Command != "demo" || rep.CorrelationID != "corr-1" || rep.Strict || rep.Cancelled {
		t.Errorf("report header %+v", rep)
	}
	if sr := stepResult(t, rep, "a"); sr.Title != "title of a" || sr.Message != "a ok" {
		t.Errorf("step a = %+v", sr)
	}
	if rep.Status != "pass" || rep.Class != fault.OK {
		t.Errorf("status %q exit %d, want pass 0", rep.Status, rep.Class)
	}
}

func TestRunSkipsStepsWhoseNeedsDidNotPass(t *testing.T) {
	for _, tc := range []struct {
		needStatus runbook.Status
		wantRun    bool
	}{
		{runbook.Pass, true},
		{runbook.Warn, true},
		{runbook.Fail, false},
		{runbook.Error, false},
		{runbook.Skip, false},
	} {
		t.Run(string(tc.needStatus), func(t *testing.T) {
			var order []string
			rb := runbook.Runbook{Steps: []runbook.Step{
				step("config.load", &order, runbook.Result{Status: tc.needStatus, Message: "m"}),
				step("kdc.probe", &order, runbook.Passf("probed"), "config.load"),
			}}
			rep := runbook.Run(context.Background(), rb, runbook.Options{})
			sr := stepResult(t, rep, "kdc.probe")
			ran := len(order) == 2
			if ran != tc.wantRun {
				t.Fatalf("dependent step ran=%v, want %v (order %v)", ran, tc.wantRun, order)
			}
			if tc.wantRun {
				if sr.Status != runbook.Pass {
					t.Errorf("dependent status %q, want pass", sr.Status)
				}
				return
			}
			if sr.Status != runbook.Skip {
				t.Errorf("dependent status %q, want skip", sr.Status)
			}
			want := "skipped: needs config.load (" + string(tc.needStatus) + ")"
			if sr.Message != want {
				t.Errorf("message %q, want %q", sr.Message, want)
			}
		})
	}
}

func TestRunSkipsStepWhoseNeedDidNotRun(t *testing.T) {
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("first", &order, runbook.Passf("ok"), "later", "nowhere"),
		step("later", &order, runbook.Passf("ok")),
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	sr := stepResult(t, rep, "first")
	if sr.Status != runbook.Skip {
		t.Fatalf("status %q, want skip", sr.Status)
	}
	if want := "skipped: needs later (did not run), nowhere (did not run)"; sr.Message != want {
		t.Errorf("message %q, want %q", sr.Message, want)
	}
	if !reflect.DeepEqual(order, []string{"later"}) {
		t.Errorf("ran %v, want only later", order)
	}
	// A skip alone does not fail the run.
	if rep.Class != fault.OK || rep.Status != "pass" {
		t.Errorf("status %q exit %d", rep.Status, rep.Class)
	}
}

func TestRunNamesOnlyTheUnmetNeeds(t *testing.T) {
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("a", &order, runbook.Passf("ok")),
		step("b", &order, runbook.Failf("bad")),
		step("c", &order, runbook.Passf("ok"), "a", "b"),
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	if got := stepResult(t, rep, "c").Message; got != "skipped: needs b (fail)" {
		t.Errorf("message %q", got)
	}
}

func TestExitCodeTable(t *testing.T) {
	p := runbook.Passf("p")
	w := runbook.Warnf("w")
	f := runbook.Failf("f")
	e := runbook.Errorf("e")
	s := runbook.Result{Status: runbook.Skip, Message: "s"}
	u := runbook.Usagef("u")
	for _, tc := range []struct {
		name       string
		results    []runbook.Result
		strict     bool
		wantStatus string
		wantExit   fault.Class
	}{
		{"all pass", []runbook.Result{p, p, p}, false, "pass", fault.OK},
		{"no steps", nil, false, "pass", fault.OK},
		{"pass and skip", []runbook.Result{p, s}, false, "pass", fault.OK},
		{"warn", []runbook.Result{p, w, p}, false, "warn", fault.OK},
		{"warn strict", []runbook.Result{p, w, p}, true, "fail", fault.CheckFailed},
		{"pass strict", []runbook.Result{p, p}, true, "pass", fault.OK},
		{"fail", []runbook.Result{p, f}, false, "fail", fault.CheckFailed},
		{"fail and warn", []runbook.Result{w, f}, false, "fail", fault.CheckFailed},
		{"error", []runbook.Result{p, e}, false, "error", fault.Unreachable},
		{"error and warn", []runbook.Result{w, e}, false, "error", fault.Unreachable},
		{"error and warn strict", []runbook.Result{w, e}, true, "fail", fault.CheckFailed},
		{"fail outranks error", []runbook.Result{e, f}, false, "fail", fault.CheckFailed},
		{"fail outranks error reversed", []runbook.Result{f, e}, false, "fail", fault.CheckFailed},
		{"usage", []runbook.Result{p, u}, false, "error", fault.Usage},
		{"usage outranks error", []runbook.Result{e, u}, false, "error", fault.Usage},
		{"fail outranks usage", []runbook.Result{u, f}, false, "fail", fault.CheckFailed},
		{"usage and warn strict", []runbook.Result{w, u}, true, "fail", fault.CheckFailed},
		{"error classed unreachable", []runbook.Result{p, runbook.Result{Status: runbook.Error, Message: "x", Class: fault.Unreachable}}, false, "error", fault.Unreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var order []string
			var steps []runbook.Step
			for i, r := range tc.results {
				steps = append(steps, step(fmt.Sprintf("s%d", i), &order, r))
			}
			rep := runbook.Run(context.Background(), runbook.Runbook{Steps: steps}, runbook.Options{Strict: tc.strict})
			if rep.Status != tc.wantStatus || rep.Class != tc.wantExit {
				t.Errorf("got %q/%s, want %q/%s", rep.Status, rep.Class, tc.wantStatus, tc.wantExit)
			}
			if rep.Strict != tc.strict {
				t.Errorf("Strict %v", rep.Strict)
			}
		})
	}
}

func TestCancelledBeforeRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("a", &order, runbook.Passf("ok")),
		step("b", &order, runbook.Passf("ok")),
	}}
	rep := runbook.Run(ctx, rb, runbook.Options{})
	if len(order) != 0 {
		t.Errorf("steps ran after cancel: %v", order)
	}
	if !rep.Cancelled || rep.Status != "cancelled" || rep.Class != fault.Cancelled {
		t.Errorf("cancelled=%v status %q exit %d", rep.Cancelled, rep.Status, rep.Class)
	}
	for _, sr := range rep.Steps {
		if sr.Status != runbook.Skip || !strings.Contains(sr.Message, "cancelled") {
			t.Errorf("step %s: %q %q, want a skip naming the cancel", sr.ID, sr.Status, sr.Message)
		}
	}
	if rep.Summary.Skip != 2 {
		t.Errorf("summary %+v", rep.Summary)
	}
}

func TestCancelledWhileRunning(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result runbook.Result
	}{
		// A probe interrupted by SIGINT reports an error...
		{"step errors", runbook.Errorf("probe interrupted")},
		// ...but even a step that finishes normally stops the rest.
		{"step passes", runbook.Passf("done anyway")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var order []string
			rb := runbook.Runbook{Steps: []runbook.Step{
				step("a", &order, runbook.Passf("ok")),
				{ID: "b", Run: func(context.Context, *runbook.State) runbook.Result {
					order = append(order, "b")
					cancel()
					return tc.result
				}},
				step("c", &order, runbook.Passf("ok")),
				step("d", &order, runbook.Failf("would fail")),
			}}
			rep := runbook.Run(ctx, rb, runbook.Options{})
			if !reflect.DeepEqual(order, []string{"a", "b"}) {
				t.Errorf("ran %v, want [a b]", order)
			}
			if rep.Status != "cancelled" || rep.Class != fault.Cancelled || !rep.Cancelled {
				t.Errorf("status %q exit %d cancelled %v", rep.Status, rep.Class, rep.Cancelled)
			}
			for _, id := range []string{"c", "d"} {
				sr := stepResult(t, rep, id)
				if sr.Status != runbook.Skip || !strings.Contains(sr.Message, "cancelled") {
					t.Errorf("step %s: %q %q", id, sr.Status, sr.Message)
				}
			}
		})
	}
}

func TestCancelledDuringLastStepWithError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rb := runbook.Runbook{Steps: []runbook.Step{{ID: "only", Run: func(context.Context, *runbook.State) runbook.Result {
		cancel()
		return runbook.Errorf("interrupted")
	}}}}
	rep := runbook.Run(ctx, rb, runbook.Options{})
	if rep.Class != fault.Cancelled || rep.Status != "cancelled" {
		t.Errorf("status %q exit %d, want cancelled 130", rep.Status, rep.Class)
	}
}

func TestDecidedBy(t *testing.T) {
	probe := func(id string, res runbook.Result) runbook.Step {
		return runbook.Step{ID: id, DecidedBy: "verdict", Run: func(context.Context, *runbook.State) runbook.Result { return res }}
	}
	verdict := func(res runbook.Result) runbook.Step {
		return runbook.Step{ID: "verdict", Run: func(context.Context, *runbook.State) runbook.Result { return res }}
	}
	for _, tc := range []struct {
		name       string
		steps      []runbook.Step
		wantStatus string
		wantExit   fault.Class
	}{
		{
			name:       "verdict passes over an unreachable KDC",
			steps:      []runbook.Step{probe("k1", runbook.Errorf("down")), probe("k2", runbook.Passf("ok")), verdict(runbook.Passf("ok"))},
			wantStatus: "pass", wantExit: fault.OK,
		},
		{
			name:       "verdict warns over an unreachable KDC",
			steps:      []runbook.Step{probe("k1", runbook.Errorf("down")), probe("k2", runbook.Passf("ok")), verdict(runbook.Warnf("1 of 2"))},
			wantStatus: "warn", wantExit: fault.OK,
		},
		{
			name:       "verdict's own error counts",
			steps:      []runbook.Step{probe("k1", runbook.Errorf("down")), verdict(runbook.Errorf("none answered"))},
			wantStatus: "error", wantExit: fault.Unreachable,
		},
		{
			name:       "verdict skipped: the probe error counts",
			steps:      []runbook.Step{probe("k1", runbook.Errorf("down")), verdict(runbook.Result{Status: runbook.Skip, Message: "skipped"})},
			wantStatus: "error", wantExit: fault.Unreachable,
		},
		{
			name: "verdict skipped by its needs: the probe error counts",
			steps: []runbook.Step{
				probe("k1", runbook.Errorf("down")),
				{ID: "verdict", Needs: []string{"k1"}, Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Passf("never") }},
			},
			wantStatus: "error", wantExit: fault.Unreachable,
		},
		{
			name:       "verdict missing: the probe error counts",
			steps:      []runbook.Step{probe("k1", runbook.Errorf("down")), probe("k2", runbook.Passf("ok"))},
			wantStatus: "error", wantExit: fault.Unreachable,
		},
		{
			name:       "decided fail hidden by a passing verdict",
			steps:      []runbook.Step{probe("k1", runbook.Failf("off")), verdict(runbook.Passf("ok"))},
			wantStatus: "pass", wantExit: fault.OK,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := runbook.Run(context.Background(), runbook.Runbook{Steps: tc.steps}, runbook.Options{})
			if rep.Status != tc.wantStatus || rep.Class != tc.wantExit {
				t.Errorf("got %q/%s, want %q/%s", rep.Status, rep.Class, tc.wantStatus, tc.wantExit)
			}
			// The probe keeps its own status on its line either way.
			if sr := stepResult(t, rep, "k1"); sr.DecidedBy != "verdict" || sr.Status == runbook.Pass {
				t.Errorf("k1 = %+v", sr)
			}
		})
	}
}

func TestDecidedByMatchesWithinGroup(t *testing.T) {
	rb := runbook.Runbook{Steps: []runbook.Step{
		{ID: "probe", Group: "host-a", DecidedBy: "verdict", Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Errorf("down") }},
		{ID: "verdict", Group: "host-b", Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Passf("ok") }},
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	if rep.Class != fault.Unreachable {
		t.Errorf("exit %d: a verdict of another group must not decide the probe", rep.Class)
	}
	if sr := stepResult(t, rep, "probe"); sr.Group != "host-a" {
		t.Errorf("group %q", sr.Group)
	}

	rb.Steps[1].Group = "host-a"
	rep = runbook.Run(context.Background(), rb, runbook.Options{})
	if rep.Class != fault.OK {
		t.Errorf("exit %d: the verdict of the same group decides", rep.Class)
	}
}

func TestPanickingStepBecomesErrorAndRunContinues(t *testing.T) {
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		{ID: "boom", Run: func(context.Context, *runbook.State) runbook.Result {
			var m map[string]int
			m["x"] = 1 // nil map write
			return runbook.Passf("unreachable")
		}},
		step("after", &order, runbook.Passf("ok")),
		{ID: "boom2", Run: func(context.Context, *runbook.State) runbook.Result { panic("kaput") }},
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	sr := stepResult(t, rep, "boom")
	if sr.Status != runbook.Error {
		t.Fatalf("status %q, want error", sr.Status)
	}
	if !strings.Contains(sr.Message, "internal error in step boom") || !strings.Contains(sr.Message, "nil map") {
		t.Errorf("message %q", sr.Message)
	}
	if sr.Hint == "" {
		t.Error("no hint on a panic")
	}
	if got := stepResult(t, rep, "boom2").Message; !strings.Contains(got, "kaput") {
		t.Errorf("boom2 message %q", got)
	}
	if !reflect.DeepEqual(order, []string{"after"}) {
		t.Errorf("step after the panic did not run: %v", order)
	}
	if rep.Class != fault.Unreachable || rep.Summary.Error != 2 || rep.Summary.Pass != 1 {
		t.Errorf("exit %d summary %+v", rep.Class, rep.Summary)
	}
}

func TestEmptyStatusIsAnError(t *testing.T) {
	rb := runbook.Runbook{Steps: []runbook.Step{{ID: "lazy", Run: func(context.Context, *runbook.State) runbook.Result {
		return runbook.Result{Message: "forgot the status"}
	}}}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	sr := stepResult(t, rep, "lazy")
	if sr.Status != runbook.Error || !strings.Contains(sr.Message, "no status") {
		t.Errorf("got %q %q", sr.Status, sr.Message)
	}
	if rep.Class != fault.Unreachable || rep.Summary.Error != 1 {
		t.Errorf("exit %d summary %+v", rep.Class, rep.Summary)
	}
}

func TestSummaryCounts(t *testing.T) {
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("p1", &order, runbook.Passf("")),
		step("p2", &order, runbook.Passf("")),
		step("w", &order, runbook.Warnf("")),
		step("f", &order, runbook.Failf("")),
		step("e1", &order, runbook.Errorf("")),
		step("e2", &order, runbook.Errorf("")),
		step("e3", &order, runbook.Errorf("")),
		step("s", &order, runbook.Passf(""), "f"),
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	want := runbook.Summary{Pass: 2, Warn: 1, Fail: 1, Skip: 1, Error: 3}
	if rep.Summary != want {
		t.Errorf("summary %+v, want %+v", rep.Summary, want)
	}
	if len(rep.Steps) != 8 {
		t.Errorf("%d step results", len(rep.Steps))
	}
}

func TestDurationsUseInjectedClock(t *testing.T) {
	start := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	nowCalls := 0
	now := func() time.Time {
		nowCalls++
		return start.Add(time.Duration(nowCalls) * time.Hour)
	}
	var sinceArgs []time.Time
	since := func(t0 time.Time) time.Duration {
		sinceArgs = append(sinceArgs, t0)
		return 1500 * time.Millisecond
	}
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("a", &order, runbook.Passf("")),
		step("b", &order, runbook.Passf("")),
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{Now: now, Since: since})
	if !rep.StartedAt.Equal(start.Add(time.Hour)) {
		t.Errorf("StartedAt %v, want the first Now()", rep.StartedAt)
	}
	if rep.Duration != 1500*time.Millisecond {
		t.Errorf("report duration %v", rep.Duration)
	}
	for _, sr := range rep.Steps {
		if sr.Duration != 1500*time.Millisecond {
			t.Errorf("step %s duration %v", sr.ID, sr.Duration)
		}
	}
	// Each step is timed from its own Now(); the report from StartedAt.
	want := []time.Time{start.Add(2 * time.Hour), start.Add(3 * time.Hour), start.Add(time.Hour)}
	if !reflect.DeepEqual(sinceArgs, want) {
		t.Errorf("Since called with %v, want %v", sinceArgs, want)
	}
}

func TestDurationsDefaultToRealClock(t *testing.T) {
	rb := runbook.Runbook{Steps: []runbook.Step{{ID: "sleep", Run: func(context.Context, *runbook.State) runbook.Result {
		time.Sleep(20 * time.Millisecond)
		return runbook.Passf("")
	}}}}
	before := time.Now()
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	if rep.StartedAt.Before(before) || rep.StartedAt.After(time.Now()) {
		t.Errorf("StartedAt %v not during the run", rep.StartedAt)
	}
	if d := rep.Steps[0].Duration; d < 20*time.Millisecond {
		t.Errorf("step duration %v", d)
	}
	if rep.Duration < rep.Steps[0].Duration {
		t.Errorf("report duration %v shorter than its step %v", rep.Duration, rep.Steps[0].Duration)
	}
}

func TestStateShowsEarlierResults(t *testing.T) {
	rb := runbook.Runbook{Steps: []runbook.Step{
		{ID: "load", Run: func(_ context.Context, st *runbook.State) runbook.Result {
			return runbook.Warnf("loaded with warnings")
		}},
		{ID: "use", Run: func(_ context.Context, st *runbook.State) runbook.Result {
			prev, ok := st.ResultOf("load")
			if !ok || prev.Status != runbook.Warn || prev.Message != "loaded with warnings" {
				return runbook.Failf("ResultOf(load) = %+v %v", prev, ok)
			}
			if _, ok := st.ResultOf("use"); ok {
				return runbook.Failf("own result visible while running")
			}
			return runbook.Passf("ok")
		}},
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	if sr := stepResult(t, rep, "use"); sr.Status != runbook.Pass {
		t.Fatalf("use: %s %s", sr.Status, sr.Message)
	}
}

// parallelStep blocks until every step of its group has started, so the
// test proves the group runs at once without timing anything.
func parallelStep(id, group string, started *sync.WaitGroup, res runbook.Result, needs ...string) runbook.Step {
	return runbook.Step{ID: id, Title: id, Parallel: group, Needs: needs, Run: func(ctx context.Context, _ *runbook.State) runbook.Result {
		started.Done()
		started.Wait()
		return res
	}}
}

func TestParallelGroupRunsAtOnceAndReportsInOrder(t *testing.T) {
	var started sync.WaitGroup
	started.Add(3)
	var order []string
	var seen []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("first", &order, runbook.Passf("first")),
		parallelStep("p:a", "p", &started, runbook.Passf("a"), "first"),
		parallelStep("p:b", "p", &started, runbook.Failf("b"), "first"),
		parallelStep("p:c", "p", &started, runbook.Warnf("c"), "first"),
		{ID: "after", Needs: []string{"p:a"}, Run: func(_ context.Context, st *runbook.State) runbook.Result {
			for _, id := range []string{"p:a", "p:b", "p:c"} {
				if _, ok := st.ResultOf(id); !ok {
					return runbook.Failf("%s not visible after its group", id)
				}
			}
			return runbook.Passf("after")
		}},
	}}
	done := make(chan *runbook.Report)
	go func() {
		done <- runbook.Run(context.Background(), rb, runbook.Options{OnStep: func(sr runbook.StepResult) { seen = append(seen, sr.ID) }})
	}()
	// If the group ran one step at a time, the first would wait for the
	// others for ever; the test's own -timeout then reports the hang.
	rep := <-done
	if want := []string{"first", "p:a", "p:b", "p:c", "after"}; !reflect.DeepEqual(ids(rep), want) {
		t.Errorf("report order %v, want %v", ids(rep), want)
	}
	if len(seen) != 5 || seen[0] != "first" || seen[4] != "after" {
		t.Errorf("OnStep saw %v", seen)
	}
	if sr := stepResult(t, rep, "after"); sr.Status != runbook.Pass {
		t.Errorf("after: %s %s", sr.Status, sr.Message)
	}
	if rep.Class != fault.CheckFailed || rep.Summary.Pass != 3 || rep.Summary.Fail != 1 || rep.Summary.Warn != 1 {
		t.Errorf("class %s summary %+v", rep.Class, rep.Summary)
	}
}

func TestParallelGroupSkipsOnUnmetNeedAndRejectsNeedInsideGroup(t *testing.T) {
	var order []string
	rb := runbook.Runbook{Steps: []runbook.Step{
		step("first", &order, runbook.Failf("no")),
		{ID: "p:a", Parallel: "p", Needs: []string{"first"}, Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Passf("a") }},
		{ID: "p:b", Parallel: "p", Needs: []string{"p:a"}, Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Passf("b") }},
		{ID: "q:a", Parallel: "q", Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Passf("qa") }},
	}}
	rep := runbook.Run(context.Background(), rb, runbook.Options{})
	if sr := stepResult(t, rep, "p:a"); sr.Status != runbook.Skip || sr.Message != "skipped: needs first (fail)" {
		t.Errorf("p:a = %s %q", sr.Status, sr.Message)
	}
	if sr := stepResult(t, rep, "p:b"); sr.Status != runbook.Skip || !strings.Contains(sr.Message, "runs in parallel with it") {
		t.Errorf("p:b = %s %q", sr.Status, sr.Message)
	}
	// A group of one is an ordinary step.
	if sr := stepResult(t, rep, "q:a"); sr.Status != runbook.Pass {
		t.Errorf("q:a = %s %q", sr.Status, sr.Message)
	}
}

func TestParallelGroupCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var started sync.WaitGroup
	started.Add(2)
	cancelling := func(ctx context.Context, _ *runbook.State) runbook.Result {
		started.Done()
		started.Wait()
		cancel()
		<-ctx.Done()
		return runbook.Errorf("interrupted")
	}
	rb := runbook.Runbook{Steps: []runbook.Step{
		{ID: "p:a", Parallel: "p", Run: cancelling},
		{ID: "p:b", Parallel: "p", Run: cancelling},
		{ID: "later", Run: func(context.Context, *runbook.State) runbook.Result { return runbook.Passf("ran") }},
	}}
	rep := runbook.Run(ctx, rb, runbook.Options{})
	if !rep.Cancelled || rep.Class != fault.Cancelled || rep.Status != "cancelled" {
		t.Errorf("cancelled %v class %s status %q", rep.Cancelled, rep.Class, rep.Status)
	}
	if sr := stepResult(t, rep, "later"); sr.Status != runbook.Skip {
		t.Errorf("later = %s", sr.Status)
	}
}

func TestResultBuilders(t *testing.T) {
	for _, tc := range []struct {
		r    runbook.Result
		want runbook.Status
	}{
		{runbook.Passf("n=%d", 1), runbook.Pass},
		{runbook.Warnf("n=%d", 1), runbook.Warn},
		{runbook.Failf("n=%d", 1), runbook.Fail},
		{runbook.Errorf("n=%d", 1), runbook.Error},
	} {
		if tc.r.Status != tc.want || tc.r.Message != "n=1" {
			t.Errorf("%+v, want status %s message n=1", tc.r, tc.want)
		}
	}
	r := runbook.Failf("x").WithHint("run %s", "kinit").
		With(runbook.Evidence{"a": 1, "b": "two"}).
		With(runbook.Evidence{"b": "three", "c": true})
	if r.Hint != "run kinit" {
		t.Errorf("hint %q", r.Hint)
	}
	want := runbook.Evidence{"a": 1, "b": "three", "c": true}
	if !reflect.DeepEqual(r.Evidence, want) {
		t.Errorf("evidence %v, want %v", r.Evidence, want)
	}
	if keys := r.Evidence.Keys(); !reflect.DeepEqual(keys, []string{"a", "b", "c"}) {
		t.Errorf("keys %v", keys)
	}
	if keys := (runbook.Evidence{}).Keys(); len(keys) != 0 {
		t.Errorf("empty keys %v", keys)
	}
	if got := runbook.Statuses; !reflect.DeepEqual(got, []runbook.Status{"pass", "warn", "fail", "skip", "error"}) {
		t.Errorf("Statuses %v", got)
	}
}

func TestSchema(t *testing.T) {
	if runbook.Schema != "krbops/v1" {
		t.Errorf("Schema %q", runbook.Schema)
	}
}
