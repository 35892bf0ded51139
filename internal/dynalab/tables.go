package dynalab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/krbops/krbops/dynamo"
)

// TableSpec describes a table to create.
type TableSpec struct {
	Name     string
	HashKey  string // type S
	RangeKey string // optional, type N
	// GSIs are global secondary indexes, each keyed by a string hash key
	// and an optional number range key, projecting every attribute.
	GSIs []IndexSpec
}

// IndexSpec is one global secondary index.
type IndexSpec struct {
	Name     string
	HashKey  string // type S
	RangeKey string // optional, type N
}

// StandardTable is the table most tests use: pk (S) HASH, sk (N) RANGE,
// and a GSI byStatus on status (S), total (N) — the attributes GenItems
// fills.
func StandardTable(name string) TableSpec {
	return TableSpec{Name: name, HashKey: "pk", RangeKey: "sk", GSIs: []IndexSpec{{Name: "byStatus", HashKey: "status", RangeKey: "total"}}}
}

// CreateTable creates the table; dynalite makes it ACTIVE at once.
func (s *Server) CreateTable(ctx context.Context, t TableSpec) error {
	defs := map[string]types.ScalarAttributeType{t.HashKey: types.ScalarAttributeTypeS}
	ks := []types.KeySchemaElement{{AttributeName: aws.String(t.HashKey), KeyType: types.KeyTypeHash}}
	if t.RangeKey != "" {
		defs[t.RangeKey] = types.ScalarAttributeTypeN
		ks = append(ks, types.KeySchemaElement{AttributeName: aws.String(t.RangeKey), KeyType: types.KeyTypeRange})
	}
	in := &dynamodb.CreateTableInput{TableName: aws.String(t.Name), KeySchema: ks, BillingMode: types.BillingModePayPerRequest}
	for _, g := range t.GSIs {
		defs[g.HashKey] = types.ScalarAttributeTypeS
		gks := []types.KeySchemaElement{{AttributeName: aws.String(g.HashKey), KeyType: types.KeyTypeHash}}
		if g.RangeKey != "" {
			defs[g.RangeKey] = types.ScalarAttributeTypeN
			gks = append(gks, types.KeySchemaElement{AttributeName: aws.String(g.RangeKey), KeyType: types.KeyTypeRange})
		}
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, types.GlobalSecondaryIndex{
			IndexName: aws.String(g.Name), KeySchema: gks, Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		})
	}
	for name, typ := range defs {
		in.AttributeDefinitions = append(in.AttributeDefinitions, types.AttributeDefinition{AttributeName: aws.String(name), AttributeType: typ})
	}
	if _, err := s.Client.CreateTable(ctx, in); err != nil {
		return fmt.Errorf("dynalab: create table %s: %w", t.Name, err)
	}
	// Even with --createTableMs 0 the table is CREATING for a moment, and
	// a write then fails with ResourceNotFoundException.
	w := dynamodb.NewTableExistsWaiter(s.Client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 100*time.Millisecond
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(t.Name)}, 30*time.Second); err != nil {
		return fmt.Errorf("dynalab: table %s did not become active: %w", t.Name, err)
	}
	return nil
}

// GenItems returns n deterministic items for StandardTable with every
// attribute type: strings with quotes, control characters and non-ASCII,
// exact decimals, sets, binary, nested maps and lists, NULL and BOOL. pad
// adds that many bytes of filler so tests can size their pages.
func GenItems(n, pad int) []map[string]types.AttributeValue {
	statuses := []string{"active", "closed", "pending"}
	filler := strings.Repeat("x", pad)
	items := make([]map[string]types.AttributeValue, n)
	for i := range n {
		item := map[string]types.AttributeValue{
			"pk":     &types.AttributeValueMemberS{Value: fmt.Sprintf("user-%06d", i)},
			"sk":     &types.AttributeValueMemberN{Value: strconv.Itoa(i % 7)},
			"status": &types.AttributeValueMemberS{Value: statuses[i%len(statuses)]},
			"total":  &types.AttributeValueMemberN{Value: fmt.Sprintf("%d.%02d", i%1000, i%100)},
			"name":   &types.AttributeValueMemberS{Value: fmt.Sprintf("naïve \"user\" %d ☃\t\u2028", i)},
			"tags":   &types.AttributeValueMemberSS{Value: []string{"t" + strconv.Itoa(i%5), "all"}},
			"blob":   &types.AttributeValueMemberB{Value: []byte{byte(i), byte(i >> 8), 0, 0xff}},
			"flag":   &types.AttributeValueMemberBOOL{Value: i%2 == 0},
			"nested": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
				"n":    &types.AttributeValueMemberN{Value: strconv.Itoa(i * 1000003)},
				"list": &types.AttributeValueMemberL{Value: []types.AttributeValue{&types.AttributeValueMemberNULL{Value: true}, &types.AttributeValueMemberS{Value: "a"}}},
			}},
		}
		if pad > 0 {
			item["pad"] = &types.AttributeValueMemberS{Value: filler}
		}
		items[i] = item
	}
	return items
}

// Load writes items with BatchWriteItem, 25 at a time, a few batches in
// parallel, retrying what dynalite leaves unprocessed.
func (s *Server) Load(ctx context.Context, table string, items []map[string]types.AttributeValue) error {
	batches := make(chan []map[string]types.AttributeValue)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for b := range batches {
				reqs := make([]types.WriteRequest, len(b))
				for i, it := range b {
					reqs[i] = types.WriteRequest{PutRequest: &types.PutRequest{Item: it}}
				}
				pending := map[string][]types.WriteRequest{table: reqs}
				for len(pending) > 0 {
					out, err := s.Client.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: pending})
					if err != nil {
						select {
						case errc <- fmt.Errorf("dynalab: load %s: %w", table, err):
						default:
						}
						return
					}
					pending = out.UnprocessedItems
				}
			}
		})
	}
	for i := 0; i < len(items); i += 25 {
		select {
		case batches <- items[i:min(i+25, len(items))]:
		case err := <-errc:
			close(batches)
			wg.Wait()
			return err
		}
	}
	close(batches)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// Setup creates a StandardTable named name and loads GenItems(n, pad).
func (s *Server) Setup(ctx context.Context, name string, n, pad int) error {
	if err := s.CreateTable(ctx, StandardTable(name)); err != nil {
		return err
	}
	return s.Load(ctx, name, GenItems(n, pad))
}

// ScanAll is the plain scan a resumed run is compared with: one segment,
// consistent, every page, through the SDK's paginator.
func (s *Server) ScanAll(ctx context.Context, in *dynamodb.ScanInput) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	p := dynamodb.NewScanPaginator(s.Client, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		items = append(items, out.Items...)
	}
	return items, nil
}

// QueryAll is ScanAll for a Query.
func (s *Server) QueryAll(ctx context.Context, in *dynamodb.QueryInput) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	p := dynamodb.NewQueryPaginator(s.Client, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		items = append(items, out.Items...)
	}
	return items, nil
}

// Lines renders items as krbops writes them, sorted.
func Lines(items []map[string]types.AttributeValue, f dynamo.Format) ([]string, error) {
	lines := make([]string, len(items))
	for i, it := range items {
		b, err := dynamo.AppendItem(nil, it, f)
		if err != nil {
			return nil, err
		}
		lines[i] = string(b)
	}
	slices.Sort(lines)
	return lines, nil
}

// ReadLines reads a JSON-lines file, sorted. A last line without its
// newline is an error: krbops commits whole lines only.
func ReadLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
			return nil, err
		}
		if last[0] != '\n' {
			return nil, fmt.Errorf("%s ends in a partial line", path)
		}
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.Sort(lines)
	return lines, nil
}

// Diff compares an output's lines with the expected ones (both sorted).
type Diff struct {
	Expected, Got int
	Duplicates    int // lines present more often than expected
	Missing       int // expected lines absent
	Extra         int // lines not expected at all
	Example       string
}

// OK reports an exact match.
func (d Diff) OK() bool {
	return d.Duplicates == 0 && d.Missing == 0 && d.Extra == 0 && d.Expected == d.Got
}

func (d Diff) String() string {
	return fmt.Sprintf("expected %d lines, got %d: %d duplicates, %d missing, %d extra (e.g. %.120s)",
		d.Expected, d.Got, d.Duplicates, d.Missing, d.Extra, d.Example)
}

// Compare counts duplicates, missing and extra lines of got against want.
func Compare(want, got []string) Diff {
	d := Diff{Expected: len(want), Got: len(got)}
	count := map[string]int{}
	for _, l := range want {
		count[l]++
	}
	seen := map[string]int{}
	for _, l := range got {
		seen[l]++
		switch {
		case count[l] == 0:
			d.Extra++
			d.Example = l
		case seen[l] > count[l]:
			d.Duplicates++
			d.Example = l
		}
	}
	for l, n := range count {
		if seen[l] < n {
			d.Missing += n - seen[l]
			if d.Example == "" {
				d.Example = l
			}
		}
	}
	return d
}

// CompareFile compares an output file with the plain scan of in.
func (s *Server) CompareFile(ctx context.Context, path string, in *dynamodb.ScanInput, f dynamo.Format) (Diff, error) {
	items, err := s.ScanAll(ctx, in)
	if err != nil {
		return Diff{}, err
	}
	want, err := Lines(items, f)
	if err != nil {
		return Diff{}, err
	}
	got, err := ReadLines(path)
	if err != nil {
		return Diff{}, err
	}
	return Compare(want, got), nil
}
