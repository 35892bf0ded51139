package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdGrepLines prints the lines of FILE that match REGEXP, so a script
// can compare one section of a report (its policy findings, say) with a
// golden file while the rest (timings, correlation id) varies.
//
//	grep-lines FILE REGEXP
func cmdGrepLines(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: grep-lines FILE REGEXP")
	}
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	n := 0
	for _, line := range strings.SplitAfter(ts.ReadFile(args[0]), "\n") {
		if re.MatchString(line) {
			fmt.Fprint(ts.Stdout(), line)
			n++
		}
	}
	if n == 0 {
		ts.Fatalf("no line of %s matches %s", args[0], args[1])
	}
}
