package commands

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/krbops/krbops/internal/fault"
	"github.com/krbops/krbops/ledger"
)

// LedgerInitOptions are ledger init's flags.
type LedgerInitOptions struct {
	*Globals
	Ledger      string
	EndpointURL string
	Account     string
}

// NewCmdLedger builds "krbops ledger" and its subcommands.
func NewCmdLedger(g *Globals, runF func(context.Context, *LedgerInitOptions) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Set up the rotation ledger operators share",
		Long: `The rotation ledger records rotations, locks, rate windows and the audit
trail. By default it is a bbolt file on the operator's machine; a DynamoDB
table (--ledger dynamodb://TABLE?region=R on rotate) is shared by every
operator and host, so rate windows and locks hold across all of them.
See docs/ledger.md.` + exitStatusHelp,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCmdLedgerInit(g, runF))
	return cmd
}

func newCmdLedgerInit(g *Globals, runF func(context.Context, *LedgerInitOptions) error) *cobra.Command {
	opts := &LedgerInitOptions{Globals: g}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the DynamoDB ledger table and print its IAM policy",
		Long: `Create the DynamoDB table of a shared ledger: keys pk (S, hash) and sk
(S, range), on-demand billing, time to live on expires_at. An existing
table with that schema is left as it is (the command is idempotent); a
table with other keys, or TTL on another attribute, is refused (exit 2).

Then print, on stdout, the IAM policy document the ledger needs on that
table: statement KrbopsLedger (GetItem, PutItem, DeleteItem, Query,
DescribeTable) for every operator's role, and KrbopsLedgerInit (CreateTable,
DescribeTable, DescribeTimeToLive, UpdateTimeToLive) for whoever runs
init. Without --account the table ARN has * for the account. What was done
goes to stderr.

The endpoint is --endpoint-url, else AWS_ENDPOINT_URL_DYNAMODB or
AWS_ENDPOINT_URL, else AWS; credentials come from the standard AWS chain.
An endpoint without the TTL API (dynalite) gets the table without TTL and
a warning. docs/ledger.md has the same table as a CloudFormation snippet.` + exitStatusHelp,
		Example: `  krbops ledger init --ledger 'dynamodb://krbops-ledger?region=eu-west-1' --account 123456789012 > ledger-policy.json
  krbops ledger init --ledger 'dynamodb://krbops-ledger?region=us-east-1' --endpoint-url http://127.0.0.1:8000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Ledger == "" {
				return usageError(errors.New("ledger init needs --ledger"), "for example --ledger 'dynamodb://krbops-ledger?region=eu-west-1'")
			}
			if opts.Account != "" && !accountID.MatchString(opts.Account) {
				return usageError(fmt.Errorf("--account %q is not a 12-digit AWS account id", opts.Account), "for example --account 123456789012, or leave it out for *")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return ledgerInitRun(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Ledger, "ledger", "", "the ledger table: dynamodb://TABLE?region=R (required)")
	f.StringVar(&opts.EndpointURL, "endpoint-url", "", "DynamoDB endpoint (default: AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL, then AWS)")
	f.StringVar(&opts.Account, "account", "", "AWS account id for the policy's table ARN (default: *)")
	return cmd
}

var accountID = regexp.MustCompile(`^[0-9]{12}$`)

func ledgerInitRun(ctx context.Context, o *LedgerInitOptions) error {
	spec, err := ledger.ParseSpec(o.Ledger)
	if err != nil {
		return usageError(fmt.Errorf("--%w", err), "pass --ledger 'dynamodb://TABLE?region=R'")
	}
	if !spec.IsDynamo() {
		return usageError(fmt.Errorf("--ledger %s is a file ledger: ledger init creates DynamoDB tables", o.Ledger),
			"a file ledger is created on first use; for a shared one pass --ledger 'dynamodb://TABLE?region=R'")
	}
	tlsCfg, err := o.TLS()
	if err != nil {
		return err
	}
	db, _, err := ledger.DynamoClient(ctx, spec, o.EndpointURL, tlsCfg)
	if err != nil {
		return usageError(fmt.Errorf("--%w", err), "pass --ledger 'dynamodb://TABLE?region=R' and check ~/.aws/config")
	}
	res, err := ledger.Init(ctx, db, spec.Table)
	if err != nil {
		return fault.New(fault.ClassOf(err), err, fault.HintOf(err))
	}
	policy, err := ledger.IAMPolicy(spec.Region, o.Account, spec.Table)
	if err != nil {
		return err
	}
	state := "exists with the ledger's schema"
	if res.Created {
		state = "created (on-demand billing)"
	}
	fmt.Fprintf(o.IO.ErrOut, "table %s: %s\n", spec.Table, state)
	if res.TTL == "enabled" {
		fmt.Fprintf(o.IO.ErrOut, "time to live: enabled on %s\n", ledger.TTLAttribute)
	} else {
		fmt.Fprintf(o.IO.ErrOut, "warning: time to live: %s\n", res.TTL)
	}
	fmt.Fprintf(o.IO.ErrOut, "IAM policy for the ledger (stdout); give operators statement KrbopsLedger only\n")
	_, err = fmt.Fprintf(o.IO.Out, "%s\n", policy)
	return err
}
