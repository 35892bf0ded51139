package output

import "testing"

func TestColorEnabled(t *testing.T) {
	cases := []struct {
		name    string
		tty     bool
		noColor bool
		env     map[string]string
		want    bool
	}{
		{"tty", true, false, nil, true},
		{"not a tty", false, false, nil, false},
		{"flag beats tty", true, true, nil, false},
		{"flag beats CLICOLOR_FORCE", true, true, map[string]string{"CLICOLOR_FORCE": "1"}, false},
		{"NO_COLOR", true, false, map[string]string{"NO_COLOR": "1"}, false},
		{"NO_COLOR any value", true, false, map[string]string{"NO_COLOR": "false"}, false},
		{"NO_COLOR empty is unset", true, false, map[string]string{"NO_COLOR": ""}, true},
		{"NO_COLOR beats CLICOLOR_FORCE", false, false, map[string]string{"NO_COLOR": "1", "CLICOLOR_FORCE": "1"}, false},
		{"CLICOLOR_FORCE when piped", false, false, map[string]string{"CLICOLOR_FORCE": "1"}, true},
		{"CLICOLOR_FORCE=0 is off", false, false, map[string]string{"CLICOLOR_FORCE": "0"}, false},
		{"CLICOLOR_FORCE=0 keeps tty", true, false, map[string]string{"CLICOLOR_FORCE": "0"}, true},
		{"CLICOLOR_FORCE beats TERM=dumb", false, false, map[string]string{"CLICOLOR_FORCE": "yes", "TERM": "dumb"}, true},
		{"TERM=dumb", true, false, map[string]string{"TERM": "dumb"}, false},
		{"TERM=xterm", true, false, map[string]string{"TERM": "xterm-256color"}, true},
		{"TERM=xterm piped", false, false, map[string]string{"TERM": "xterm-256color"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			getenv := func(k string) string { return c.env[k] }
			if got := ColorEnabled(c.tty, c.noColor, getenv); got != c.want {
				t.Errorf("ColorEnabled(tty=%t, noColor=%t, %v) = %t, want %t", c.tty, c.noColor, c.env, got, c.want)
			}
		})
	}
}
