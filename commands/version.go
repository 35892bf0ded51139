package commands

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// NewCmdVersion prints the build's version, commit and date (set by
// ldflags in release builds).
func NewCmdVersion(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the krbops version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := g.Build
			_, err := fmt.Fprintf(g.IO.Out, "krbops %s\ncommit: %s\nbuilt: %s\ngo: %s %s/%s\n",
				orUnknown(b.Version), orUnknown(b.Commit), orUnknown(b.Date), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
