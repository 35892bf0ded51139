package ledger

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/cabundle"
	"github.com/krbops/krbops/internal/fault"
)

// Spec is a parsed --ledger: a bbolt file (Path) or a DynamoDB table.
type Spec struct {
	Path          string
	Table, Region string
}

// IsDynamo reports whether the spec names a DynamoDB table.
func (s Spec) IsDynamo() bool { return s.Table != "" }

func (s Spec) String() string {
	if s.IsDynamo() {
		return "dynamodb://" + s.Table + "?region=" + s.Region
	}
	return s.Path
}

// SpecError is a --ledger that does not parse.
type SpecError struct{ Spec, Msg string }

func (e *SpecError) Error() string { return fmt.Sprintf("ledger %q: %s", e.Spec, e.Msg) }

// Hint shows the accepted forms.
func (e *SpecError) Hint() string {
	return "pass a file path (or file://PATH) or dynamodb://TABLE?region=R"
}

// FaultClass: bad input (exit 2).
func (e *SpecError) FaultClass() fault.Class { return fault.Usage }

// DynamoDB's table-name rules.
var tableName = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,255}$`)

// ParseSpec reads --ledger: PATH, file://PATH or dynamodb://TABLE?region=R.
func ParseSpec(spec string) (Spec, error) {
	bad := func(format string, a ...any) (Spec, error) {
		return Spec{}, &SpecError{Spec: spec, Msg: fmt.Sprintf(format, a...)}
	}
	if p, ok := strings.CutPrefix(spec, "file://"); ok {
		if p == "" {
			return bad("file:// needs a path")
		}
		return Spec{Path: p}, nil
	}
	scheme, _, hasScheme := strings.Cut(spec, "://")
	if !hasScheme {
		if spec == "" {
			return bad("empty")
		}
		return Spec{Path: spec}, nil
	}
	if scheme != "dynamodb" {
		return bad("unknown scheme %s://", scheme)
	}
	u, err := url.Parse(spec)
	if err != nil {
		return bad("%v", err)
	}
	if !tableName.MatchString(u.Host) || (u.Path != "" && u.Path != "/") || u.User != nil {
		return bad("dynamodb://TABLE needs a table name of 3 to 255 letters, digits, '_', '-' or '.'")
	}
	q := u.Query()
	for k := range q {
		if k != "region" {
			return bad("unknown parameter %q (only region)", k)
		}
	}
	return Spec{Table: u.Host, Region: q.Get("region")}, nil
}

// Options.Endpoint and the AWS configuration for Open. The SDK itself
// applies AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL and a profile's
// endpoint_url when Endpoint is empty.

// DynamoClient builds the DynamoDB client of spec with the standard AWS
// credential chain, and returns its credentials cache (nil if the chain
// is not cached).
func DynamoClient(ctx context.Context, spec Spec, endpoint string, tlsCfg *tls.Config) (*dynamodb.Client, *aws.CredentialsCache, error) {
	opts := cabundle.AWSOptions(tlsCfg)
	if spec.Region != "" {
		opts = append(opts, config.WithRegion(spec.Region))
	}
	// Admissions contend for one item: give throttling some room, the
	// SDK backs off with jitter.
	opts = append(opts, config.WithRetryMaxAttempts(6))
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, nil, &SpecError{Spec: spec.String(), Msg: "aws configuration: " + firstLine(err.Error())}
	}
	if cfg.Region == "" {
		return nil, nil, &SpecError{Spec: spec.String(), Msg: "no AWS region: add ?region=R"}
	}
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	creds, _ := cfg.Credentials.(*aws.CredentialsCache)
	return db, creds, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// Open opens the ledger spec names: a bbolt file (OpenFile) or a DynamoDB
// table (OpenDynamo, through the standard AWS chain; opts.Endpoint
// overrides the endpoint).
func Open(ctx context.Context, spec string, opts Options) (Ledger, error) {
	s, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	if !s.IsDynamo() {
		return OpenFile(s.Path, opts)
	}
	db, creds, err := DynamoClient(ctx, s, opts.Endpoint, opts.TLS)
	if err != nil {
		return nil, err
	}
	return OpenDynamo(ctx, db, s.Table, creds, opts)
}

// InitResult is what Init did.
type InitResult struct {
	Table   string
	Created bool // false: the table was there with the right schema
	// TTL is the state of the table's time to live on TTLAttribute:
	// "enabled", or why not (an endpoint without the TTL API).
	TTL string
}

// Init creates the ledger's table (on-demand billing, TTL on
// TTLAttribute) unless it exists; an existing table must have the
// ledger's key schema (*SchemaError otherwise).
func Init(ctx context.Context, db *dynamodb.Client, table string) (InitResult, error) {
	d := &Dynamo{db: db, table: table}
	res := InitResult{Table: table}
	var desc *dynamodb.DescribeTableOutput
	err := d.call(ctx, "DescribeTable", func(ctx context.Context) (err error) {
		desc, err = db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		return err
	})
	var se *ServiceError
	switch {
	case err == nil:
		if err := CheckSchema(table, desc.Table); err != nil {
			return res, err
		}
	case errors.As(err, &se) && se.Class == awserr.NotFound:
		err = d.call(ctx, "CreateTable", func(ctx context.Context) error {
			_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
				TableName:   aws.String(table),
				BillingMode: types.BillingModePayPerRequest,
				AttributeDefinitions: []types.AttributeDefinition{
					{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS},
					{AttributeName: aws.String(attrSK), AttributeType: types.ScalarAttributeTypeS},
				},
				KeySchema: []types.KeySchemaElement{
					{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
					{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
				},
			})
			return err
		})
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) { // another init won the race
			return res, err
		}
		res.Created = err == nil
		w := dynamodb.NewTableExistsWaiter(db, func(o *dynamodb.TableExistsWaiterOptions) {
			o.MinDelay, o.MaxDelay = 50*time.Millisecond, 2*time.Second
		})
		if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 5*time.Minute); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, &ServiceError{Op: "DescribeTable", Table: table, Classified: awserr.Classified{Class: awserr.Transient, Message: "the table did not become active: " + firstLine(err.Error())}}
		}
	default:
		return res, err
	}
	ttl, err := d.enableTTL(ctx)
	res.TTL = ttl
	return res, err
}

// enableTTL turns the table's TTL on for TTLAttribute. TTL on another
// attribute is a table this ledger cannot own.
func (d *Dynamo) enableTTL(ctx context.Context) (string, error) {
	var out *dynamodb.DescribeTimeToLiveOutput
	err := d.call(ctx, "DescribeTimeToLive", func(ctx context.Context) (err error) {
		out, err = d.db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(d.table)})
		return err
	})
	if err != nil {
		return "", err
	}
	if t := out.TimeToLiveDescription; t != nil && aws.ToString(t.AttributeName) != "" {
		if name := aws.ToString(t.AttributeName); name != TTLAttribute &&
			(t.TimeToLiveStatus == types.TimeToLiveStatusEnabled || t.TimeToLiveStatus == types.TimeToLiveStatusEnabling) {
			return "", &SchemaError{Table: d.table, Got: "time to live on " + name + " (the ledger's is " + TTLAttribute + ")"}
		}
		if t.TimeToLiveStatus == types.TimeToLiveStatusEnabled || t.TimeToLiveStatus == types.TimeToLiveStatusEnabling {
			return "enabled", nil
		}
	}
	err = d.call(ctx, "UpdateTimeToLive", func(ctx context.Context) error {
		_, err := d.db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{TableName: aws.String(d.table),
			TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(TTLAttribute), Enabled: aws.Bool(true)}})
		return err
	})
	var se *ServiceError
	if errors.As(err, &se) && se.Code == "UnknownOperationException" {
		// dynalite and other look-alikes: the table works, expired window
		// items are just never deleted.
		return "not supported by this endpoint (UnknownOperationException); expired window items stay until deleted", nil
	}
	if err != nil {
		return "", err
	}
	return "enabled", nil
}

// Actions the ledger calls at run time, and the ones only init needs.
var (
	RuntimeActions = []string{"dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"}
	InitActions    = []string{"dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:UpdateTimeToLive"}
)

// TableARN is the table's ARN; account "" is a wildcard.
func TableARN(region, account, table string) string {
	if account == "" {
		account = "*"
	}
	return fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", region, account, table)
}

// IAMPolicy is the least-privilege policy document of the ledger in
// table: run-time actions for operators, and a second statement for
// ledger init (drop it from operators' roles).
func IAMPolicy(region, account, table string) ([]byte, error) {
	type statement struct {
		Sid      string   `json:"Sid"`
		Effect   string   `json:"Effect"`
		Action   []string `json:"Action"`
		Resource string   `json:"Resource"`
	}
	doc := struct {
		Version   string      `json:"Version"`
		Statement []statement `json:"Statement"`
	}{Version: "2012-10-17", Statement: []statement{
		{Sid: "KrbopsLedger", Effect: "Allow", Action: RuntimeActions, Resource: TableARN(region, account, table)},
		{Sid: "KrbopsLedgerInit", Effect: "Allow", Action: InitActions, Resource: TableARN(region, account, table)},
	}}
	return json.MarshalIndent(doc, "", "  ")
}
